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
