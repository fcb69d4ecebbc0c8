"""Environment steps per second of the learned environments, against Gymnasium's Pendulum-v1.

A Pendulum hybrid model (textbook prior + 2x64 tanh MLP residual, RK4) served as the raw
batched core and as ``LearnedVecEnv`` for N in {1, 16, 256, 4096}; baseline in the same run:
Gymnasium ``Pendulum-v1`` in SB3's ``DummyVecEnv`` with 1 and 16 envs. Torch on 1 thread.
Also the peak resident memory at N = 4096 beyond what importing torch costs (a fresh
subprocess). Targets (issue 4): >= 1,000,000 steps/s at N = 4096 and >= 20x DummyVecEnv(1);
< 200 MB. Prints a table, writes benchmarks/results/learned_env_throughput.json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch

torch.set_num_threads(1)

SIZES = (1, 16, 256, 4096)
SECONDS = 1.0
REPEATS = 5


def build_model():
    from hybridgym.envs import get_task
    from hybridgym.models import HybridODE, MLPResidual

    task = get_task("pendulum")
    torch.manual_seed(0)
    residual = MLPResidual(2, 1, hidden=(64, 64), angle_dims=(0,))
    for p in residual.net[-1].parameters():
        torch.nn.init.normal_(p, std=0.1)
    return task, HybridODE(task.make_prior(), residual, dt=task.dt, method="rk4")


def rate(step, n: int) -> float:
    """Median env-steps/s over REPEATS timed windows of SECONDS each."""
    rates = []
    step()  # warm-up
    for _ in range(REPEATS):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < SECONDS:
            step()
            calls += 1
        rates.append(calls * n / elapsed)
    return statistics.median(rates)


def measure_learned(n: int) -> dict[str, float]:
    import numpy as np

    from hybridgym.envs import LearnedCore, LearnedVecEnv

    task, model = build_model()
    core = LearnedCore(model, task, n)
    core.reset_envs(np.arange(n))
    actions = torch.zeros(n, 1)

    def core_step():
        core.step(actions)
        if core.needs_reset.any():
            core.reset_envs(np.flatnonzero(core.needs_reset))

    vec = LearnedVecEnv(model, task, n)
    vec.reset()
    np_actions = np.zeros((n, 1), dtype=np.float32)
    return {"core": rate(core_step, n), "vec_env": rate(lambda: vec.step(np_actions), n)}


def measure_gymnasium(n: int) -> float:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1") for _ in range(n)])
    venv.reset()
    actions = np.zeros((n, 1), dtype=np.float32)
    return rate(lambda: venv.step(actions), n)


def memory_child() -> None:
    """Peak RSS of the N=4096 learned env beyond importing torch (MB), printed as JSON."""
    from common import reset_peak_rss, status_kib

    base = status_kib("VmRSS")
    reset_peak_rss()
    import numpy as np

    from hybridgym.envs import LearnedVecEnv

    task, model = build_model()
    vec = LearnedVecEnv(model, task, 4096)
    vec.reset()
    actions = np.zeros((4096, 1), dtype=np.float32)
    for _ in range(300):  # across an episode end (200 steps) and its resets
        vec.step(actions)
    print(json.dumps({"peak_mb_beyond_torch": (status_kib("VmHWM") - base) / 1024}))


def main() -> None:
    if sys.argv[1:] == ["--memory"]:
        memory_child()
        return
    from common import write

    rows = []
    baseline = {n: measure_gymnasium(n) for n in (1, 16)}
    for n in SIZES:
        rows.append({"num_envs": n, **measure_learned(n)})
    child = subprocess.run(
        [sys.executable, __file__, "--memory"], capture_output=True, text=True, check=True
    )
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    base1 = baseline[1]
    print(
        f"Gymnasium Pendulum-v1 in DummyVecEnv: 1 env {base1:,.0f}/s, 16 envs {baseline[16]:,.0f}/s"
    )
    print(f"{'N':>6s} {'core steps/s':>14s} {'VecEnv steps/s':>15s} {'VecEnv / Dummy(1)':>18s}")
    for r in rows:
        print(
            f"{r['num_envs']:6d} {r['core']:14,.0f} {r['vec_env']:15,.0f} "
            f"{r['vec_env'] / base1:18.1f}"
        )
    top = rows[-1]
    print(
        f"N=4096: VecEnv {top['vec_env']:,.0f}/s (target 1,000,000: "
        f"{'PASS' if top['vec_env'] >= 1e6 else 'FAIL'}), "
        f"{top['vec_env'] / base1:.1f}x DummyVecEnv(1) (target 20x: "
        f"{'PASS' if top['vec_env'] >= 20 * base1 else 'FAIL'}), "
        f"peak memory {memory['peak_mb_beyond_torch']:.0f} MB beyond torch (target 200 MB: "
        f"{'PASS' if memory['peak_mb_beyond_torch'] < 200 else 'FAIL'})"
    )
    print(
        "wrote",
        write("learned_env_throughput", {"rows": rows, "dummy_vec_env": baseline, **memory}),
    )


if __name__ == "__main__":
    main()
