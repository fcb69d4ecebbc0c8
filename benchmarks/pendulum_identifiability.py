"""Identifiability of physical constants on Pendulum-v1 from ONE random episode.

Prior theta'' = a sin(theta) + b u (with the speed limit of 8 rad/s), a and b started 50% low
(truth: a = 15, b = 3); a ReLU MLP residual on both state derivatives, explicit Euler steps
(``identifiability_model``). Variants over 3 seeds: the full recipe (residual-size penalty +
horizon curriculum), without the penalty, without the curriculum, and the earlier model (rk4,
tanh residual) with the full recipe. Reports the recovered constants and
k-step angle errors on the training episode and on three held-out random episodes, plus how far
each held-out episode strays from the training data.
Writes benchmarks/results/pendulum_identifiability.json.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch

from hybridgym.envs import get_task
from hybridgym.envs.systems.pendulum import IDENTIFIABILITY_FIT, identifiability_model
from hybridgym.models import FitConfig, HybridODE, MLPResidual, TrajectoryDataset, fit
from hybridgym.models import prediction_errors as k_step

from common import write

torch.set_num_threads(1)
TASK = get_task("pendulum")
RECIPE = IDENTIFIABILITY_FIT
VARIANTS = {
    "penalty + curriculum": RECIPE,
    "no penalty": dataclasses.replace(RECIPE, residual_penalty=0.0),
    "no curriculum": dataclasses.replace(RECIPE, curriculum=0.0),
    "rk4 + tanh": RECIPE,
}


def episode(seed: int) -> TrajectoryDataset:
    return TrajectoryDataset.collect(TASK.make_real_env(), TASK, episodes=1, seed=seed)


def coverage_gap(train: TrajectoryDataset, test: TrajectoryDataset) -> float:
    """Median distance of test points to their nearest training point, in (sin, cos,
    thetadot/8, u/2) space: how far the held-out episode strays from the training data."""

    def feats(d):
        x, u = d.states()[:-1], d.actions()
        return np.stack([np.sin(x[:, 0]), np.cos(x[:, 0]), x[:, 1] / 8, u[:, 0] / 2], 1)

    a, b = feats(test), feats(train)
    return float(np.median(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1)))


def run(name: str, config: FitConfig, seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    train = episode(seed)
    if name == "rk4 + tanh":
        residual = MLPResidual(2, 1, hidden=(32, 32), angle_dims=(0,))
        model = HybridODE(TASK.make_prior(), residual, dt=TASK.dt)
    else:
        model = identifiability_model()
    start = time.perf_counter()
    report = fit(model, train, dataclasses.replace(config, seed=seed))
    seconds = time.perf_counter() - start
    held_out = []
    for test_seed in (1000 + seed, 2000 + seed, 3000 + seed):
        test = episode(test_seed)
        errors = k_step(model, test, (1, 10))
        held_out.append(
            {
                "seed": test_seed,
                "rmse_1": errors[1]["theta"],
                "rmse_10": errors[10]["theta"],
                "coverage_gap": coverage_gap(train, test),
            }
        )
    train_errors = k_step(model, train, (1, 10))
    return {
        "variant": name,
        "seed": seed,
        "a": report.physical_parameters["a"],
        "b": report.physical_parameters["b"],
        "train_rmse_1": train_errors[1]["theta"],
        "train_rmse_10": train_errors[10]["theta"],
        "held_out": held_out,
        "seconds": seconds,
    }


def main() -> None:
    variants = sys.argv[1:] or list(VARIANTS)
    rows = [run(name, VARIANTS[name], seed) for name in variants for seed in range(3)]
    print(
        f"{'variant':22s} {'seed':>4s} {'a':>8s} {'b':>7s} {'train 1/10-step':>16s} "
        f"{'held-out 1/10-step (gap)':>40s} {'s':>4s}"
    )
    for r in rows:
        held = "  ".join(
            f"{h['rmse_1']:.4f}/{h['rmse_10']:.3f}({h['coverage_gap']:.2f})" for h in r["held_out"]
        )
        print(
            f"{r['variant']:22s} {r['seed']:4d} {r['a']:8.3f} {r['b']:7.3f} "
            f"{r['train_rmse_1']:.4f}/{r['train_rmse_10']:.4f}   {held}  {r['seconds']:4.0f}"
        )
    for name in variants:
        sel = [r for r in rows if r["variant"] == name]
        a_err = max(abs(r["a"] / 15 - 1) for r in sel)
        b_err = max(abs(r["b"] / 3 - 1) for r in sel)
        first = [r["held_out"][0] for r in sel]  # the episode the test checks (1000 + seed)
        worst1 = max(h["rmse_1"] for h in first)
        worst10 = max(h["rmse_10"] for h in first)
        print(
            f"{name}: max |a error| {a_err:.1%} (target 2%), max |b error| {b_err:.1%} "
            f"(target 7%); held-out episode 1000+seed, worst of 3 seeds: 1-step "
            f"{worst1:.4f} rad (target 0.002), 10-step {worst10:.4f} rad (target 0.02)"
        )
    print("wrote", write("pendulum_identifiability", {"rows": rows}))


if __name__ == "__main__":
    main()
