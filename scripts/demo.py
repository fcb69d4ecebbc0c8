"""``hybridgym demo`` (behind ``make demo``): the model-based loop on Pendulum-v1 against
model-free SAC, the UDE seed example (fit a hybrid model, read the learned equations) and every
real system under random actions and its hand-made controller, with summary tables,
``summary.json`` and plots.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import TYPE_CHECKING

from hybridgym.scripts._common import add_threads, setup_torch

if TYPE_CHECKING:
    from rich.console import Console


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run every system with baseline controllers, plot it")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per controller")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument(
        "--sac-steps",
        type=int,
        default=5000,
        help="real steps of the model-free SAC comparison (0 skips it; default 5000)",
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="loop iterations (default: the task's, 2)"
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="real evaluation episodes per loop iteration (default 10)",
    )
    add_threads(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _model_based_loop(args: argparse.Namespace, out: pathlib.Path, console: Console) -> dict:
    """The loop on Pendulum-v1 (resumed if ``out/loop`` holds it), then SAC on the real env."""
    from rich.table import Table

    from hybridgym.agents import LoopConfig, ModelBasedLoop, learning_curve, make_agent
    from hybridgym.agents.plots import plot_loop_metrics
    from hybridgym.envs import get_task

    task = get_task("pendulum")
    overrides = {"seed": args.seed, "eval_episodes": args.eval_episodes}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    config = LoopConfig.for_task(task, **overrides)
    seed, sac_steps = args.seed, args.sac_steps
    console.print(
        f"[bold]Model-based loop on Pendulum-v1[/bold] ({config.agent} agent, "
        f"{config.initial_steps} random real steps, then {config.steps_per_iteration} per "
        f"iteration; run directory {out / 'loop'})"
    )
    loop = ModelBasedLoop(task, config, out / "loop", log=lambda line: console.print(f"  {line}"))
    history = loop.run()
    result = {"loop": history, "config": config.to_dict()}
    baselines = {}
    if sac_steps > 0:
        console.print(f"[bold]Model-free SAC[/bold] on the real Pendulum-v1, {sac_steps} steps")
        every = max(1, sac_steps // 10)
        curve = learning_curve(
            make_agent("sac", "Pendulum-v1", seed=seed),
            task,
            sac_steps,
            every,
            seed=config.eval_seed,
            episodes=config.eval_episodes,
            target=task.return_threshold,
        )
        baselines["model-free SAC"] = curve.points
        result["sac"] = {
            "curve": curve.points,
            "steps_to_target": curve.steps_to_target,
            "seconds_to_target": curve.seconds_to_target,
        }
    result["plots"] = [
        str(p) for p in plot_loop_metrics(history, out / "loop" / "plots", task, baselines)
    ]
    table = Table(title="Pendulum-v1: return on the real system (10 episodes) vs real steps")
    for column in ("controller", "real steps", "return", "wall s (no evaluation)"):
        table.add_column(column, justify="right")
    for row in history:
        table.add_row(
            f"loop ({config.agent}) it. {row['iteration']}",
            str(row["real_steps"]),
            f"{row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f}",
            f"{row['wall_seconds']:.1f}",
        )
    if "sac" in result:
        for steps, mean in result["sac"]["curve"]:
            table.add_row("model-free SAC", str(steps), f"{mean:.1f}", "")
    console.print(table)
    return result


def _missing_physics(out: pathlib.Path, seed: int) -> dict:
    """Fit the seed example, distill the residual, plot the extrapolation to t = 10."""
    import numpy as np
    import torch

    from hybridgym.agents.plots import plot_prediction
    from hybridgym.envs.systems.lotka_volterra import (
        SEED_EXAMPLE_FIT,
        seed_example,
        seed_example_model,
    )
    from hybridgym.models import distill, fit

    data, _ = seed_example(seed=seed)
    torch.manual_seed(seed)
    model = seed_example_model()
    report = fit(model, data, SEED_EXAMPLE_FIT)
    symbolic = distill(model, data)
    _, truth = seed_example(seed=seed, t_end=10.0)
    steps = len(truth) - 1
    with torch.no_grad():
        x0 = torch.as_tensor(truth[:1], dtype=torch.float32)
        predictions = {
            "hybrid (prior + network)": model.rollout(x0, torch.zeros(1, steps, 2))[0].numpy(),
            "distilled equations": symbolic.as_hybrid(model)
            .rollout(x0, torch.zeros(1, steps, 2))[0]
            .numpy(),
        }
    episode = data.episodes[0]
    plot = plot_prediction(
        np.arange(steps + 1) * 0.25,
        truth,
        predictions,
        data.state_names,
        out / "lotka_volterra_missing_physics.png",
        observed=(episode.times, episode.states),
        title="Missing physics: trained on t <= 5, extrapolated to t = 10",
    )
    error = np.abs(predictions["distilled equations"] - truth).max(0) / np.ptp(truth, 0)
    return {
        "equations": symbolic.equations(),
        "terms": symbolic.terms(),
        "fit_seconds": report.wall_time,
        "extrapolation_error": error.tolist(),
        "plot": plot,
    }


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from hybridgym.agents import RandomController, evaluate, hand_made_baseline, rollout
    from hybridgym.agents.baselines import ConstantController
    from hybridgym.agents.plots import plot_episodes, plot_phase_portrait
    from hybridgym.envs import LotkaVolterraTask, get_task, task_names

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.sac_steps < 0:
        raise ValueError(f"--sac-steps must be >= 0, got {args.sac_steps}")
    setup_torch(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(quiet=False)
    results, plots = {}, []
    start = time.perf_counter()
    names = task_names()
    loop = _model_based_loop(args, out, console)
    plots += [pathlib.Path(p) for p in loop["plots"]]
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

    console.print("[bold]Missing physics:[/bold] fitting the UDE seed example (Lotka-Volterra)")
    missing = _missing_physics(out, args.seed)
    plots.append(missing.pop("plot"))
    for line in missing["equations"]:
        console.print(f"  learned: {line}")
    console.print("  truth:   dprey/dt = prior -0.900 prey predators")
    console.print("           dpredators/dt = prior +0.800 prey predators")

    table = Table(title=f"Returns on the real systems ({args.episodes} episodes, mean +- std)")
    table.add_column("task")
    table.add_column("controller")
    table.add_column("return", justify="right")
    for name, by_controller in results.items():
        for label, stats in by_controller.items():
            table.add_row(name, label, f"{stats['mean']:.2f} +- {stats['std']:.2f}")
    console.print(table)
    summary = {
        "model_based_loop": loop,
        "returns": results,
        "missing_physics": missing,
        "seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"summary: {out / 'summary.json'}")
    for path in plots:
        console.print(f"plot: {path}")
    return 0
