"""Arguments and set-up shared by the pipeline subcommands (collect, fit, distill, train,
evaluate); not a subcommand itself. Imports nothing heavy at module level: torch and
hybridgym's packages are imported where used (see ``main``)."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any


def count(minimum: int):
    """An argparse type: an int >= ``minimum`` (a bad value is argparse's one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def add_task(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", required=True, help="task name, e.g. pendulum (see `hybridgym systems`)"
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads: torch's CPU threads, set by :func:`setup_torch`."""
    parser.add_argument(
        "--threads",
        type=count(1),
        default=1,
        help="torch CPU threads (default 1: the small models here run fastest on one)",
    )


def add_common(parser: argparse.ArgumentParser, *, device: bool = True, quiet: bool = True) -> None:
    """--seed, --device, --threads and --quiet (where there are progress bars)."""
    parser.add_argument("--seed", type=count(0), default=0, help="seed (default 0)")
    if device:
        parser.add_argument(
            "--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)"
        )
    add_threads(parser)
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bars")


def setup_torch(args: argparse.Namespace) -> str:
    """Set torch's thread count; return the checked ``--device`` (``"cpu"`` without one)."""
    import torch

    from hybridgym.models.arrays import usable_device

    torch.set_num_threads(args.threads)
    text = getattr(args, "device", None) or "cpu"
    return str(usable_device(text, "--device", instead="--device cpu"))


def existing_file(text: str, what: str) -> pathlib.Path:
    """``text`` as a path to a file that exists, or a FileNotFoundError naming ``what``."""
    path = pathlib.Path(text)
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {where}")
    return path


def output_file(text: str, option: str) -> pathlib.Path:
    """``text`` as the path of a file to write, refused where a folder is in the way."""
    path = pathlib.Path(text)
    if path.is_dir():
        raise FileExistsError(f"{option} {path} is a folder; give a file name")
    return path


def write_json(path: str | pathlib.Path, payload: dict[str, Any]) -> pathlib.Path:
    """``payload`` as indented JSON, written atomically."""
    from hybridgym.models.files import atomic_write_text

    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def add_env(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--env, --env-kwargs, --prior, --reward, --terminated, --max-episode-steps: a system
    that is not a built-in task (any Gymnasium env with Box spaces)."""
    group = parser.add_argument_group(
        "any Gymnasium env (not a built-in task)",
        "the state is the observation; reward and termination are learned from the data "
        "unless given; no --prior: a black-box model",
    )
    group.add_argument(
        "--env",
        required=required,
        metavar="ID",
        help="a registered Gymnasium id with Box spaces, e.g. MountainCarContinuous-v0 "
        "(package.module:Id imports the package that registers it)",
    )
    group.add_argument(
        "--env-kwargs",
        default=None,
        metavar="JSON",
        help="gym.make keyword arguments, e.g. '{\"g\": 9.81}'",
    )
    group.add_argument(
        "--prior",
        default=None,
        metavar="FILE.py:CLASS",
        help="your physics as a PhysicsPrior subclass (built with no arguments), e.g. "
        "examples/priors/inverted_pendulum.py:CartPolePrior",
    )
    group.add_argument(
        "--reward",
        default=None,
        metavar="MODULE:FUNCTION",
        help="reward(state, action, next_state) -> B on torch batches (FILE.py:FUNCTION works "
        "too); default: learned from the recorded rewards",
    )
    group.add_argument(
        "--terminated",
        default=None,
        metavar="MODULE:FUNCTION",
        help="terminated(next_state) -> B bool on torch batches; default: learned from the "
        "episodes that ended by termination",
    )
    group.add_argument(
        "--max-episode-steps",
        type=count(1),
        default=None,
        metavar="N",
        help="episode length, for an env without a time limit (default: the env's)",
    )


def env_kwargs(text: str | None) -> dict[str, Any]:
    """``--env-kwargs`` JSON as a dict (a ValueError naming the option otherwise)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--env-kwargs must be a JSON object, e.g. '{{\"g\": 9.81}}': {err}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {text!r}")
    return value


def env_task(args: argparse.Namespace) -> Any:
    """The GymTask of ``--env`` and its options (``args.env`` must be set)."""
    from hybridgym.envs import GymTask

    return GymTask(
        args.env,
        env_kwargs(args.env_kwargs),
        prior=args.prior,
        reward=args.reward,
        terminated=args.terminated,
        max_episode_steps=args.max_episode_steps,
    )


def foreign_options_without_env(args: argparse.Namespace) -> None:
    """Refuse --env-kwargs, --prior, ... without --env."""
    given = [
        option
        for option, value in (
            ("--env-kwargs", args.env_kwargs),
            ("--prior", args.prior),
            ("--reward", args.reward),
            ("--terminated", args.terminated),
            ("--max-episode-steps", args.max_episode_steps),
        )
        if value is not None
    ]
    if given and args.env is None:
        raise ValueError(f"{', '.join(given)} need --env ID (a Gymnasium env, not a built-in task)")
