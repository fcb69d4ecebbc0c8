"""``hybridgym loop``: run (or resume) the model-based loop on a task's real system."""

from __future__ import annotations

import argparse
import json
import pathlib

from hybridgym.scripts._common import add_threads, setup_torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "loop",
        help="fit a hybrid model to real data, train a controller in it, act, repeat",
        description="Run the model-based loop; rerun the same command on the same --run-dir "
        "to resume after a crash.",
    )
    parser.add_argument(
        "task", nargs="?", help="task name, e.g. pendulum (see `hybridgym systems`)"
    )
    parser.add_argument("--task", dest="task_option", default=None, help="the task, as an option")
    parser.add_argument(
        "--run-dir", "--run", required=True, help="run directory (resumed if it exists)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    parser.add_argument("--iterations", type=int, default=None, help="loop iterations")
    parser.add_argument(
        "--agent", default=None, help="differentiable (default), mpc, sac, td3 or ppo"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any LoopConfig field, VALUE as JSON (e.g. --set fit.iterations=300 "
        "--set hidden=[64,64]); repeatable",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of the model fits, the learned envs and the agent, e.g. cpu or "
        "cuda (default: the config's, cpu)",
    )
    add_threads(parser)
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--quiet", action="store_true", help="no per-iteration log")
    parser.set_defaults(run=run)


def parse_overrides(items: list[str]) -> dict:
    """``["fit.iterations=300", "agent=mpc"]`` -> ``{"fit": {"iterations": 300}, ...}``."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word such as mpc
        parts = key.split(".")
        if len(parts) > 2:
            raise ValueError(f"--set {key}: at most one dot (e.g. fit.iterations)")
        if len(parts) == 2:
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            out[key] = value
    return out


def _task_name(args: argparse.Namespace) -> str:
    """The task, given as the positional argument or as --task (not two different ones)."""
    given = {name for name in (args.task, args.task_option) if name is not None}
    if not given:
        raise ValueError("no task given: hybridgym loop TASK ... or --task TASK")
    if len(given) > 1:
        raise ValueError(f"two tasks given, {args.task!r} and --task {args.task_option!r}")
    return given.pop()


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybridgym.agents import LoopConfig, ModelBasedLoop
    from hybridgym.envs import get_task

    device = setup_torch(args)
    task = get_task(_task_name(args))
    overrides = parse_overrides(args.set)
    if args.device is not None:
        overrides["device"] = device
    for name in ("seed", "iterations", "agent"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.progress:
        overrides["progress"] = True
    config = LoopConfig.for_task(task, **overrides)
    loop = ModelBasedLoop(
        task, config, pathlib.Path(args.run_dir), log=None if args.quiet else print
    )
    history = loop.run()
    table = Table(title=f"model-based loop on {task.name}: {args.run_dir}")
    for column in ("iteration", "real steps", "return (mean +- std)", "model error", "fit s"):
        table.add_column(column, justify="right")
    table.add_column("agent s", justify="right")
    for row in history:
        table.add_row(
            str(row["iteration"]),
            str(row["real_steps"]),
            f"{row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f}",
            f"{row['model_error']:.3g}",
            f"{row['fit_seconds']:.1f}",
            f"{row['agent_seconds']:.1f}",
        )
    Console(width=120).print(table)
    print(f"metrics: {loop.path('metrics.csv')}  plots: {loop.path('plots')}")
    return 0
