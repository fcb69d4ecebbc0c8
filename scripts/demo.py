"""``hybridgym demo``: every real system under random actions and its hand-made controller,
with a summary table, ``summary.json`` and plots.

(Until the model-based loop lands, this is the end-to-end job behind ``make demo``.)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hybridgym.agents import RandomController, evaluate, hand_made_baseline, rollout
from hybridgym.agents.baselines import ConstantController
from hybridgym.agents.plots import plot_episodes, plot_phase_portrait
from hybridgym.envs import LotkaVolterraTask, get_task, task_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run every system with baseline controllers, plot it")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per controller")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(quiet=False)
    results, plots = {}, []
    start = time.perf_counter()
    names = task_names()
    with Progress(console=console, disable=args.quiet, transient=True) as progress:
        job = progress.add_task("systems", total=len(names))
        for name in names:
            task = get_task(name)
            baseline = hand_made_baseline(task)
            controllers = {"random": RandomController(task, seed=args.seed)}
            if not isinstance(baseline, ConstantController):
                controllers[type(baseline).__name__] = baseline
            controllers["zero action"] = ConstantController(task, 0.0)
            env = task.make_real_env()
            results[name] = {}
            for label, controller in controllers.items():
                stats = evaluate(controller, env, episodes=args.episodes, seed=args.seed)
                results[name][label] = {"mean": stats.mean, "std": stats.std}
            episodes = {
                label: rollout(controller, env, task, seed=args.seed)
                for label, controller in controllers.items()
            }
            plots.append(plot_episodes(task, episodes, out / f"{name}.png"))
            if isinstance(task, LotkaVolterraTask):
                plots.append(plot_phase_portrait(task, episodes, out / f"{name}_phase.png"))
            progress.advance(job)

    table = Table(title=f"Returns on the real systems ({args.episodes} episodes, mean +- std)")
    table.add_column("task")
    table.add_column("controller")
    table.add_column("return", justify="right")
    for name, by_controller in results.items():
        for label, stats in by_controller.items():
            table.add_row(name, label, f"{stats['mean']:.2f} +- {stats['std']:.2f}")
    console.print(table)
    summary = {"returns": results, "seconds": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"summary: {out / 'summary.json'}")
    for path in plots:
        console.print(f"plot: {path}")
    return 0
