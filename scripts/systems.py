"""``hybridgym systems``: the built-in systems and their tasks, as a table, what else can be
run (any Gymnasium env with Box spaces), and a check of one env id (``--env ID``)."""

from __future__ import annotations

import argparse

from hybridgym.scripts._common import env_kwargs

#: Gymnasium envs with Box spaces that run as they are, shown as examples
EXAMPLES = ("Pendulum-v1", "MountainCarContinuous-v0", "InvertedPendulum-v5 (MuJoCo)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "systems",
        help="list the real systems and their tasks, or check a Gymnasium env (--env ID)",
        description="Without options: the built-in tasks, and how to run any Gymnasium env. "
        "With --env ID: what hybridgym would make of that env (its spaces, control interval, "
        "episode length, start states), or why it cannot run it.",
    )
    parser.add_argument(
        "--env", default=None, metavar="ID", help="a Gymnasium id to check, e.g. Pendulum-v1"
    )
    parser.add_argument(
        "--env-kwargs", default=None, metavar="JSON", help="gym.make keyword arguments"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if args.env is not None:
        return _check(args, console)
    if args.env_kwargs is not None:
        raise ValueError("--env-kwargs needs --env ID")
    from hybridgym.envs import get_task, task_names

    table = Table(title="hybridgym systems")
    for column in ("task", "env id", "state", "action", "dt", "steps", "dynamics"):
        table.add_column(column)
    for name in task_names():
        task = get_task(name)
        table.add_row(
            name,
            task.real_env_id,
            str(task.state_dim),
            str(task.action_dim),
            f"{task.dt:.4g}",
            str(task.max_episode_steps),
            task.summary,
        )
    console.print(table)
    console.print(
        "Any Gymnasium env with a 1-D Box observation and a bounded Box action space runs "
        f"too, e.g. {', '.join(EXAMPLES)}: the state is the observation, the reward and "
        "termination are learned from the data (or --reward/--terminated MODULE:FUNCTION), the "
        "model is a black box (or --prior FILE.py:CLASS).\n"
        "  check one:  hybridgym systems --env ID\n"
        "  run it:     hybridgym loop --env ID --run-dir DIR",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def _check(args: argparse.Namespace, console) -> int:
    """Describe ``--env`` as a GymTask (a refusal is the command's one-line error)."""
    import numpy as np

    from hybridgym.envs import GymTask

    task = GymTask(args.env, env_kwargs(args.env_kwargs))
    env = task.make_real_env()
    spaces = (env.observation_space, env.action_space)
    env.close()
    pool = task.start_states
    rows = [
        ("observation (= state)", f"{spaces[0]}: {', '.join(task.state_names)}"),
        ("action", f"{spaces[1]}: {', '.join(task.action_names)}"),
        (
            "control interval",
            f"{task.dt:g} s"
            if task.time_unit == "s"
            else "the env states none: 1 step (times are counted in steps)",
        ),
        ("episode", f"{task.max_episode_steps} steps"),
        (
            "start states",
            f"{len(pool)} resets (seeds 0-{len(pool) - 1}), from "
            f"{np.array2string(pool.min(0), precision=3)} to "
            f"{np.array2string(pool.max(0), precision=3)}",
        ),
        ("solved at", "-" if task.return_threshold is None else f"{task.return_threshold:g}"),
        ("reward, termination", "learned from the recorded data (or --reward, --terminated)"),
        ("model", "black box (or --prior FILE.py:CLASS)"),
    ]
    for name, value in rows:
        console.print(f"{name:>21}  {value}", highlight=False, soft_wrap=True)
    console.print(f"run it: hybridgym loop --env {args.env} --run-dir DIR", highlight=False)
    return 0
