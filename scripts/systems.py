"""``hybridgym systems``: the built-in systems and their tasks, as a table."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("systems", help="list the real systems and their tasks")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

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
    Console(width=160).print(table)
    return 0
