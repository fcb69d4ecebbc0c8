"""The model-based loop against hand-made controllers and model-free SAC at the same real-step
budget, on LotkaVolterra-v0 (and, when named, DataCenter-v0).

For each seed: the loop runs ``LoopConfig.for_task(task)``; SAC (``make_agent("sac", ...)``,
the task's defaults) then learns on the real system for exactly as many real steps as the loop
used; all are evaluated on the same 10 deterministic episodes. The hand-made controllers are
the issue's "no harvesting" / "zero cooling" (zero action) and the task's own
(``hand_made_baseline``: the harvest-threshold controller, the proportional thermostat).

Usage: python loop_small_budget.py [SEEDS] [TASKS] (default: 3, lotka_volterra)
Writes benchmarks/results/loop_small_budget_TASK.json per task.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile

import torch

from hybridgym.agents import (
    ConstantController,
    LoopConfig,
    ModelBasedLoop,
    evaluate,
    hand_made_baseline,
    learning_curve,
    make_agent,
)
from hybridgym.envs import get_task

from common import write

torch.set_num_threads(1)


def run(task_name: str, seed: int, root: pathlib.Path) -> dict[str, object]:
    task = get_task(task_name)
    config = LoopConfig.for_task(task, seed=seed)
    history = ModelBasedLoop(task, config, root / f"{task_name}_{seed}", log=None).run()
    budget = int(history[-1]["real_steps"])
    sac = make_agent("sac", task.make_real_env(), seed=seed)
    curve = learning_curve(
        sac, task, budget, budget, episodes=config.eval_episodes, seed=config.eval_seed
    )
    baseline = hand_made_baseline(task)
    return {
        "task": task_name,
        "seed": seed,
        "real_steps": budget,
        "loop": history[-1]["eval_return_mean"],
        "loop_wall_s": history[-1]["wall_seconds"],
        "sac": curve.points[-1][1],
        "zero_action": evaluate(ConstantController(task, 0.0), task, 10, config.eval_seed).mean,
        type(baseline).__name__: evaluate(baseline, task, 10, config.eval_seed).mean,
    }


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    tasks = sys.argv[2].split(",") if len(sys.argv) > 2 else ["lotka_volterra"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, seed, pathlib.Path(tmp)) for name in tasks for seed in seeds]
    for name in tasks:
        sel = [r for r in rows if r["task"] == name]
        columns = [k for k in sel[0] if k not in ("task", "seed", "real_steps", "loop_wall_s")]
        print(f"-- {name}: mean return over 10 real episodes, {sel[0]['real_steps']} real steps")
        print(f"{'seed':>4s} " + " ".join(f"{c:>26s}" for c in columns))
        for r in sel:
            print(f"{r['seed']:4d} " + " ".join(f"{r[c]:26.2f}" for c in columns))
        medians = {c: statistics.median(r[c] for r in sel) for c in columns}
        print("median " + " ".join(f"{c} {v:.2f}" for c, v in medians.items()))
        wins = {c: sum(r["loop"] > r[c] for r in sel) for c in columns if c != "loop"}
        print(f"loop better than: {wins} (of {len(sel)} seeds)")
    for name in tasks:
        sel = [r for r in rows if r["task"] == name]
        print("wrote", write(f"loop_small_budget_{name}", {"rows": sel}))


if __name__ == "__main__":
    main()
