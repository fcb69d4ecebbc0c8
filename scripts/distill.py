"""``hybridgym distill``: read a fitted model's residual network back as equations (PySINDy)."""

from __future__ import annotations

import argparse

from hybridgym.scripts._common import count, existing_file, output_file, setup_torch, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "distill",
        help="read a fitted model's residual network back as equations (PySINDy)",
        description="Sparse regression of the residual network's output at the recorded "
        "states and actions on a polynomial library: the missing physics as equations.",
    )
    parser.add_argument("model", metavar="MODEL.pt", help="checkpoint from `hybridgym fit`")
    parser.add_argument(
        "--data", required=True, help="dataset folder: the states and actions to regress on"
    )
    parser.add_argument("--degree", type=int, default=2, help="polynomial degree (default 2)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.1,
        help="drop terms with smaller coefficients, in the data's units (default 0.1)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="also save the model with the equations in place of the network (a checkpoint "
        "that `hybridgym train` and `evaluate` accept); not for ensembles",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="write terms as JSON")
    parser.add_argument("--threads", type=count(1), default=1, help="torch CPU threads (default 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hybridgym.envs import load_model, model_task
    from hybridgym.models import Ensemble, TrajectoryDataset, distill

    setup_torch(args)
    if args.degree < 1:
        raise ValueError(f"--degree must be >= 1, got {args.degree}")
    if not args.threshold >= 0:
        raise ValueError(f"--threshold must be >= 0, got {args.threshold}")
    out = None if args.out is None else output_file(args.out, "--out")
    json_file = None if args.json is None else output_file(args.json, "--json")
    model = load_model(existing_file(args.model, "model"))
    data = TrajectoryDataset.load(args.data)
    task = model_task(model)
    if task is not None:
        task.check_dataset(data, f"--data {args.data}")
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    if args.out is not None and len(members) > 1:
        raise ValueError("--out saves a single model; this checkpoint is an ensemble")
    console = Console(width=120, highlight=False)
    results = []
    for k, member in enumerate(members):
        symbolic = distill(member, data, degree=args.degree, threshold=args.threshold)
        label = f" (member {k})" if len(members) > 1 else ""
        console.print(f"[bold]learned equations{label}[/bold]")
        for line in symbolic.equations():
            print(f"  {line}")
        constants = member.prior.physical_parameters() if member.prior is not None else {}
        results.append(
            {"equations": symbolic.equations(), "terms": symbolic.terms(), "constants": constants}
        )
        if out is not None:
            symbolic.as_hybrid(member).save(out)
    table = Table(title="physical constants of the prior", min_width=36)
    table.add_column("constant")
    for k in range(len(members)):
        table.add_column("value" if len(members) == 1 else f"member {k}", justify="right")
    for name in results[0]["constants"]:
        table.add_row(name, *(f"{r['constants'][name]:.6g}" for r in results))
    console.print(table)
    if out is not None:
        print(f"model with the equations: {out}")
    if json_file is not None:
        print(f"json: {write_json(json_file, {'model': args.model, 'members': results})}")
    return 0
