"""Steps per second of the real systems, against Gymnasium's Pendulum-v1 in the same run.

Also: one vector-field evaluation through the numpy path (what the real envs use) against the
torch path (what the models use), to justify the numpy real envs. Prints a table, writes
benchmarks/results/real_envs.json. Medians of 5 runs; torch on 1 thread.
"""

from __future__ import annotations

import numpy as np
import torch

import hybridgym.envs  # noqa: F401
from hybridgym.envs import get_task

from common import median_rate, write

torch.set_num_threads(1)

CASES = [
    ("Pendulum-v1 (Gymnasium, baseline)", "pendulum", {}),
    ("LotkaVolterra-v0", "lotka_volterra", {}),
    ("DataCenter-v0, 4 zones", "datacenter", {"num_zones": 4}),
    ("DataCenter-v0, 64 zones", "datacenter", {"num_zones": 64}),
    ("CartPoleSwingUp-v0", "cartpole_swingup", {}),
]


def env_rate(task) -> float:
    env = task.make_real_env()
    env.reset(seed=0)
    actions = (
        np.random.default_rng(0)
        .uniform(env.action_space.low, env.action_space.high, (256, *env.action_space.shape))
        .astype(np.float32)
    )

    def run() -> int:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return len(actions)

    return median_rate(run)


def field_rates(task) -> tuple[float, float]:
    x = task.sample_initial_states(1, np.random.default_rng(0))
    u = np.zeros((1, task.action_dim))
    xt, ut = torch.as_tensor(x), torch.as_tensor(u)

    def numpy_path() -> int:
        for _ in range(100):
            task.true_vector_field(x, u)
        return 100

    def torch_path() -> int:
        for _ in range(100):
            task.true_vector_field(xt, ut)
        return 100

    return median_rate(numpy_path), median_rate(torch_path)


def main() -> None:
    rows = []
    baseline = None
    for label, name, kwargs in CASES:
        task = get_task(name, **kwargs)
        rate = env_rate(task)
        baseline = baseline or rate
        row = {"system": label, "steps_per_s": rate, "vs_pendulum": rate / baseline}
        if name != "pendulum":
            np_rate, torch_rate = field_rates(task)
            row |= {"field_numpy_us": 1e6 / np_rate, "field_torch_us": 1e6 / torch_rate}
        rows.append(row)
    print(
        f"{'system':36s} {'steps/s':>10s} {'x Pendulum':>10s} {'field np us':>12s} "
        f"{'field torch us':>14s}"
    )
    for r in rows:
        print(
            f"{r['system']:36s} {r['steps_per_s']:10.0f} {r['vs_pendulum']:10.2f} "
            f"{r.get('field_numpy_us', float('nan')):12.1f} "
            f"{r.get('field_torch_us', float('nan')):14.1f}"
        )
    print("wrote", write("real_envs", {"rows": rows}))


if __name__ == "__main__":
    main()
