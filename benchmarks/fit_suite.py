"""Fit suite: ``fit(model, data)`` with its defaults on systems users bring, against
hand-tuned long fits.

For each system of ``fit_systems.SYSTEMS`` and each seed, three models are built as a user
would build them (``torch.manual_seed(seed)`` before each):

* prior-only: ``HybridODE(prior, None, dt=dt)``, fitted with ``fit(model, train)``;
* hybrid, defaults: ``HybridODE(prior, MLPResidual(n, m), dt=dt)`` (angle states declared),
  fitted with ``fit(model, train)``: no config at all, so whatever the defaults are today;
* hybrid, tuned: the same model built fresh, fitted with the system's hand-tuned config.

The seed example's hybrid is ``seed_example_model()`` (prior frozen at the truth; its
prior-only model has nothing to fit and is evaluated as it is), and its residual is distilled
(``distill(model, data, threshold=0.1)``) to see whether exactly the two interaction terms come
back within 5%.

Per row: held-out 1/10/20-step prediction errors, one normalised number per horizon
(sqrt(mean over states of (RMSE_i / std_i)^2), std_i over the held-out states), the fitted
constants against the truth, the fit's wall time and the FitReport's fields. Per system and
seed, the acceptance checks:

(a) prior-only 20-step error >= 5 x hybrid-default 20-step error;
(b) hybrid-default 20-step error <= 1.5 x hand-tuned 20-step error;
(c) every identifiable constant within 10% with the defaults;
(d) the default hybrid fit takes <= 30 s;
(e) seed example: the interaction terms are recovered (defaults).

    python benchmarks/fit_suite.py                         # all systems, seed 0
    python benchmarks/fit_suite.py --systems vdp,sir --seeds 0,1,2
    python benchmarks/fit_suite.py --skip-tuned            # prior-only and defaults only

Writes benchmarks/results/fit_suite.json. Torch on 1 thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars that are not forced on

import argparse
import contextlib
import dataclasses
import difflib
import io
import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from fit_systems import SYSTEMS, FitSystem, SeedExampleSystem
from seed_example import recovered

from hybridgym.models import (
    FitConfig,
    HybridODE,
    TrajectoryDataset,
    distill,
    fit,
    prediction_errors,
)

from common import write

torch.set_num_threads(1)

HORIZONS = (1, 10, 20)
PRIOR_RATIO = 5.0  # (a)
TUNED_RATIO = 1.5  # (b)
CONSTANT_TOLERANCE = 0.10  # (c), relative
FIT_SECONDS = 30.0  # (d)
KINDS = ("prior-only", "default", "tuned")
REPORT_FIELDS = (
    "iterations",
    "best_iteration",
    "stopped_early",
    "non_finite_steps",
    "final_loss",
    "wall_time",
)


def normalised_error(rmse: dict[str, float], spread: np.ndarray) -> float:
    """sqrt(mean over states of (RMSE_i / std_i)^2); inf when a prediction is not finite."""
    values = np.array(list(rmse.values())) / spread
    value = float(np.sqrt(np.mean(values**2)))
    return value if math.isfinite(value) else math.inf


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become None, unknown objects their repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if value is None or isinstance(value, bool | int | str):
        return value
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Swallow progress bars on stderr (the default fit may draw one; TQDM_DISABLE does not
    override an explicit ``disable=False``) and pass on any other line written there."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        yield
    for line in captured.getvalue().replace("\r", "\n").splitlines():
        if line.strip() and not line.lstrip().startswith("fit:"):
            print(line, file=sys.stderr)


def build(system: FitSystem, kind: str, seed: int) -> HybridODE:
    torch.manual_seed(seed)
    return system.prior_model() if kind == "prior-only" else system.hybrid_model()


def run_row(
    system: FitSystem,
    kind: str,
    seed: int,
    train: TrajectoryDataset,
    heldout: TrajectoryDataset,
) -> dict[str, Any]:
    """Build, fit and evaluate one model."""
    model = build(system, kind, seed)
    trainable = any(p.requires_grad for p in model.parameters())
    report, seconds = None, 0.0
    if trainable:
        start = time.perf_counter()
        with _quiet_progress():
            if kind == "tuned":
                report = fit(model, train, system.tuned)
            else:
                report = fit(model, train)  # the defaults, whatever they are today
        seconds = time.perf_counter() - start
    spread = heldout.states().std(0)
    errors = prediction_errors(model, heldout, HORIZONS)
    fitted = model.prior.physical_parameters()
    constants = {
        name: {
            "true": truth,
            "fitted": fitted[name],
            "error_pct": 100.0 * (fitted[name] - truth) / truth,
            "identifiable": name in system.identifiable,
        }
        for name, truth in system.true_constants.items()
    }
    row: dict[str, Any] = {
        "system": system.name,
        "seed": seed,
        "kind": kind,
        "fitted": trainable,
        "seconds": seconds,
        "errors": {k: normalised_error(errors[k], spread) for k in HORIZONS},
        "rmse": errors,
        "constants": constants,
    }
    if report is not None:
        row["report"] = {f: getattr(report, f) for f in REPORT_FIELDS if hasattr(report, f)}
        row["report"]["choices"] = getattr(report, "choices", None)
    if isinstance(system, SeedExampleSystem) and kind != "prior-only":
        terms = distill(model, train, threshold=0.1).terms()
        row["terms"] = terms
        row["recovered"] = recovered(terms)
    return row


def checks(system: FitSystem, rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """PASS / FAIL (or n/a, skip) of (a)-(e) for one system and seed."""
    prior, default = rows["prior-only"], rows["default"]
    out: dict[str, str] = {}
    p20, d20 = prior["errors"][20], default["errors"][20]
    out["a"] = _verdict(math.isfinite(d20) and p20 >= PRIOR_RATIO * d20)
    if "tuned" in rows:
        out["b"] = _verdict(d20 <= TUNED_RATIO * rows["tuned"]["errors"][20])
    else:
        out["b"] = "skip"
    judged = [c for c in default["constants"].values() if c["identifiable"]]
    if judged:
        out["c"] = _verdict(all(abs(c["error_pct"]) <= 100 * CONSTANT_TOLERANCE for c in judged))
    else:
        out["c"] = "n/a"
    out["d"] = _verdict(default["seconds"] <= FIT_SECONDS)
    out["e"] = _verdict(default["recovered"]) if "recovered" in default else "n/a"
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.3g}" if value < 1e4 else f"{value:.2e}"


def _constants_text(constants: dict[str, dict[str, Any]]) -> str:
    return " ".join(
        f"{name}{'*' if c['identifiable'] else ''} {c['error_pct']:+.0f}%"
        for name, c in constants.items()
    )


def print_tables(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> None:
    print(
        "\nheld-out prediction error, normalised: sqrt(mean_i (RMSE_i / std_i)^2); constants: "
        "fitted vs true (* identifiable)"
    )
    header = (
        f"{'system':18s} {'seed':>4s} {'model':10s} {'1-step':>8s} {'10-step':>8s} "
        f"{'20-step':>8s} {'fit s':>6s} {'iters':>6s} {'early':>5s}  constants"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        report = r.get("report", {})
        iterations = str(report.get("iterations", "-"))
        early = {True: "yes", False: "no"}.get(report.get("stopped_early"), "-")
        line = (
            f"{r['system']:18s} {r['seed']:4d} {r['kind']:10s} "
            + " ".join(f"{_number(r['errors'][k]):>8s}" for k in HORIZONS)
            + f" {r['seconds']:6.1f} {iterations:>6s} {early:>5s}  "
            + _constants_text(r["constants"])
        )
        if "recovered" in r:
            line += f"  terms {'recovered' if r['recovered'] else 'NOT recovered'}"
        print(line)
    print(
        f"\nchecks: (a) prior-only / default 20-step >= {PRIOR_RATIO:g}; (b) default <= "
        f"{TUNED_RATIO:g} x tuned 20-step; (c) identifiable constants within "
        f"{100 * CONSTANT_TOLERANCE:g}% (defaults); (d) default fit <= {FIT_SECONDS:g} s; "
        "(e) seed example terms recovered"
    )
    print(f"{'system':18s} {'seed':>4s} {'prior/def':>9s} {'def/tuned':>9s}  a    b    c    d    e")
    for v in verdicts:
        c = v["checks"]
        print(
            f"{v['system']:18s} {v['seed']:4d} {_number(v['prior_over_default']):>9s} "
            f"{_number(v['default_over_tuned']):>9s}  " + " ".join(f"{c[k]:4s}" for k in "abcde")
        )
    counted = [c for v in verdicts for c in v["checks"].values() if c in ("PASS", "FAIL")]
    print(f"{counted.count('PASS')} PASS, {counted.count('FAIL')} FAIL")


def _ratio(a: float, b: float) -> float:
    if b == 0 or not math.isfinite(b):
        return math.nan
    return a / b


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated names")
    parser.add_argument("--seeds", default="0", help="comma-separated ints, e.g. 0,1,2")
    parser.add_argument("--skip-tuned", action="store_true", help="no hand-tuned fits")
    parser.add_argument("--quiet", action="store_true", help="only the final tables")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        hints = "".join(
            f" ({n!r}: did you mean {close[0]!r}?)"
            for n in unknown
            if (
                close := difflib.get_close_matches(n, SYSTEMS, n=1, cutoff=0.5)
                or [k for k in SYSTEMS if k.startswith(n[:4])]
            )
        )
        parser.error(f"unknown system(s) {unknown or names}{hints}; known: {', '.join(SYSTEMS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated ints, e.g. 0,1,2; got {args.seeds!r}")
    if not seeds or any(s < 0 for s in seeds):
        parser.error(f"--seeds must be ints >= 0, got {args.seeds!r}")
    args.systems, args.seeds = names, seeds
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kinds = KINDS[:2] if args.skip_tuned else KINDS
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for name in args.systems:
        system = SYSTEMS[name]
        for seed in args.seeds:
            train, heldout = system.train_data(seed), system.heldout_data(seed)
            by_kind = {}
            for kind in kinds:
                row = run_row(system, kind, seed, train, heldout)
                by_kind[kind] = row
                rows.append(row)
                if not args.quiet:
                    errors = " / ".join(_number(row["errors"][k]) for k in HORIZONS)
                    print(
                        f"{name} seed {seed} {kind}: errors {errors}, {row['seconds']:.1f} s",
                        flush=True,
                    )
            d20 = by_kind["default"]["errors"][20]
            verdicts.append(
                {
                    "system": name,
                    "seed": seed,
                    "prior_over_default": _ratio(by_kind["prior-only"]["errors"][20], d20),
                    "default_over_tuned": (
                        _ratio(d20, by_kind["tuned"]["errors"][20])
                        if "tuned" in by_kind
                        else math.nan
                    ),
                    "checks": checks(system, by_kind),
                }
            )
    total = time.perf_counter() - start
    print_tables(rows, verdicts)
    load_after = os.getloadavg()
    print(
        f"\ntotal {total:.0f} s; 1-minute load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    payload = {
        "config": {
            "systems": args.systems,
            "seeds": args.seeds,
            "skip_tuned": args.skip_tuned,
            "horizons": list(HORIZONS),
            "thresholds": {
                "prior_ratio": PRIOR_RATIO,
                "tuned_ratio": TUNED_RATIO,
                "constant_tolerance": CONSTANT_TOLERANCE,
                "fit_seconds": FIT_SECONDS,
            },
            "default_fit_config": dataclasses.asdict(FitConfig()),
            "torch_threads": torch.get_num_threads(),
        },
        "systems": {name: describe(SYSTEMS[name]) for name in args.systems},
        "rows": rows,
        "checks": verdicts,
        "total_s": total,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
    }
    print("wrote", write("fit_suite", _plain(payload)))


def describe(system: FitSystem) -> dict[str, Any]:
    """What a system is, for the JSON."""
    return {
        "title": system.title,
        "missing_term": system.missing_term,
        "state_names": list(system.state_names),
        "action_names": list(system.action_names),
        "dt": system.dt,
        "true_constants": dict(system.true_constants),
        "starting_constants": system.prior().physical_parameters(),
        "identifiable": list(system.identifiable),
        "not_identifiable": dict(system.not_identifiable),
        "train": {"episodes": system.episodes, "steps": system.steps, "noise": system.noise},
        "heldout": {"episodes": system.heldout_episodes, "steps": system.heldout_steps},
        "tuned": dataclasses.asdict(system.tuned),
        "tuned_note": system.tuned_note,
    }


if __name__ == "__main__":
    main()
