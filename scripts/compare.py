"""``hybridgym compare``: the model-based loop against model-free RL on the real system, over
seeds, with a table, ``results.json`` and a plot of return against real steps."""

from __future__ import annotations

import argparse
import pathlib

from hybridgym.scripts._common import add_env, env_kwargs
from hybridgym.scripts.loop import parse_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="the model-based loop against model-free SAC: real steps to a return threshold",
        description="Run the model-based loop and model-free RL on the same seeds, each until "
        "its evaluation on the real system reaches the threshold or its budget of real steps "
        "is spent. Writes OUT/results.json (after every trial: rerun the same command to "
        "resume), OUT/results.md and OUT/return_vs_real_steps.png. With --backend ray every "
        "trial is a Ray task.",
    )
    parser.add_argument("--task", default=None, help="a built-in task, e.g. pendulum (or --env ID)")
    add_env(parser)
    parser.add_argument(
        "--seeds", type=int, default=3, help="number of seeds, 0 to S-1 (default 3)"
    )
    parser.add_argument(
        "--budget", type=int, required=True, help="real-system steps per method and seed"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/compare-TASK or -ID)"
    )
    parser.add_argument(
        "--methods",
        default="loop,sac",
        help="comma-separated, from loop, ppo, sac, td3 (default loop,sac)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="real evaluation episodes per evaluation (default 10)",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="model-free methods: evaluate every N real steps (default budget/16); the loop "
        "evaluates after every iteration (--loop-set eval_every=K: after every K-th and the "
        "last)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="return that counts as solved (default: the task's, -200 for pendulum, or the "
        "env's reward_threshold, e.g. 90 for MountainCarContinuous-v0; without one "
        "steps-to-threshold is null and runs use the budget)",
    )
    parser.add_argument(
        "--loop-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a LoopConfig field, as in `hybridgym loop --set` (e.g. fit.iterations=300); "
        "repeatable",
    )
    parser.add_argument(
        "--agent-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an SB3 argument of the model-free methods, VALUE as JSON (e.g. "
        "learning_starts=100); repeatable",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the small models here run fastest on one)",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: one trial after the other in this process (default); ray: every trial "
        "(method, seed) a Ray task with one CPU, on a local Ray instance or --address "
        "(needs pip install 'hybridgym[ray]')",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="--backend ray: the Ray cluster to use, e.g. 10.0.0.5:6379 (default: as ray.init "
        "does: RAY_ADDRESS if set, else a `ray start` cluster on this machine, else a new local "
        "instance without dashboard)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-run log")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import contextlib

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from hybridgym.agents.backends import check_backend, ray_connection, run_pending
    from hybridgym.agents.compare import TABLE_COLUMNS, CompareConfig, Comparison

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.address is not None and args.backend != "ray":
        raise ValueError("--address is for --backend ray; add --backend ray or drop --address")
    try:
        check_backend(args.backend)
    except ImportError as err:  # the one-line error of the command line
        raise ValueError(str(err)) from None
    torch.set_num_threads(args.threads)
    if (args.task is None) == (args.env is None):
        raise ValueError("give a built-in task (--task NAME) or a Gymnasium env (--env ID)")
    if args.env is None:
        from hybridgym.scripts._common import foreign_options_without_env

        foreign_options_without_env(args)
    config = CompareConfig(
        task=args.task or args.env,
        env_kwargs=env_kwargs(args.env_kwargs),
        prior=args.prior,
        reward=args.reward,
        terminated=args.terminated,
        max_episode_steps=args.max_episode_steps,
        budget=args.budget,
        seeds=args.seeds,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        eval_episodes=args.eval_episodes,
        eval_every=args.eval_every,
        threshold=args.threshold,
        loop=parse_overrides(args.loop_set),
        model_free=parse_overrides(args.agent_set),
    )
    name = config.task.replace("/", "_").replace(":", "_")
    out = pathlib.Path(args.out or f"runs/compare-{name}")
    console = Console(width=140)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    comparison = Comparison(config, out, log=None if args.quiet else log)
    pending = comparison.pending()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with contextlib.ExitStack() as stack:
        if args.backend == "ray" and pending:  # connected before the progress bar shows
            stack.enter_context(ray_connection(args.address))
        progress = stack.enter_context(Progress(*columns, console=console, disable=args.quiet))
        job = progress.add_task(f"trials on {args.backend}", total=len(pending))

        def started(method: str, seed: int) -> None:
            if args.backend == "local":  # Ray runs them as CPUs free up
                progress.update(job, description=f"{method}, seed {seed}")

        run_pending(
            comparison,
            backend=args.backend,
            on_start=started,
            on_finish=lambda *_: progress.advance(job),
        )
    paths = comparison.write_reports()
    table = Table(title=comparison.title())
    for k, column in enumerate(TABLE_COLUMNS):
        table.add_column(column, justify="left" if k == 0 else "right")
    for row in comparison.table_rows():
        table.add_row(*row)
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}", soft_wrap=True)
    return 0
