"""``hybridgym loop``: run (or resume) the model-based loop on a task's real system."""

from __future__ import annotations

import argparse
import json
import pathlib

from hybridgym.scripts._common import (
    add_env,
    add_threads,
    count,
    env_task,
    foreign_options_without_env,
    setup_torch,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "loop",
        help="fit a hybrid model to real data, train a controller in it, act, repeat",
        description="Run the model-based loop on a built-in task (hybridgym loop TASK) or any "
        "Gymnasium env with Box spaces (hybridgym loop --env ID); rerun the same command on the "
        "same --run-dir to resume after a crash (or give --run-dir alone: the run's "
        "config.json says what it runs).",
    )
    parser.add_argument(
        "task", nargs="?", help="task name, e.g. pendulum (see `hybridgym systems`)"
    )
    parser.add_argument("--task", dest="task_option", default=None, help="the task, as an option")
    add_env(parser)
    parser.add_argument(
        "--run-dir", "--run", required=True, help="run directory (resumed if it exists)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    parser.add_argument("--iterations", type=int, default=None, help="loop iterations")
    parser.add_argument(
        "--agent",
        default=None,
        help="mpc (the planner; most systems' default), differentiable, sac, td3 or ppo",
    )
    parser.add_argument(
        "--eval-episodes",
        type=count(0),
        default=None,
        metavar="N",
        help="real evaluation episodes per evaluation (default: the config's; 0: none)",
    )
    parser.add_argument(
        "--eval-every",
        type=count(1),
        default=None,
        metavar="K",
        help="evaluate after every K-th iteration and after the last (default 1)",
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
    parser.add_argument(
        "--progress", action="store_true", help="progress bars (fits, training, evaluations)"
    )
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


def _task_name(args: argparse.Namespace) -> str | None:
    """The task, given as the positional argument or as --task (not two different ones), or
    None."""
    given = {name for name in (args.task, args.task_option) if name is not None}
    if len(given) > 1:
        raise ValueError(f"two tasks given, {args.task!r} and --task {args.task_option!r}")
    return given.pop() if given else None


def _overrides(args: argparse.Namespace, device: str) -> dict:
    overrides = parse_overrides(args.set)
    if args.device is not None:
        overrides["device"] = device
    for name in ("seed", "iterations", "agent", "eval_episodes", "eval_every"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.progress:
        overrides["progress"] = True
    return overrides


def _make_loop(args: argparse.Namespace, device: str):  # -> ModelBasedLoop
    from hybridgym.agents import LoopConfig, ModelBasedLoop
    from hybridgym.envs import resolve_task

    log = None if args.quiet else print
    run_dir = pathlib.Path(args.run_dir)
    name = _task_name(args)
    foreign_options_without_env(args)
    overrides = _overrides(args, device)
    if name is not None and args.env is not None:
        raise ValueError(f"give a task ({name!r}) or --env {args.env}, not both")
    if name is None and args.env is None:
        if (run_dir / "config.json").is_file():  # resume what the run directory holds
            return ModelBasedLoop.from_run_dir(run_dir, log=log, **overrides)
        raise ValueError(
            "no task given: hybridgym loop TASK --run-dir DIR (see `hybridgym systems`), "
            f"hybridgym loop --env ID --run-dir DIR, or --run-dir of an existing run ({run_dir} "
            "holds none)"
        )
    task = env_task(args) if args.env is not None else resolve_task(name)
    config = LoopConfig.for_task(task, **overrides)
    return ModelBasedLoop(task, config, run_dir, log=log)


def run(args: argparse.Namespace) -> int:
    import math

    from rich.console import Console
    from rich.table import Table

    device = setup_torch(args)
    loop = _make_loop(args, device)
    history = loop.run()
    table = Table(title=f"model-based loop on {loop.task.name}: {args.run_dir}")
    for column in ("iteration", "real steps", "return (mean +- std)", "model error", "fit s"):
        table.add_column(column, justify="right")
    table.add_column("agent s", justify="right")
    for row in history:
        mean, std = row["eval_return_mean"], row["eval_return_std"]
        table.add_row(
            str(row["iteration"]),
            str(row["real_steps"]),
            "-" if math.isnan(mean) else f"{mean:.1f} +- {std:.1f}",
            f"{row['model_error']:.3g}",
            f"{row['fit_seconds']:.1f}",
            f"{row['agent_seconds']:.1f}",
        )
    Console(width=120).print(table)
    print(f"metrics: {loop.path('metrics.csv')}  plots: {loop.path('plots')}")
    return 0
