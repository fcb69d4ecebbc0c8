"""One trial of a comparison: one method on one seed, on the real system.

:func:`run_trial` is all the work of a trial and depends on nothing but its arguments (the
comparison's configuration, its output folder, the method and the seed), so it gives the same
record in whichever process runs it: :class:`~hybridgym.agents.compare.Comparison` calls it in
its own process, the Ray backend (:mod:`hybridgym.agents.backends`) in a worker. Every source
of randomness in a trial is seeded from the seed; results are bitwise equal for the same
number of torch threads.

A loop trial writes its run directory ``OUT/loop/seed_S`` (resumable, see ``docs/loop.md``); a
model-free trial writes nothing.
"""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hybridgym.agents.evaluation import evaluate
from hybridgym.agents.loop import ModelBasedLoop
from hybridgym.agents.sb3 import learning_curve, make_agent

if TYPE_CHECKING:
    from hybridgym.agents.compare import CompareConfig

#: trial fields that are measured times (they differ between identical runs)
TIMING_FIELDS = ("seconds_to_threshold", "wall_seconds", "total_seconds")


def loop_run_dir(out: str | os.PathLike[str], seed: int) -> pathlib.Path:
    """The run directory of the loop's trial on ``seed``: ``OUT/loop/seed_S``."""
    return pathlib.Path(out) / "loop" / f"seed_{seed}"


def run_trial(
    config: CompareConfig,
    out: str | os.PathLike[str],
    method: str,
    seed: int,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``method`` on ``seed`` with the budget and evaluation of ``config``.

    Args:
        config: the comparison's configuration.
        out: the comparison's output folder (a loop trial writes ``OUT/loop/seed_S``).
        method: one of ``config.methods``.
        seed: one of ``config.seed_values``.
        log: called with the loop's lines (None: silent).

    Returns:
        The trial's record (``results.json``'s ``trials[method][seed]``): ``curve``
        ([real steps, mean return] per evaluation), ``steps_to_threshold``,
        ``seconds_to_threshold``, ``final_real_steps``, ``final_return_mean``,
        ``final_return_std``, ``wall_seconds``, ``total_seconds``; the loop's also
        ``curve_std``, ``agent`` and ``run_dir`` (relative to ``out``).
    """
    if method not in config.methods or seed not in config.seed_values:
        raise ValueError(f"({method!r}, {seed}) is not a trial of this comparison")
    if method == "loop":
        return _loop_trial(config, pathlib.Path(out), seed, log)
    return _model_free_trial(config, method, seed)


def _loop_trial(
    config: CompareConfig, out: pathlib.Path, seed: int, log: Callable[[str], None] | None
) -> dict[str, Any]:
    loop_config = config.loop_config(seed)
    run_dir = loop_run_dir(out, seed)
    history = ModelBasedLoop(config.make_task(), loop_config, run_dir, log=log).run()
    threshold = config.resolved_threshold
    hit = next(
        (row for row in history if threshold is not None and row["eval_return_mean"] >= threshold),
        None,
    )
    last = history[-1]
    wall = float(last["wall_seconds"])
    evaluated = [row for row in history if math.isfinite(float(row["eval_return_mean"]))]
    return {
        "curve": [[int(row["real_steps"]), float(row["eval_return_mean"])] for row in evaluated],
        "curve_std": [float(row["eval_return_std"]) for row in evaluated],
        "steps_to_threshold": None if hit is None else int(hit["real_steps"]),
        "seconds_to_threshold": None if hit is None else float(hit["wall_seconds"]),
        "final_real_steps": int(last["real_steps"]),
        "final_return_mean": float(last["eval_return_mean"]),
        "final_return_std": float(last["eval_return_std"]),
        "wall_seconds": wall,
        "total_seconds": wall + sum(float(row["eval_seconds"]) for row in history),
        "agent": loop_config.agent,
        "run_dir": run_dir.relative_to(out).as_posix(),
    }


def _model_free_trial(config: CompareConfig, method: str, seed: int) -> dict[str, Any]:
    task = config.make_task()
    threshold = config.resolved_threshold
    start = time.perf_counter()
    agent = make_agent(method, task.make_real_env(), task=task, seed=seed, **config.model_free)
    curve = learning_curve(
        agent,
        task,
        config.budget,
        config.resolved_eval_every,
        episodes=config.eval_episodes,
        seed=config.eval_seed,
        target=threshold,
    )
    final = evaluate(agent, task, episodes=config.eval_episodes, seed=config.eval_seed)
    total = time.perf_counter() - start
    # the last point is the final agent's: SB3 trains once more after the last step's
    # evaluation (unless learning stopped at the threshold), or the budget ran out
    # between two evaluations
    points = [[int(s), float(r)] for s, r in curve.points]
    if points and points[-1][0] == agent.num_timesteps:
        points.pop()
    points.append([int(agent.num_timesteps), final.mean])
    hit = next((s for s, r in points if threshold is not None and r >= threshold), None)
    seconds = curve.seconds_to_target if hit == curve.steps_to_target else curve.train_seconds
    return {
        "curve": points,
        "steps_to_threshold": hit,
        "seconds_to_threshold": None if hit is None else seconds,
        "final_real_steps": int(agent.num_timesteps),
        "final_return_mean": final.mean,
        "final_return_std": final.std,
        "wall_seconds": curve.train_seconds,
        "total_seconds": total,
    }
