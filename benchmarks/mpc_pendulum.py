"""MPCAgent on the real Pendulum-v1 with a hybrid model fitted to 200 uniformly random real
steps, against the same planner with the exact model.

Model: the pendulum prior (a, b 50% low) + 32x32 ReLU residual, Euler steps, fitted with the
loop's Pendulum fit (``LOOP_DEFAULTS["pendulum"]["fit"]``). Planner: the loop's Pendulum
settings (CEM, horizon 30, 300 samples, 4 iterations). Evaluation: 10 deterministic episodes
(seeds 1,000,000+). Target (issue 5): mean return >= -200; reports milliseconds per action
(median over the evaluation's decisions, one CPU thread).

Usage: python mpc_pendulum.py [SEEDS] (default 3); writes benchmarks/results/mpc_pendulum.json
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from hybridgym.agents import LOOP_DEFAULTS, MPCAgent, evaluate
from hybridgym.envs import get_task
from hybridgym.envs.systems.pendulum import identifiability_model
from hybridgym.models import FitConfig, TrajectoryDataset, fit

from common import write

torch.set_num_threads(1)
TASK = get_task("pendulum")
DEFAULTS = LOOP_DEFAULTS["pendulum"]
PLANNER = DEFAULTS["agent_kwargs"]["mpc"]
EVAL_SEED = 1_000_000


class _Timed:
    """Wraps a planner's predict to record the seconds of every decision."""

    def __init__(self, agent: MPCAgent) -> None:
        self.agent, self.seconds = agent, []

    def predict(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.agent.predict(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return out


def run(label: str, model, seed: int) -> dict[str, object]:
    planner = _Timed(MPCAgent(model, TASK, seed=seed, **PLANNER))
    result = evaluate(planner, TASK, episodes=10, seed=EVAL_SEED)
    return {
        "model": label,
        "seed": seed,
        "mean": result.mean,
        "std": result.std,
        "ms_per_action": 1000 * statistics.median(planner.seconds),
    }


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    rows = []
    for seed in seeds:
        data = TrajectoryDataset.collect(TASK.make_real_env(), TASK, steps=200, seed=seed)
        torch.manual_seed(seed)
        model = identifiability_model()
        start = time.perf_counter()
        report = fit(model, data, FitConfig(**{**DEFAULTS["fit"], "seed": seed, "progress": False}))
        row = run("hybrid, 200 random steps", model, seed)
        row["fit_seconds"] = time.perf_counter() - start
        row["constants"] = report.physical_parameters
        rows.append(row)
    rows.append(run("exact", TASK.make_oracle(), 0))
    print(f"{'model':26s} {'seed':>4s} {'return':>16s} {'ms/action':>9s}")
    for r in rows:
        print(
            f"{r['model']:26s} {r['seed']:4d} {r['mean']:8.1f} +- {r['std']:5.1f} "
            f"{r['ms_per_action']:9.1f}"
        )
    hybrid = [r for r in rows if r["model"].startswith("hybrid")]
    print(
        f"hybrid model: worst mean return {min(r['mean'] for r in hybrid):.1f} (target >= -200), "
        f"median {statistics.median(r['ms_per_action'] for r in hybrid):.1f} ms per action"
    )
    print("wrote", write("mpc_pendulum", {"rows": rows, "planner": PLANNER}))


if __name__ == "__main__":
    main()
