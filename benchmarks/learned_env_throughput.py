"""Environment steps per second of the learned environments, against Gymnasium's Pendulum-v1.

A Pendulum hybrid model (textbook prior + 2x64 tanh MLP residual, RK4) served as the raw
batched core and as ``LearnedVecEnv`` for N in {1, 16, 256, 4096}; baseline in the same run:
Gymnasium ``Pendulum-v1`` in SB3's ``DummyVecEnv`` with 1 and 16 envs. Torch on 1 thread.
Also the peak resident memory at N = 4096 beyond what importing torch costs (a fresh
subprocess). Targets (issue 4): >= 1,000,000 steps/s at N = 4096 and >= 20x DummyVecEnv(1);
< 200 MB. Prints a table, writes benchmarks/results/learned_env_throughput.json.

Options (the defaults give the run above): ``--device cuda`` steps the learned envs on a GPU
(the Gymnasium baseline stays on the CPU; instead of the host-memory child, the peak GPU
memory is reported), ``--sizes 1024,4096,16384,65536`` chooses N, ``--seconds`` and
``--repeats`` the timing windows, ``--out`` the JSON file (default: the file above for the
default run, else benchmarks/results/learned_env_throughput_DEVICE.json). On a GPU the core
(the torch-native step) checks for finished episodes once per episode length, so its
timing holds no read of the device per step; the VecEnv reads it once per step (SB3's API).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

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


def _no_sync() -> None:
    return None


def rate(
    step,
    n: int,
    seconds: float = SECONDS,
    repeats: int = REPEATS,
    sync: Callable[[], None] = _no_sync,
) -> float:
    """Median env-steps/s over ``repeats`` timed windows of ``seconds`` each; ``sync`` waits
    for queued device work before a window starts and ends (a GPU runs steps asynchronously).
    """
    rates = []
    step()  # warm-up
    sync()
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            calls += 1
        sync()
        rates.append(calls * n / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_learned(
    n: int, device: str = "cpu", seconds: float = SECONDS, repeats: int = REPEATS
) -> dict[str, float]:
    import numpy as np

    from hybridgym.envs import LearnedCore, LearnedVecEnv

    task, model = build_model()
    core = LearnedCore(model, task, n, device=device)
    core.reset_envs(np.arange(n))
    actions = torch.zeros(n, 1, device=device)
    on_cpu = torch.device(device).type == "cpu"
    # reading needs_reset waits for the device: on a GPU, once per episode length
    check_every = 1 if on_cpu else task.max_episode_steps
    calls = [0]

    def core_step():
        core.step(actions)
        calls[0] += 1
        if calls[0] % check_every == 0 and core.needs_reset.any():
            core.reset_envs(np.flatnonzero(core.needs_reset))

    sync = _no_sync if on_cpu else torch.cuda.synchronize
    vec = LearnedVecEnv(model, task, n, device=device)
    vec.reset()
    np_actions = np.zeros((n, 1), dtype=np.float32)
    return {
        "core": rate(core_step, n, seconds, repeats, sync),
        "vec_env": rate(lambda: vec.step(np_actions), n, seconds, repeats, sync),
    }


def measure_gymnasium(n: int, seconds: float = SECONDS, repeats: int = REPEATS) -> float:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1") for _ in range(n)])
    venv.reset()
    actions = np.zeros((n, 1), dtype=np.float32)
    return rate(lambda: venv.step(actions), n, seconds, repeats)


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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=SIZES,
        help="comma-separated numbers of environments (default 1,16,256,4096)",
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per timing window")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timing windows (median)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    if not args.sizes or min(args.sizes) < 1 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--sizes must be positive ints, --seconds > 0 and --repeats >= 1")
    return args


def main() -> None:
    if sys.argv[1:] == ["--memory"]:
        memory_child()
        return
    args = parse_args(sys.argv[1:])
    if torch.device(args.device).type != "cpu" or args.sizes != SIZES or args.out is not None:
        run_on_device(args)
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


def run_on_device(args: argparse.Namespace) -> None:
    """The run with non-default options: the same measurements on ``args.device`` for
    ``args.sizes``, written to ``args.out`` (or results/learned_env_throughput_DEVICE.json)."""
    from common import RESULTS, machine

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    seconds, repeats = args.seconds, args.repeats
    baseline = {n: measure_gymnasium(n, seconds, repeats) for n in (1, 16)}
    rows = []
    for n in args.sizes:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        row = {"num_envs": n, **measure_learned(n, args.device, seconds, repeats)}
        row["seconds"] = time.perf_counter() - start  # construction and resets included
        if cuda:
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append(row)
        print(
            f"N={n:>7,d} on {device}: core {row['core']:>14,.0f} steps/s, "
            f"VecEnv {row['vec_env']:>14,.0f} steps/s",
            flush=True,
        )
    payload = {
        "machine": machine(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else None,
        "sizes": list(args.sizes),
        "seconds_per_window": seconds,
        "repeats": repeats,
        "core_reset_check_every": 1 if device.type == "cpu" else "max_episode_steps",
        "rows": rows,
        "dummy_vec_env": baseline,
    }
    out = args.out or RESULTS / f"learned_env_throughput_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(
        f"Gymnasium Pendulum-v1 in DummyVecEnv (CPU): 1 env {baseline[1]:,.0f}/s, "
        f"16 envs {baseline[16]:,.0f}/s"
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
