"""Shared helpers for benchmark scripts: timing with medians, machine facts, JSON output."""

from __future__ import annotations

import json
import pathlib
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

from hybridgym.agents.compare import machine_info

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    return {**machine_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def median_rate(fn: Callable[[], int], repeats: int = 5, min_seconds: float = 0.3) -> float:
    """Median over ``repeats`` runs of (work units per second); ``fn`` returns its units."""
    rates = []
    for _ in range(repeats):
        units, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds:
            units += fn()
        rates.append(units / elapsed)
    return statistics.median(rates)


def write(name: str, payload: dict[str, object]) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), e.g. ``VmRSS`` or ``VmHWM``; else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0); False where impossible.

    ``ru_maxrss`` cannot do this: a child process inherits its parent's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None
