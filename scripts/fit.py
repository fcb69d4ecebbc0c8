"""``hybridgym fit``: fit a hybrid model to a dataset (a folder or a CSV file) and save the
checkpoint: a built-in task's physics prior plus a residual network (``--task``), or for any
other data a black-box model (a plain neural ODE) or a user's prior (``--prior``)."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import TYPE_CHECKING, Any

from hybridgym.scripts._common import (
    add_common,
    count,
    fraction,
    output_file,
    setup_torch,
)
from hybridgym.scripts.loop import parse_overrides

if TYPE_CHECKING:
    from hybridgym.agents import LoopConfig
    from hybridgym.envs import Task
    from hybridgym.models import FitConfig, HybridODE, TrajectoryDataset


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fit",
        help="fit a hybrid model (physics prior + residual network) to a dataset",
        description="With --task: build the task's physics prior (its constants started off "
        "the truth) plus an MLP residual and fit it with the task's fit settings (those of "
        "`hybridgym loop`). Without: a black-box model (an MLP vector field, Euler steps at "
        "the data's dt), or --prior FILE.py:CLASS plus an MLP, fitted with FitConfig's "
        "defaults. Saves the checkpoint.",
    )
    parser.add_argument(
        "--task", default=None, help="a built-in task, e.g. pendulum (default: none, any data)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a dataset folder (from `hybridgym collect`) or a CSV file (TrajectoryDataset."
        "to_csv's format; other CSVs name their columns with --states and --actions)",
    )
    parser.add_argument(
        "--states", default=None, metavar="A,B,...", help="CSV: the state columns, in order"
    )
    parser.add_argument(
        "--actions", default=None, metavar="U,...", help="CSV: the action columns, in order"
    )
    parser.add_argument(
        "--dt",
        type=float,
        default=None,
        help="the control interval, where the data does not record it (default: the data's)",
    )
    parser.add_argument(
        "--prior",
        default=None,
        metavar="FILE.py:CLASS",
        help="without --task: your physics as a PhysicsPrior subclass (built with no "
        "arguments); default: none (a black-box model)",
    )
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


def _generic_members(args: argparse.Namespace, data: TrajectoryDataset) -> list[HybridODE]:
    """``--ensemble`` new models of any data: ``--prior`` (or none) + an MLP residual, with the
    model settings the loop gives any Gymnasium env."""
    import torch

    from hybridgym.agents.loop import GENERIC_MODEL
    from hybridgym.envs.user_code import load_prior_factory
    from hybridgym.models import HybridODE, MLPResidual

    n, m = data.state_dim, data.action_dim
    build = load_prior_factory(args.prior, n, m) if args.prior is not None else None
    if build is None and args.residual == "none":
        raise ValueError("--residual none needs a prior (--task or --prior): nothing to fit")
    members = []
    for k in range(args.ensemble):
        torch.manual_seed(args.seed * 1000 + k)
        residual = None
        if args.residual == "mlp":
            hidden, activation = GENERIC_MODEL["hidden"], GENERIC_MODEL["activation"]
            residual = MLPResidual(n, m, hidden, activation, angle_dims=data.angle_dims)
        members.append(
            HybridODE(
                None if build is None else build(),
                residual,
                dt=data.dt,
                method=args.method or GENERIC_MODEL["method"],
                state_dim=n,
                action_dim=m,
            )
        )
    return members


def _read_data(args: argparse.Namespace) -> TrajectoryDataset:
    """``--data``: a dataset folder or a CSV file, with ``--dt`` where it has none."""
    from hybridgym.models import TrajectoryDataset

    path = pathlib.Path(args.data)
    columns = {"--states": args.states, "--actions": args.actions}
    if path.is_dir() or (not path.exists() and path.suffix.lower() != ".csv"):
        if any(v is not None for v in columns.values()):
            raise ValueError("--states and --actions are for a CSV file; --data is a folder")
        data = TrajectoryDataset.load(path)
    elif path.is_file():
        names = {
            k: None if v is None else [c.strip() for c in v.split(",")] for k, v in columns.items()
        }
        if (names["--states"] is None) != (names["--actions"] is None):
            raise ValueError("give both --states and --actions (the CSV's columns), or neither")
        data = TrajectoryDataset.from_csv(
            path, state_columns=names["--states"], action_columns=names["--actions"], dt=args.dt
        )
    else:
        raise FileNotFoundError(f"--data {path} does not exist (give a dataset folder or a CSV)")
    if not len(data):
        raise ValueError(f"--data {path} holds no episodes")
    dt = args.dt if args.dt is not None else data.dt
    if dt is None:
        dt = _uniform_dt(data, path)
    if data.dt is None or data.dt != dt:
        data = TrajectoryDataset(
            data.episodes,
            state_names=data.state_names,
            action_names=data.action_names,
            dt=dt,
            angle_dims=data.angle_dims,
        )
    return data


def _uniform_dt(data: TrajectoryDataset, path: Any) -> float:
    """The data's control interval from its times, or a ValueError asking for --dt."""
    import numpy as np

    gaps = np.concatenate([np.diff(ep.times) for ep in data.episodes])
    if not np.allclose(gaps, gaps[0], rtol=1e-6, atol=1e-9):
        raise ValueError(
            f"--data {path} records no dt and its times are not evenly spaced "
            f"({gaps.min():g} to {gaps.max():g}); give --dt or resample the data"
        )
    return float(gaps.mean())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybridgym.agents import LoopConfig
    from hybridgym.envs import get_task
    from hybridgym.models import METHODS, Ensemble
    from hybridgym.models import fit as fit_model

    if args.method is not None and args.method not in METHODS:
        raise ValueError(f"--method {args.method!r} is not an integrator; use one of {METHODS}")
    if args.task is not None and args.prior is not None:
        raise ValueError("--prior is for data without --task (a task brings its own prior)")
    device = setup_torch(args)
    task = get_task(args.task) if args.task is not None else None
    out = output_file(args.out, "--out")
    data = _read_data(args)
    if task is not None:
        task.check_dataset(data, f"--data {args.data}")
        loop = LoopConfig.for_task(task)
        config = _fit_config(args, loop.fit)
        members = _members(args, task, loop)
    else:
        config = _fit_config(args, {})
        members = _generic_members(args, data)
    model = (members[0] if len(members) == 1 else Ensemble(members)).to(device)
    prior = members[0].prior
    start = prior.physical_parameters() if hasattr(prior, "physical_parameters") else {}
    train, validation = data.split(args.validation, seed=args.seed)
    report = fit_model(model, train, config, validation=validation if len(validation) else None)
    model.save(out)

    console = Console(width=120)
    if start:
        truth = task.make_prior(perturbation=0.0).physical_parameters() if task else None
        owner = task.name if task else type(prior).__name__
        title = f"physical constants of {owner} (fitted to {args.data})"
        table = Table(title=title, min_width=len(title) + 4)
        table.add_column("constant")
        table.add_column("start", justify="right")
        columns = ["fitted"] if len(members) == 1 else [f"member {k}" for k in range(len(members))]
        for column in columns:
            table.add_column(column, justify="right")
        if truth is not None:
            table.add_column("simulator's true value", justify="right")
        fitted = [m.prior.physical_parameters() for m in members]
        for name, value in start.items():
            cells = [f"{value:.6g}", *(f"{f[name]:.6g}" for f in fitted)]
            if truth is not None:
                cells.append(f"{truth[name]:.6g}")
            table.add_row(name, *cells)
        console.print(table)
    elif task is None:
        kind = "an MLP residual" if prior is not None else "a black box (MLP vector field)"
        console.print(
            f"model: {kind}, {members[0].method} steps of dt {data.dt:g}, "
            f"{len(members)} member{'s' * (len(members) != 1)}",
            highlight=False,
        )

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
    if report.choices:
        print("how (FitReport.choices; FitConfig fields given with --set are used as given):")
        print("\n".join(f"  {line}" for line in report.summary().splitlines()))
    if task is None and prior is not None:
        print(f"load it with HybridODE.load({str(out)!r}, prior={type(prior).__name__}())")
    print(f"model: {out}")
    return 0
