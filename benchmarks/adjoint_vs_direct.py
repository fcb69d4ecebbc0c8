"""Direct backpropagation through the solver against the adjoint method: time and memory.

For a Pendulum hybrid model (textbook prior + 64x64 MLP residual, rk4, one step per interval)
and 256 start states under random torques, one forward rollout of H steps plus the backward
pass of the sum of squared states, for H = 10 ... 200:

* wall time: median of 3 (after one warm-up run);
* peak resident memory: each (sensitivity, H) runs in a fresh subprocess (this script with
  ``--measure SENSITIVITY H``), which reports its peak RSS after the runs minus its RSS right
  after imports and model construction. The peak is the kernel's per-process high-water mark
  ``VmHWM`` (``/proc/self/status``), reset to the current RSS before the runs, not
  ``getrusage().ru_maxrss``: a child's ``ru_maxrss`` starts at its parent's peak (the kernel
  carries the pre-exec high-water mark over exec), so with this ~300 MB parent it hides anything
  smaller. ``ru_maxrss`` is recorded too, and used where ``/proc`` is missing.

Also checks that both give the same gradient at H = 10 (relative norm of the difference; the
adjoint runs torchdiffeq's rk4, the 3/8-rule variant, so the two agree to the solver's order,
not to round-off; float64 shows that part alone). Prints a table, writes
benchmarks/results/adjoint_vs_direct.json. Torch on 1 thread.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from hybridgym.envs import get_task
from hybridgym.models import HybridODE, MLPResidual

from common import reset_peak_rss, status_kib, write

torch.set_num_threads(1)

HORIZONS = (10, 25, 50, 100, 200)
SENSITIVITIES = ("direct", "adjoint")
BATCH = 256
REPEATS = 3
CHECK_HORIZON = 10


def build(dtype: torch.dtype = torch.float32) -> tuple[HybridODE, torch.Tensor, torch.Tensor]:
    """The model (last residual layer randomised: a zero layer would zero every gradient behind
    it) and a batch of start states (B x 2) and torques (B x H_max x 1), seeded."""
    torch.manual_seed(0)
    task = get_task("pendulum")
    model = HybridODE(
        task.make_prior(),
        MLPResidual(2, 1, hidden=(64, 64), angle_dims=(0,)),
        dt=task.dt,
        method="rk4",
        substeps=1,
    )
    torch.nn.init.normal_(model.residual.net[-1].weight, std=0.1)
    model = model.to(dtype)
    generator = torch.Generator().manual_seed(0)
    x0 = task.sample_initial_states(BATCH, generator, dtype=dtype)
    actions = 4.0 * torch.rand(BATCH, max(HORIZONS), 1, generator=generator, dtype=dtype) - 2.0
    return model, x0, actions


def forward_backward(model: HybridODE, x0: torch.Tensor, actions: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    states = model.rollout(x0, actions)
    (states**2).sum().backward()


def measure(sensitivity: str, horizon: int) -> dict[str, float]:
    """Run in a fresh process: median time and peak memory of one forward + backward."""
    # torch.autograd.grad (which the adjoint calls) imports this on first use: ~45 MB of sympy
    # and ~0.3 s, once per process. Count it with the imports, for both sensitivities alike.
    import torch.fx.experimental.symbolic_shapes  # noqa: F401

    model, x0, actions = build()
    model.sensitivity = sensitivity
    actions = actions[:, :horizon].contiguous()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = reset_peak_rss()
    rss_before = status_kib("VmRSS") if hwm else maxrss_before
    forward_backward(model, x0, actions)  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        forward_backward(model, x0, actions)
        times.append(time.perf_counter() - start)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak = status_kib("VmHWM") if hwm else maxrss_after
    return {
        "ms": 1e3 * statistics.median(times),
        "times_ms": [1e3 * t for t in times],
        "peak_mb": (peak - rss_before) / 1024,
        "peak_source": "VmHWM" if hwm else "ru_maxrss",
        "rss_before_mb": rss_before / 1024,
        "ru_maxrss_delta_mb": (maxrss_after - maxrss_before) / 1024,
        "ru_maxrss_before_mb": maxrss_before / 1024,
    }


def gradients(sensitivity: str, dtype: torch.dtype) -> torch.Tensor:
    model, x0, actions = build(dtype)
    model.sensitivity = sensitivity
    forward_backward(model, x0, actions[:, :CHECK_HORIZON])
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def gradient_difference(dtype: torch.dtype) -> float:
    direct, adjoint = gradients("direct", dtype), gradients("adjoint", dtype)
    return float((adjoint - direct).norm() / direct.norm())


def run_child(sensitivity: str, horizon: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", sensitivity, str(horizon)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    check = {str(dtype): gradient_difference(dtype) for dtype in (torch.float32, torch.float64)}
    rows = []
    for horizon in HORIZONS:
        row: dict[str, object] = {"horizon": horizon}
        for sensitivity in SENSITIVITIES:
            row[sensitivity] = run_child(sensitivity, horizon)
        rows.append(row)
    print(f"Pendulum hybrid, MLP 64x64, rk4, batch {BATCH}: one rollout + backward")
    print(
        f"{'horizon':>7s} {'direct ms':>10s} {'adjoint ms':>10s} {'adj/dir':>7s} "
        f"{'direct MB':>10s} {'adjoint MB':>10s} {'ru_maxrss d/a MB':>17s}"
    )
    for r in rows:
        d, a = r["direct"], r["adjoint"]
        print(
            f"{r['horizon']:7d} {d['ms']:10.1f} {a['ms']:10.1f} {a['ms'] / d['ms']:7.2f} "
            f"{d['peak_mb']:10.1f} {a['peak_mb']:10.1f} "
            f"{d['ru_maxrss_delta_mb']:8.1f} / {a['ru_maxrss_delta_mb']:6.1f}"
        )
    first = rows[0]["direct"]
    print(
        f"MB: peak RSS ({first['peak_source']}) minus the RSS after imports and model "
        f"construction ({first['rss_before_mb']:.0f} MB).\nru_maxrss columns: the same delta "
        f"from getrusage, whose high-water mark the child inherits from this parent "
        f"({first['ru_maxrss_before_mb']:.0f} MB at its start): zero until a run exceeds it."
    )
    for dtype, diff in check.items():
        print(
            f"gradient |adjoint - direct| / |direct| at horizon {CHECK_HORIZON}, {dtype}: "
            f"{diff:.2e}"
        )
    payload = {
        "batch": BATCH,
        "repeats": REPEATS,
        "model": "pendulum prior + MLPResidual(2, 1, hidden=(64, 64), angle_dims=(0,)), rk4, "
        "substeps 1, dt 0.05",
        "memory": "peak RSS (VmHWM, reset before the runs) minus RSS after imports and model "
        "construction, fresh process per (sensitivity, horizon); ru_maxrss_delta_mb is the "
        "ru_maxrss difference, which the parent's inherited high-water mark hides",
        "gradient_relative_difference": {"horizon": CHECK_HORIZON, **check},
        "rows": rows,
    }
    print("wrote", write("adjoint_vs_direct", payload))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
