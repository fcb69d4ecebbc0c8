"""The built-in tasks' loops with their hand-set fit (``SMALL_DATA_FIT``) against ``FitConfig``'s
automatic defaults, side by side.

For each task and seed the loop runs twice from the same seed, with
``LoopConfig.for_task(task)`` unchanged ("recipe") and with its ``fit`` replaced by ``{}``
("default": every setting chosen by ``fit``); nothing else differs. Each iteration is
evaluated on the loop's evaluation episodes (the task's ``eval_episodes``). Reports per run the
return after each iteration, the real steps at which the task's headline target was first
reached (pendulum -200; other tasks: the last return is compared), the summed fit seconds and
the wall-clock; the two variants of a seed run back to back so machine load hits both alike.

Usage: python default_fit_tasks.py [SEEDS] [TASKS]   (default: 5, pendulum)
    SEEDS is a count (seeds 0 to SEEDS-1) or a comma-separated list, e.g.
    python default_fit_tasks.py 3 lotka_volterra,datacenter
    python default_fit_tasks.py 1,2 datacenter
Writes benchmarks/results/default_fit_TASK.json per task.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

from hybridgym.agents import LoopConfig, ModelBasedLoop
from hybridgym.envs import task_names

from common import write

torch.set_num_threads(1)
#: the return each task's headline counts real steps to (None: the final return is compared)
TARGETS: dict[str, float | None] = {"pendulum": -200.0}
VARIANTS = ("recipe", "default")


def run(task: str, seed: int, variant: str) -> dict[str, Any]:
    config = LoopConfig.for_task(task, seed=seed)
    if variant == "default":
        config = dataclasses.replace(config, fit={})
    target = TARGETS.get(task)
    if target is not None:
        config = dataclasses.replace(config, stop_return=target, iterations=4)
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        history = ModelBasedLoop(task, config, pathlib.Path(tmp) / "run", log=None).run()
    rows = [
        {
            "real_steps": int(r["real_steps"]),
            "return": float(r["eval_return_mean"]),
            "fit_seconds": float(r["fit_seconds"]),
        }
        for r in history
    ]
    reached = next(
        (r["real_steps"] for r in rows if target is not None and r["return"] >= target), None
    )
    return {
        "task": task,
        "seed": seed,
        "variant": variant,
        "iterations": rows,
        "final_return": rows[-1]["return"],
        "steps_to_target": reached,
        "fit_seconds": sum(r["fit_seconds"] for r in rows),
        "wall_seconds": time.perf_counter() - begin,
    }


def summary(task: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in results if r["variant"] == variant]
        finals = [r["final_return"] for r in mine]
        out[variant] = {
            "final_return_median": statistics.median(finals),
            "final_returns": finals,
            "fit_seconds_median": statistics.median(r["fit_seconds"] for r in mine),
        }
        if TARGETS.get(task) is not None:
            steps = [r["steps_to_target"] for r in mine]
            out[variant]["steps_to_target"] = steps
            out[variant]["reached"] = f"{sum(s is not None for s in steps)}/{len(steps)}"
    return out


def main() -> None:
    given = sys.argv[1] if len(sys.argv) > 1 else "5"
    seeds = [int(x) for x in given.split(",")] if "," in given else range(int(given))
    tasks = sys.argv[2].split(",") if len(sys.argv) > 2 else ["pendulum"]
    unknown = [t for t in tasks if t not in task_names()]
    if unknown:
        sys.exit(f"unknown task(s) {unknown}; known: {', '.join(task_names())}")
    for task in tasks:
        results = []
        print(f"{task}: seed, variant, return after each iteration (real steps), fit s, wall s")
        for seed in seeds:
            for variant in VARIANTS:
                r = run(task, seed, variant)
                results.append(r)
                curve = ", ".join(f"{i['return']:.1f} ({i['real_steps']})" for i in r["iterations"])
                print(
                    f"  {seed} {variant:7s} {curve}  fit {r['fit_seconds']:.1f} s, "
                    f"wall {r['wall_seconds']:.0f} s",
                    flush=True,
                )
        table = summary(task, results)
        for variant, row in table.items():
            extra = f", target reached {row['reached']}" if "reached" in row else ""
            finals = ", ".join(
                f"{v:.2f}" if math.isfinite(v) else "nan" for v in row["final_returns"]
            )
            print(
                f"  {variant:7s} final returns {finals}; "
                f"fit s median {row['fit_seconds_median']:.1f}{extra}"
            )
        path = write(f"default_fit_{task}", {"task": task, "runs": results, "summary": table})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
