"""``hybridgym fit``: fit a hybrid model (the task's physics prior + a residual network) to a
dataset folder and save the checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from hybridgym.scripts._common import (
    add_common,
    add_task,
    count,
    fraction,
    output_file,
    setup_torch,
)
from hybridgym.scripts.loop import parse_overrides

if TYPE_CHECKING:
    from hybridgym.agents import LoopConfig
    from hybridgym.envs import Task
    from hybridgym.models import FitConfig, HybridODE


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fit",
        help="fit a hybrid model (physics prior + residual network) to a dataset folder",
        description="Build the task's physics prior (its constants started off the truth) "
        "plus an MLP residual, fit it to the episodes in --data with the task's fit settings "
        "(those of `hybridgym loop`), and save the checkpoint.",
    )
    add_task(parser)
    parser.add_argument("--data", required=True, help="dataset folder (from `hybridgym collect`)")
    parser.add_argument("--out", required=True, help="checkpoint to write, e.g. model.pt")
    parser.add_argument(
        "--residual",
        choices=("mlp", "none"),
        default="mlp",
        help="mlp (default): prior + network; none: physics only, constants fitted",
    )
    parser.add_argument(
        "--ensemble", type=count(1), default=1, metavar="K", help="models in an ensemble"
    )
    parser.add_argument(
        "--iterations", type=count(0), default=None, help="Adam steps (default: the task's)"
    )
    parser.add_argument(
        "--method",
        default=None,
        help="integrator: euler, midpoint, rk4 (fixed steps) or dopri5, bosh3, dopri8 "
        "(adaptive) (default: the task's)",
    )
    parser.add_argument(
        "--validation",
        type=fraction,
        default=0.2,
        metavar="FRACTION",
        help="share of episodes held out to measure the model and stop early (default 0.2; "
        "with one episode nothing is held out)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any FitConfig field, VALUE as JSON (e.g. --set horizon=20 --set "
        "lbfgs_iterations=0); repeatable",
    )
    add_common(parser)
    parser.set_defaults(run=run)


def _fit_config(args: argparse.Namespace, defaults: dict) -> FitConfig:
    from hybridgym.models import FitConfig

    overrides = parse_overrides(args.set)
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"--set {unknown[0]}: not a FitConfig field; known: {sorted(known)}")
    values = {**defaults, **overrides, "seed": args.seed, "progress": not args.quiet}
    values["validation_fraction"] = 0.0  # the split is made here, to report on it
    if args.iterations is not None:
        values["iterations"] = args.iterations
    if isinstance(values.get("validation_horizons"), list):
        values["validation_horizons"] = tuple(values["validation_horizons"])
    return FitConfig(**values)


def _members(args: argparse.Namespace, task: Task, loop: LoopConfig) -> list[HybridODE]:
    """``--ensemble`` new models: the task's prior (constants off the truth) + residual."""
    import torch

    from hybridgym.models import HybridODE

    members = []
    for k in range(args.ensemble):
        torch.manual_seed(args.seed * 1000 + k)
        prior = task.make_prior(perturbation=loop.prior_perturbation)
        residual = None
        if args.residual == "mlp":
            residual = task.make_residual(
                hidden=loop.hidden, activation=loop.activation, prior=prior
            )
        members.append(
            HybridODE(
                prior,
                residual,
                dt=task.dt,
                method=args.method or loop.method,
                substeps=loop.substeps,
                residual_mask=loop.residual_mask if residual is not None else None,
            )
        )
    return members


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybridgym.agents import LoopConfig
    from hybridgym.envs import get_task
    from hybridgym.models import METHODS, Ensemble, TrajectoryDataset
    from hybridgym.models import fit as fit_model

    if args.method is not None and args.method not in METHODS:
        raise ValueError(f"--method {args.method!r} is not an integrator; use one of {METHODS}")
    device = setup_torch(args)
    task = get_task(args.task)
    out = output_file(args.out, "--out")
    data = TrajectoryDataset.load(args.data)
    task.check_dataset(data, f"--data {args.data}")
    loop = LoopConfig.for_task(task)
    config = _fit_config(args, loop.fit)
    members = _members(args, task, loop)
    model = (members[0] if len(members) == 1 else Ensemble(members)).to(device)
    start = members[0].prior.physical_parameters()
    train, validation = data.split(args.validation, seed=args.seed)
    report = fit_model(model, train, config, validation=validation if len(validation) else None)
    model.save(out)

    console = Console(width=120)
    truth = task.make_prior(perturbation=0.0).physical_parameters()
    title = f"physical constants of {task.name} (fitted to {args.data})"
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("constant")
    table.add_column("start", justify="right")
    columns = ["fitted"] if len(members) == 1 else [f"member {k}" for k in range(len(members))]
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("simulator's true value", justify="right")
    fitted = [m.prior.physical_parameters() for m in members]
    for name, value in start.items():
        table.add_row(
            name, f"{value:.6g}", *(f"{f[name]:.6g}" for f in fitted), f"{truth[name]:.6g}"
        )
    console.print(table)

    held_out = len(validation)
    where = f"{held_out} held-out episode{'s' * (held_out != 1)}" if held_out else "training data"
    title = f"validation error ({where}): k-step prediction RMSE"
    errors = Table(title=title, min_width=len(title) + 4)
    errors.add_column("k", justify="right")
    for name in data.state_names:
        errors.add_column(name, justify="right")
    for k, by_state in report.validation_errors.items():
        errors.add_row(str(k), *(f"{by_state[name]:.4g}" for name in data.state_names))
    console.print(errors)
    print(
        f"fit: {len(train)} training episodes ({train.num_steps} steps), {report.iterations} "
        f"Adam steps, final loss {report.final_loss:.4g}, {report.wall_time:.1f} s"
    )
    print(f"model: {out}")
    return 0
