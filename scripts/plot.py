"""``hybridgym plot``: diagnostics of the model in a loop run directory (k-step prediction
error, predicted against real trajectories, phase portrait, learned residual against the
missing physics)."""

from __future__ import annotations

import argparse
import contextlib


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plot",
        help="plot how well a loop run's newest model predicts the real system",
        description="Model diagnostics of a `hybridgym loop` run directory: k-step prediction "
        "error against the horizon on held-out real episodes (random actions), the model's "
        "open-loop prediction of one of them, a phase portrait (two-state systems such as "
        "lotka_volterra) and the learned residual against the true missing physics (where the "
        "task states it). Writes PNGs and diagnostics.json into RUN_DIR/plots (or --out).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `hybridgym loop`")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots)")
    parser.add_argument(
        "--episodes", type=int, default=3, help="held-out real episodes (default 3)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first held-out episode (default 314159265: seeds the loop never "
        "uses, hybridgym.agents.diagnostics.HELD_OUT_SEED)",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="longest k of the k-step error (default 50)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the small models here run fastest on one)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress spinner")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.status import Status

    from hybridgym.agents.diagnostics import HELD_OUT_SEED, MAX_HORIZON, MAX_PANELS, diagnose

    seed = HELD_OUT_SEED if args.seed is None else args.seed
    horizon = MAX_HORIZON if args.horizon is None else args.horizon
    for name, value in (
        ("episodes", args.episodes),
        ("horizon", horizon),
        ("threads", args.threads),
    ):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    torch.set_num_threads(args.threads)
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    console = Console(width=140)
    busy = Status("recording held-out episodes, plotting", console=console)
    with contextlib.nullcontext() if args.quiet else busy:
        report = diagnose(
            args.run_dir,
            args.out,
            episodes=args.episodes,
            seed=seed,
            max_horizon=horizon,
        )
    held = report["prediction_error"]["held_out"]
    k = report["prediction_error"]["horizons"]
    shown = list(held.items())[:MAX_PANELS]
    errors = ", ".join(f"{name} {values[min(9, len(k) - 1)]:.3g}" for name, values in shown)
    console.print(
        f"{report['model']}: {k[min(9, len(k) - 1)]}-step RMSE on held-out data: {errors}",
        soft_wrap=True,
    )
    for path in report["plots"]:
        print(path)
    print(report["json"])
    return 0
