"""The UDE paper's Lotka-Volterra "missing physics" example, end to end, with its run time.

Fit a hybrid model (exact textbook prior + MLP residual) to 21 noisy samples on t in [0, 5],
distill the residual with PySINDy, check that exactly the interaction terms -0.9 x1 x2 and
+0.8 x1 x2 come back, and measure how well the distilled model extrapolates to t in [0, 10].
Baseline in the same run: a plain neural ODE (no prior) fitted with the same config and budget.
Target: fit + distill under 15 s (median of 3 seeds). Prints a table, writes
benchmarks/results/seed_example.json. Torch on 1 thread.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
import torch

from hybridgym.envs.systems.lotka_volterra import (
    BETA,
    GAMMA,
    SEED_EXAMPLE_FIT,
    seed_example,
    seed_example_model,
)
from hybridgym.models import HybridODE, MLPResidual, distill, fit

from common import write

torch.set_num_threads(1)

SEEDS = (0, 1, 2)
TARGET_SECONDS = 15.0
COEFFICIENT_TOLERANCE = 0.05  # relative
TERM = "prey predators"
DT = 0.25
EXTRAPOLATION_END = 10.0
#: the data on [0, 5] covers about one cycle (period 4.5..5.3), so [0, 10] from the same start
#: retraces the training orbit; a start from seed + 100 tests the vector field off that orbit
NEW_START_OFFSET = 100
CONFIG = SEED_EXAMPLE_FIT


def hybrid_model() -> HybridODE:
    return seed_example_model()


def neural_ode() -> HybridODE:
    return HybridODE(None, MLPResidual(2, 2, hidden=(32, 32)), dt=DT)


def truth(seed: int) -> np.ndarray:
    """Noise-free states on t in [0, 10] from the seed example's start state for ``seed``."""
    return seed_example(seed=seed, t_end=EXTRAPOLATION_END)[1]


def extrapolation_error(model: HybridODE, clean: np.ndarray) -> list[float]:
    """max |prediction - truth| / range of the truth, per state, over the truth's times."""
    steps = len(clean) - 1
    with torch.no_grad():
        x0 = torch.as_tensor(clean[:1], dtype=torch.float32)
        pred = model.rollout(x0, torch.zeros(1, steps, 2))[0].numpy()
    error = np.abs(pred - clean).max(0) / np.ptp(clean, 0)
    return [float(e) if np.isfinite(e) else float("inf") for e in error]


def recovered(terms: dict[str, dict[str, float]]) -> bool:
    """Exactly the interaction term in both equations, within 5% of -beta and +gamma."""
    if set(terms["prey"]) != {TERM} or set(terms["predators"]) != {TERM}:
        return False
    prey, predators = terms["prey"][TERM], terms["predators"][TERM]
    return (
        abs(prey - (-BETA)) <= COEFFICIENT_TOLERANCE * BETA
        and abs(predators - GAMMA) <= COEFFICIENT_TOLERANCE * GAMMA
    )


def run_hybrid(seed: int) -> dict[str, object]:
    data, _ = seed_example(seed=seed)
    torch.manual_seed(seed)
    model = hybrid_model()
    start = time.perf_counter()
    fit(model, data, CONFIG)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    symbolic = distill(model, data, threshold=0.1)
    distill_s = time.perf_counter() - start
    terms = symbolic.terms()
    distilled = symbolic.as_hybrid(model)
    return {
        "seed": seed,
        "fit_s": fit_s,
        "distill_s": distill_s,
        "total_s": fit_s + distill_s,
        "terms": terms,
        "equations": symbolic.equations(),
        "recovered": recovered(terms),
        "extrapolation_error": extrapolation_error(distilled, truth(seed)),
        "extrapolation_error_network": extrapolation_error(model, truth(seed)),
        "new_start_error": extrapolation_error(distilled, truth(seed + NEW_START_OFFSET)),
    }


def run_baseline(seed: int) -> dict[str, object]:
    data, _ = seed_example(seed=seed)
    torch.manual_seed(seed)
    model = neural_ode()
    start = time.perf_counter()
    fit(model, data, CONFIG)
    return {
        "seed": seed,
        "fit_s": time.perf_counter() - start,
        "extrapolation_error": extrapolation_error(model, truth(seed)),
        "new_start_error": extrapolation_error(model, truth(seed + NEW_START_OFFSET)),
    }


def _terms_text(terms: dict[str, dict[str, float]]) -> str:
    parts = []
    for state, found in terms.items():
        body = ", ".join(f"{c:+.3f} {name}" for name, c in found.items()) or "none"
        parts.append(f"{state}: {body}")
    return "; ".join(parts)


def pysindy_import_seconds() -> float:
    """Import PySINDy once up front, so the first repeat's distill time is not its import."""
    start = time.perf_counter()
    import pysindy  # noqa: F401

    return time.perf_counter() - start


def _pair(e: list[float]) -> str:
    return f"{e[0]:.4f} / {e[1]:.4f}"


def main() -> None:
    import_s = pysindy_import_seconds()
    rows = [run_hybrid(seed) for seed in SEEDS]
    baseline = [run_baseline(seed) for seed in SEEDS]

    print("hybrid (exact prior + MLP residual), then distill(threshold=0.1)")
    print("extrapolation: max abs error / state range, prey / predators, on t in [0, 10]")
    print(
        f"{'seed':>4s} {'fit s':>6s} {'distill s':>9s} {'total s':>7s} {'terms':>5s} "
        f"{'distilled':>15s} {'network':>15s} {'new start':>15s}  recovered terms"
    )
    for r in rows:
        print(
            f"{r['seed']:4d} {r['fit_s']:6.2f} {r['distill_s']:9.3f} {r['total_s']:7.2f} "
            f"{'PASS' if r['recovered'] else 'FAIL':>5s} {_pair(r['extrapolation_error']):>15s} "
            f"{_pair(r['extrapolation_error_network']):>15s} {_pair(r['new_start_error']):>15s}"
            f"  {_terms_text(r['terms'])}"
        )
    print(f"(PySINDy import, once, not in distill s: {import_s:.2f} s)")
    print("\nbaseline: plain neural ODE (no prior), same config and budget")
    print(f"{'seed':>4s} {'fit s':>6s} {'same start':>15s} {'new start':>15s}")
    for b in baseline:
        print(
            f"{b['seed']:4d} {b['fit_s']:6.2f} {_pair(b['extrapolation_error']):>15s} "
            f"{_pair(b['new_start_error']):>15s}"
        )

    median_total = statistics.median(r["total_s"] for r in rows)
    time_pass = median_total < TARGET_SECONDS
    all_recovered = all(r["recovered"] for r in rows)
    medians = {
        f"{who}_{where}": statistics.median(max(r[key]) for r in runs)
        for who, runs in (("distilled", rows), ("neural_ode", baseline))
        for where, key in (("same_start", "extrapolation_error"), ("new_start", "new_start_error"))
    }
    print(
        f"\nmedian fit + distill: {median_total:.2f} s (target < {TARGET_SECONDS:g} s): "
        f"{'PASS' if time_pass else 'FAIL'}"
    )
    print(
        f"terms recovered in {sum(r['recovered'] for r in rows)}/{len(rows)} seeds: "
        f"{'PASS' if all_recovered else 'FAIL'}"
    )
    print(
        "median worst-state extrapolation error, same start / new start: "
        f"distilled hybrid {medians['distilled_same_start']:.4f} / "
        f"{medians['distilled_new_start']:.4f}, neural ODE "
        f"{medians['neural_ode_same_start']:.4f} / {medians['neural_ode_new_start']:.4f}"
    )
    payload = {
        "config": {
            "fit": dataclasses.asdict(CONFIG),
            "distill_threshold": 0.1,
            "seeds": list(SEEDS),
            "extrapolation_end": EXTRAPOLATION_END,
            "new_start_seed_offset": NEW_START_OFFSET,
        },
        "target_seconds": TARGET_SECONDS,
        "median_total_s": median_total,
        "time_pass": time_pass,
        "all_recovered": all_recovered,
        "pysindy_import_s": import_s,
        "median_worst_extrapolation_error": medians,
        "hybrid": rows,
        "neural_ode": baseline,
    }
    print("wrote", write("seed_example", payload))


if __name__ == "__main__":
    main()
