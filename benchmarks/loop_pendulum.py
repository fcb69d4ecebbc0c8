"""Sample efficiency and wall-clock time on Pendulum-v1: the model-based loop against SB3 SAC.

For each seed, the loop (``LoopConfig.for_task("pendulum")``: 50 random real steps, fit the
hybrid model, then control with the CEM planner through it (agent ``mpc``) or with a policy
trained by backpropagating through it (agent ``differentiable``), evaluate; then 50 more real
steps with that controller, refit, ...) runs until its evaluation reaches -200 or 200 real steps
are spent. Model-free SAC (``make_agent("sac", "Pendulum-v1")``) learns on the same seed and is
evaluated every 250 real steps until it reaches -200 (at most 10,000 steps). Both are evaluated
on the same 10 deterministic episodes; evaluation is measurement: neither its steps nor its time
count. Reports real steps and wall seconds to -200 for both, their ratios, the loop's peak
resident memory and the disk used by its run directory.

Usage: python loop_pendulum.py [SEEDS] [AGENTS]   (default: 5 seeds, mpc,differentiable)
Writes benchmarks/results/loop_pendulum.json.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile

import torch

from hybridgym.agents import LoopConfig, ModelBasedLoop, learning_curve, make_agent
from hybridgym.envs import get_task

from common import reset_peak_rss, status_kib, write

torch.set_num_threads(1)
TASK = get_task("pendulum")
TARGET = -200.0
EVAL_EPISODES = 10
EVAL_SEED = 1_000_000  # the loop's default evaluation seeds
SAC_BUDGET = 10_000
SAC_EVERY = 250


def disk_kib(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


def run_loop(seed: int, root: pathlib.Path, agent: str) -> dict[str, object]:
    config = LoopConfig.for_task(
        "pendulum", seed=seed, iterations=4, stop_return=TARGET, agent=agent
    )
    reset_peak_rss()
    run_dir = root / f"loop_{agent}_{seed}"
    history = ModelBasedLoop(TASK, config, run_dir, log=None).run()
    hit = next((row for row in history if row["eval_return_mean"] >= TARGET), None)
    return {
        "seed": seed,
        "agent": agent,
        "history": history,
        "steps_to_target": hit["real_steps"] if hit else None,
        "seconds_to_target": hit["wall_seconds"] if hit else None,
        "final_return": history[-1]["eval_return_mean"],
        "peak_rss_mib": (status_kib("VmHWM") or 0) / 1024,
        "run_dir_kib": disk_kib(run_dir),
    }


def run_sac(seed: int) -> dict[str, object]:
    agent = make_agent("sac", "Pendulum-v1", seed=seed)
    curve = learning_curve(
        agent, TASK, SAC_BUDGET, SAC_EVERY, episodes=EVAL_EPISODES, seed=EVAL_SEED, target=TARGET
    )
    return {
        "seed": seed,
        "curve": curve.points,
        "steps_to_target": curve.steps_to_target,
        "seconds_to_target": curve.seconds_to_target,
    }


def report(agent: str, loops: list[dict], sacs: list[dict]) -> dict[str, object]:
    print(f"-- loop with the {agent} agent against model-free SAC")
    print(
        f"{'seed':>4s} {'loop steps':>10s} {'loop s':>7s} {'loop return':>11s} "
        f"{'SAC steps':>9s} {'SAC s':>6s} {'step ratio':>10s} {'time ratio':>10s} "
        f"{'peak MiB':>8s} {'run KiB':>7s}"
    )
    ratios, time_ratios = [], []
    for loop, sac in zip(loops, sacs, strict=True):
        ls, lt = loop["steps_to_target"], loop["seconds_to_target"]
        ss, st = sac["steps_to_target"], sac["seconds_to_target"]
        ratio = ss / ls if ls and ss else None
        time_ratio = st / lt if lt and st else None
        ratios += [ratio] if ratio else []
        time_ratios += [time_ratio] if time_ratio else []
        print(
            f"{loop['seed']:4d} {ls or '-':>10} {lt or float('nan'):7.1f} "
            f"{loop['final_return']:11.1f} {ss or '-':>9} {st or float('nan'):6.1f} "
            f"{ratio or float('nan'):10.1f} {time_ratio or float('nan'):10.2f} "
            f"{loop['peak_rss_mib']:8.0f} {loop['run_dir_kib']:7d}"
        )
    solved = sum(1 for loop in loops if loop["steps_to_target"] and loop["steps_to_target"] <= 100)
    summary = {
        "agent": agent,
        "solved_within_100_steps": solved,
        "seeds": len(loops),
        "median_step_ratio": statistics.median(ratios) if ratios else None,
        "median_time_ratio": statistics.median(time_ratios) if time_ratios else None,
        "max_peak_rss_mib": max(loop["peak_rss_mib"] for loop in loops),
        "max_run_dir_kib": max(loop["run_dir_kib"] for loop in loops),
    }
    print(f"loop reached {TARGET} within 100 real steps in {solved} of {len(loops)} seeds")
    if ratios:
        ratio = summary["median_step_ratio"]
        print(f"median real-step ratio SAC / loop: {ratio:.1f}x (target 30x)")
    if time_ratios:
        print(
            f"median wall-clock ratio SAC / loop: {summary['median_time_ratio']:.2f}x "
            "(target >= 1: the loop no slower)"
        )
    print(
        f"peak resident memory {summary['max_peak_rss_mib']:.0f} MiB (target < 2048), "
        f"run directory at most {summary['max_run_dir_kib']} KiB"
    )
    return summary


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    agents = sys.argv[2].split(",") if len(sys.argv) > 2 else ["mpc", "differentiable"]
    with tempfile.TemporaryDirectory() as tmp:
        loops = {a: [run_loop(seed, pathlib.Path(tmp), a) for seed in seeds] for a in agents}
    sacs = [run_sac(seed) for seed in seeds]
    summaries = [report(agent, loops[agent], sacs) for agent in agents]
    payload = {"loop": loops, "sac": sacs, "summaries": summaries, "target": TARGET}
    print("wrote", write("loop_pendulum", payload))


if __name__ == "__main__":
    main()
