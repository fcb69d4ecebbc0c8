"""CartPoleSwingUp-v0: real interaction until the first solved episode, for the model-based
loop with the hybrid model, with the physics-only model, and for the planner with the perfect
model; plus the planner's milliseconds per action with the hybrid model.

The loop runs ``LoopConfig.for_task("cartpole_swingup")`` (1 s of random actions, two 2.5 s
learning trials, then 10 s episodes, refitting before each) one iteration at a time until an
episode it collected is solved (``task.is_solved``: the second half upright and centred) or
5 iterations (36 s) have passed. Real seconds count every collected step up to the end of the
solving episode. Target (issue 5): at most 17 s in 4 of 5 seeds; PILCO needed about 17.5 s.
Planning target: at most 50 ms per action on one CPU thread (the control interval).

The "default fit" variant is the hybrid loop with the task's fit recipe (``SMALL_DATA_FIT``)
replaced by ``FitConfig()``'s automatic defaults (``fit={}``); nothing else differs.

Usage: python loop_cartpole.py [SEEDS] [VARIANTS] (default 5 seeds; variants a comma-separated
       subset of: hybrid, default fit, physics only; default hybrid,physics only); writes
       benchmarks/results/loop_cartpole.json (loop_cartpole_VARIANTS.json for a subset)
       python loop_cartpole.py SEEDS planning   (only the planning speed, on a quiet machine)
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from hybridgym.agents import LoopConfig, ModelBasedLoop, MPCAgent
from hybridgym.envs import get_task
from hybridgym.models import HybridODE, TrajectoryDataset

from common import write

torch.set_num_threads(1)
TASK = get_task("cartpole_swingup")
MAX_ITERATIONS = 5
BUDGET_S = 17.0
VARIANTS = ("hybrid", "default fit", "physics only")


def first_solved_seconds(data: TrajectoryDataset) -> float | None:
    steps = 0
    for episode in data.episodes:
        steps += episode.num_steps
        if TASK.is_solved(episode.states):
            return steps * TASK.dt
    return None


def run_loop(seed: int, root: pathlib.Path, variant: str) -> dict[str, object]:
    overrides = {"seed": seed, "eval_episodes": 0}
    if variant == "physics only":
        overrides["residual"] = False
    elif variant == "default fit":
        overrides["fit"] = {}
    run_dir = root / f"{variant.replace(' ', '_')}_{seed}"
    start = time.perf_counter()
    for iterations in range(1, MAX_ITERATIONS + 1):
        config = LoopConfig.for_task(TASK, iterations=iterations, **overrides)
        loop = ModelBasedLoop(TASK, config, run_dir, log=None)
        loop.run()
        solved = first_solved_seconds(loop.data)
        if solved is not None:
            break
    return {
        "variant": variant,
        "seed": seed,
        "solved_after_s": solved,
        "real_s_used": loop.data.num_steps * TASK.dt,
        "iterations": iterations,
        "wall_s": time.perf_counter() - start,
        "model": loop.model,
    }


def ms_per_action(model, seed: int, decisions: int = 40) -> float:
    agent = MPCAgent(model, TASK, seed=seed, **LoopConfig.for_task(TASK).agent_kwargs)
    env = TASK.make_real_env()
    obs, _ = env.reset(seed=seed)
    times = []
    for _ in range(decisions):
        begin = time.perf_counter()
        action, _ = agent.predict(obs)
        times.append(time.perf_counter() - begin)
        obs, *_ = env.step(action)
    return 1000 * statistics.median(times[5:])


def perfect_model(seed: int) -> dict[str, object]:
    """The planner with the true dynamics (rk4, 4 substeps): one 10 s episode."""
    oracle = TASK.make_oracle()
    model = HybridODE(oracle.prior, None, dt=TASK.dt, method="rk4", substeps=4)
    agent = MPCAgent(model, TASK, seed=seed, **LoopConfig.for_task(TASK).agent_kwargs)
    data = TrajectoryDataset.collect(TASK.make_real_env(), TASK, agent, episodes=1, seed=seed)
    solved = TASK.is_solved(data.episodes[0].states)
    return {"variant": "perfect model", "seed": seed, "solved_after_s": 10.0 if solved else None}


def planning_only(seeds: range) -> None:
    """Milliseconds per action with the loop's first hybrid model (20 random steps), alone."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            config = LoopConfig.for_task(TASK, seed=seed, iterations=1, eval_episodes=0)
            loop = ModelBasedLoop(TASK, config, pathlib.Path(tmp) / str(seed), log=None)
            loop.run()
            times.append(ms_per_action(loop.model, seed))
    print(
        f"planner with the hybrid model: median {statistics.median(times):.1f} ms per action "
        f"(target 50; per seed {np.round(times, 1).tolist()})"
    )
    print("wrote", write("loop_cartpole_planning", {"ms_per_action": times}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[2] == "planning":
        planning_only(range(int(sys.argv[1])))
        return
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    variants = sys.argv[2].split(",") if len(sys.argv) > 2 else list(VARIANTS[::2])
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            for seed in seeds:
                rows.append(run_loop(seed, pathlib.Path(tmp), variant))
    planning = [
        ms_per_action(r.pop("model"), r["seed"]) for r in rows if r["variant"] != "physics only"
    ]
    for r in rows:
        r.pop("model", None)
    if len(sys.argv) <= 2:  # the perfect model's reference with the full set only
        rows += [perfect_model(seed) for seed in seeds]
    header = f"{'variant':14s} {'seed':>4s} {'solved after [s]':>16s} {'real s used':>11s}"
    print(header, f"{'wall s':>7s}")
    for r in rows:
        solved = r["solved_after_s"]
        print(
            f"{r['variant']:14s} {r['seed']:4d} {solved if solved else '-':>16} "
            f"{r.get('real_s_used', float('nan')):11.2f} {r.get('wall_s', float('nan')):7.1f}"
        )
    for variant in (*variants, "perfect model"):
        sel = [r for r in rows if r["variant"] == variant]
        if not sel:
            continue
        within = sum(1 for r in sel if r["solved_after_s"] and r["solved_after_s"] <= BUDGET_S)
        print(f"{variant}: solved within {BUDGET_S} s in {within} of {len(sel)} seeds")
    print(
        f"planner with the hybrid model: median {statistics.median(planning):.1f} ms per action "
        f"(target 50; per seed {np.round(planning, 1).tolist()})"
    )
    name = "loop_cartpole" if len(sys.argv) <= 2 else "loop_cartpole_" + "_".join(variants)
    print("wrote", write(name.replace(" ", "_"), {"rows": rows, "ms_per_action": planning}))


if __name__ == "__main__":
    main()
