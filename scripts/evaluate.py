"""``hybridgym evaluate``: a saved agent's return on the task's real system."""

from __future__ import annotations

import argparse

from hybridgym.scripts._common import (
    add_common,
    add_task,
    count,
    output_file,
    setup_torch,
    write_json,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="return of a saved agent on the task's real system",
        description="Run deterministic episodes of the agent on the real system (seeds "
        "--seed, --seed+1, ...) and report the return of each and their mean and std.",
    )
    add_task(parser)
    parser.add_argument(
        "--agent",
        required=True,
        help="a file from `hybridgym train` (SB3 zip, planner JSON, .pt policy), or random",
    )
    parser.add_argument("--episodes", type=count(1), default=10, help="episodes (default 10)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the returns")
    add_common(parser, quiet=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybridgym.agents import evaluate, load_controller
    from hybridgym.envs import get_task

    device = setup_torch(args)
    task = get_task(args.task)
    json_file = None if args.json is None else output_file(args.json, "--json")
    agent = load_controller(args.agent, task, device=device, seed=args.seed)
    result = evaluate(agent, task, episodes=args.episodes, seed=args.seed)
    title = f"{args.agent} on {task.real_env_id} (real system)"
    table = Table(title=title, min_width=len(title) + 4)
    for column in ("episode", "seed", "steps", "return"):
        table.add_column(column, justify="right")
    for i, (ret, length) in enumerate(zip(result.returns, result.lengths, strict=True)):
        table.add_row(str(i), str(args.seed + i), str(int(length)), f"{ret:.4f}")
    Console(width=120).print(table)
    print(f"return: {result.mean:.4f} +- {result.std:.4f} over {args.episodes} episodes")
    if json_file is not None:
        payload = {
            "task": task.name,
            "agent": str(args.agent),
            "seed": args.seed,
            "episodes": args.episodes,
            "returns": result.returns.tolist(),
            "lengths": result.lengths.tolist(),
            "mean": result.mean,
            "std": result.std,
        }
        print(f"json: {write_json(json_file, payload)}")
    return 0
