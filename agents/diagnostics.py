"""Diagnostics of the model in a loop run directory: how far ahead it predicts, how its
trajectories and phase portrait compare with the real system's, and what its residual network
learned against the physics the prior misses.

:func:`diagnose` reads ``RUN/config.json``, the newest ``RUN/models/model_NNN.pt`` and the
dataset in ``RUN/data``, records a few held-out real episodes (uniformly random actions from
seeds the loop never uses), and writes PNGs plus ``diagnostics.json`` (the numbers behind
them).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hybridgym.envs import Task, get_task
from hybridgym.models import Ensemble, HybridODE, TrajectoryDataset, prediction_errors
from hybridgym.models.files import atomic_write_text, read_json_object
from hybridgym.models.hybrid import check_model_matches

#: seed of the first held-out episode: far from the loop's collection seeds (seed * 1_000_003
#: + 1_009 * episode) and evaluation seeds (1_000_000 + episode)
HELD_OUT_SEED = 314_159_265
#: the longest horizon of the k-step error curve (cut at the longest episode)
MAX_HORIZON = 50
#: fewest k-step windows behind a point of the error curve
MIN_WINDOWS = 10
#: state variables shown at most (one panel each)
MAX_PANELS = 6


@dataclass(frozen=True)
class LoopRun:
    """A loop run directory read back: its task, its newest model and its real data.

    Attributes:
        run_dir: the directory.
        task: the task it ran on (with the real env's keyword arguments).
        loop_config: the stored ``LoopConfig`` fields (plain JSON values).
        iteration: the iteration whose fit made ``model``.
        model_path: that model's file.
        model: the fitted HybridODE or Ensemble (on the CPU, in eval mode).
        data: every real episode the run recorded (the model was fitted to all of it).
    """

    run_dir: pathlib.Path
    task: Task
    loop_config: dict[str, Any]
    iteration: int
    model_path: pathlib.Path
    model: HybridODE | Ensemble
    data: TrajectoryDataset


def load_run(run_dir: str | os.PathLike[str]) -> LoopRun:
    """Read a run directory written by ``ModelBasedLoop`` (``hybridgym loop``).

    Raises:
        FileNotFoundError: no such directory, or it holds no ``config.json``, data or model yet.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a loop run directory (no config.json); make one with "
            "`hybridgym loop TASK --run-dir DIR`"
        )
    description = read_json_object(config_path)
    task = get_task(description["task"], **description.get("task_kwargs", {}))
    models = {}
    for path in (run_dir / "models").glob("model_*.pt"):
        match = re.fullmatch(r"model_(\d+)\.pt", path.name)
        if match:
            models[int(match.group(1))] = path
    if not models or not (run_dir / "data" / "dataset.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no fitted model yet (models/model_NNN.pt); let the loop finish "
            "its first iteration"
        )
    iteration = max(models)
    loop_config = description.get("loop", {})
    if int(loop_config.get("ensemble", 1)) > 1:
        model: HybridODE | Ensemble = Ensemble.load(models[iteration])
    else:
        model = HybridODE.load(models[iteration])
    check_model_matches(
        model, task.state_dim, task.action_dim, task.dt, models[iteration], task.name
    )
    data = TrajectoryDataset.load(run_dir / "data")
    return LoopRun(run_dir, task, loop_config, iteration, models[iteration], model.eval(), data)


def held_out_episodes(
    task: Task, episodes: int = 3, seed: int = HELD_OUT_SEED
) -> TrajectoryDataset:
    """``episodes`` full episodes of the real system under uniformly random actions, reset
    with seeds ``seed``, ``seed + 1``, ... (none of them data a loop was fitted to)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    env = task.make_real_env()
    try:
        return TrajectoryDataset.collect(env, task, None, episodes=episodes, seed=seed)
    finally:
        env.close()


def error_vs_horizon(
    model: HybridODE | Ensemble,
    data: TrajectoryDataset,
    max_horizon: int = MAX_HORIZON,
    min_windows: int = MIN_WINDOWS,
) -> tuple[list[int], dict[str, list[float]]]:
    """k-step open-loop prediction RMSE (``prediction_errors``) for k = 1 ... K: K is
    ``max_horizon``, or less where the episodes hold fewer than ``min_windows`` windows of
    k steps (at least k = 1 is kept).

    Returns:
        (horizons, state name -> RMSE per horizon, in the state's unit, angles wrapped).
    """
    lengths = np.array([episode.num_steps for episode in data.episodes])
    horizons = [
        k
        for k in range(1, max_horizon + 1)
        if k == 1 or np.maximum(lengths - k + 1, 0).sum() >= min_windows
    ]
    with torch.no_grad():
        errors = prediction_errors(model, data, horizons)
    return horizons, {name: [errors[h][name] for h in horizons] for name in data.state_names}


def _tensor(array: np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    """A writable copy of ``array`` in the model's precision, on the model's device."""
    like = next(iter(model.parameters()), torch.zeros(()))
    return torch.as_tensor(np.array(array), dtype=like.dtype).to(like.device)


def open_loop(model: Any, x0: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The model's states from ``x0`` (n) under ``actions`` (T x m), open loop: T+1 x n."""
    with torch.no_grad():
        states = model.rollout(_tensor(x0[None], model), _tensor(actions[None], model))
    return states[0].double().cpu().numpy()


def uncontrolled(
    task: Task, model: Any, x0: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The real system (its noise-free oracle) and the model from ``x0`` with the action held
    at zero (clipped into the action space) for ``steps`` steps: (truth, model), T+1 x n."""
    zero = task.clip_action(np.zeros((1, task.action_dim)))
    actions = np.repeat(zero, steps, axis=0)
    with torch.no_grad():
        oracle = task.make_oracle().double()
        x = torch.tensor(x0[None], dtype=torch.float64)
        truth = oracle.rollout(x, torch.as_tensor(actions[None], dtype=torch.float64))[0]
    return truth.numpy(), open_loop(model, x0, actions)


def phase_coordinates(states: np.ndarray, angle_dims: tuple[int, ...]) -> np.ndarray:
    """States for a phase portrait: angles wrapped to [-pi, pi), with a NaN row wherever an
    angle wraps (so a plotted line breaks there instead of crossing the plot), R x n."""
    if not angle_dims:
        return np.asarray(states, dtype=float)
    wrapped = np.array(states, dtype=float)
    wrapped[:, angle_dims] = (wrapped[:, angle_dims] + np.pi) % (2 * np.pi) - np.pi
    jumps = np.abs(np.diff(wrapped[:, angle_dims], axis=0)).max(1) > np.pi
    return np.insert(wrapped, np.flatnonzero(jumps) + 1, np.nan, axis=0)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _members(model: HybridODE | Ensemble) -> list[HybridODE]:
    return list(model.members) if isinstance(model, Ensemble) else [model]


def missing_physics_target(
    task: Task, model: HybridODE | Ensemble, states: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, str] | None:
    """What the residual should output at these transitions, given the fitted prior.

    For a system that is an ODE: the true vector field minus the model's prior at its fitted
    constants (``task.true_vector_field - prior``). For a discrete map (Pendulum-v1) and a
    model stepped with one explicit Euler step per interval: the field that Euler step would
    need, ``(true_step(x, u) - x) / dt``, minus the prior. None where neither applies.

    Args:
        states: B x n states the transitions start from.
        actions: B x m actions.

    Returns:
        (B x n target, ``"vector field"`` or ``"euler map"``), or None.
    """
    first = _members(model)[0]
    x64 = torch.as_tensor(states, dtype=torch.float64)
    u64 = torch.as_tensor(actions, dtype=torch.float64)
    try:
        truth, kind = task.true_vector_field(x64, u64), "vector field"
    except NotImplementedError:
        if first.method != "euler" or first.substeps != 1:
            return None
        truth, kind = (task.true_step(x64, u64) - x64) / first.dt, "euler map"
    with torch.no_grad():
        x, u = _tensor(states, model), _tensor(actions, model)
        prior = torch.stack([m.prior_field(x, u) for m in _members(model)]).mean(0)
    return truth.numpy() - prior.double().cpu().numpy(), kind


def learned_residual(
    model: HybridODE | Ensemble, states: np.ndarray, actions: np.ndarray
) -> np.ndarray:
    """The model's masked residual dx/dt at these transitions (ensemble: member mean), B x n."""
    with torch.no_grad():
        x, u = _tensor(states, model), _tensor(actions, model)
        out = torch.stack([m.residual_field(x, u) for m in _members(model)]).mean(0)
    return out.double().cpu().numpy()


def _transitions(data: TrajectoryDataset) -> tuple[np.ndarray, np.ndarray]:
    states = np.concatenate([episode.states[:-1] for episode in data.episodes])
    actions = np.concatenate([episode.actions for episode in data.episodes])
    return states, actions


def _agreement(learned: np.ndarray, target: np.ndarray, names: tuple[str, ...]) -> dict:
    out = {}
    for i, name in enumerate(names):
        a, b = learned[:, i], target[:, i]
        spread = float(b.std())
        corr = float(np.corrcoef(a, b)[0, 1]) if spread > 1e-12 and a.std() > 1e-12 else None
        out[name] = {
            "rmse": float(np.sqrt(np.mean((a - b) ** 2))),
            "target_std": spread,
            "correlation": corr,
        }
    return out


def diagnose(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    episodes: int = 3,
    seed: int = HELD_OUT_SEED,
    max_horizon: int = MAX_HORIZON,
) -> dict[str, Any]:
    """Write the model diagnostics of a loop run directory.

    PNGs (into ``out``, default ``RUN/plots``): ``prediction_error.png`` (k-step RMSE against
    k, held-out and training data), ``prediction_episode.png`` (model open loop against the
    first held-out episode, one panel per state), ``phase_portrait.png`` (two-state systems:
    the held-out episode and the uncontrolled system, real against model) and
    ``residual_vs_truth.png`` (the learned residual against :func:`missing_physics_target`,
    where the task allows it); and ``diagnostics.json`` with the numbers.

    Args:
        run_dir: a run directory of ``ModelBasedLoop``.
        out: the output folder.
        episodes: held-out real episodes (random actions) to measure on.
        seed: seed of the first held-out episode.
        max_horizon: the k-step error curve's longest horizon.

    Returns:
        The content of ``diagnostics.json`` (``plots`` lists the PNG paths).
    """
    from hybridgym.agents import plots

    if isinstance(max_horizon, bool) or not isinstance(max_horizon, int) or max_horizon < 1:
        raise ValueError(f"max_horizon must be an int >= 1, got {max_horizon!r}")
    run = load_run(run_dir)
    out = pathlib.Path(out) if out is not None else run.run_dir / "plots"
    task = run.task
    held_out = held_out_episodes(task, episodes, seed)
    horizons, held_errors = error_vs_horizon(run.model, held_out, max_horizon)
    train_horizons, train_errors = error_vs_horizon(run.model, run.data, max_horizon)
    shown = _shown(task)
    paths = [
        plots.plot_prediction_errors(
            {
                f"held-out real episodes ({episodes}, random actions)": (horizons, held_errors),
                f"training data ({_count(len(run.data), 'episode')}, in sample)": (
                    train_horizons,
                    train_errors,
                ),
            },
            [task.state_names[i] for i in shown],
            out / "prediction_error.png",
            dt=task.dt,
            time_unit=task.time_unit,
            title=f"{task.name}: k-step prediction error of {run.model_path.name}",
        )
    ]
    paths += _trajectory_plots(run, held_out.episodes[0], out)
    residual, residual_plots = _residual_plots(run, held_out, out)
    paths += residual_plots
    report = {
        "run_dir": str(run.run_dir),
        "task": task.name,
        "iteration": run.iteration,
        "model": str(run.model_path),
        "held_out": {
            "episodes": episodes,
            "seed": seed,
            "steps": held_out.num_steps,
            "actions": "uniformly random",
        },
        "prediction_error": {
            "unit": "RMSE in each state's unit (angles wrapped)",
            "horizons": horizons,
            "held_out": held_errors,
            "training_horizons": train_horizons,
            "training": train_errors,
        },
        "residual": residual,
        "plots": [str(p) for p in paths],
        "json": str(out / "diagnostics.json"),
    }
    atomic_write_text(out / "diagnostics.json", json.dumps(report, indent=2) + "\n")
    return report


def _shown(task: Task) -> list[int]:
    return list(range(min(task.state_dim, MAX_PANELS)))


def _trajectory_plots(run: LoopRun, episode: Any, out: pathlib.Path) -> list[pathlib.Path]:
    """The model's open-loop prediction of ``episode`` and, for two-state systems, the phase
    portraits."""
    from hybridgym.agents import plots

    task, model, shown = run.task, run.model, _shown(run.task)
    predicted = open_loop(model, episode.states[0], episode.actions)
    paths = [
        plots.plot_prediction(
            episode.times,
            episode.states[:, shown],
            {"model, open loop from the first state": predicted[:, shown]},
            [task.state_names[i] for i in shown],
            out / "prediction_episode.png",
            title=f"{task.name}: held-out real episode (random actions) against "
            f"{run.model_path.name}",
            time_unit=task.time_unit,
        )
    ]
    if task.state_dim == 2:
        steps = 2 * episode.num_steps
        truth, free = uncontrolled(task, model, episode.states[0], steps)
        panels = {
            "held-out episode (random actions)": (episode.states, predicted),
            f"uncontrolled, {steps} steps": (truth, free),
        }
        paths.append(
            plots.plot_phase_comparison(
                {
                    label: tuple(phase_coordinates(x, task.angle_dims) for x in pair)
                    for label, pair in panels.items()
                },
                task.state_names,
                out / "phase_portrait.png",
                title=f"{task.name}: phase portrait, real system against {run.model_path.name}",
            )
        )
    return paths


def _residual_plots(
    run: LoopRun, held_out: TrajectoryDataset, out: pathlib.Path
) -> tuple[dict[str, Any], list[pathlib.Path]]:
    """The learned residual against the missing physics: the agreement per state derivative
    (held-out and training transitions) and the plot, or the reason there is none."""
    from hybridgym.agents import plots

    task, model, shown, names = run.task, run.model, _shown(run.task), run.task.state_names
    states, actions = _transitions(held_out)
    target = missing_physics_target(task, model, states, actions)
    if all(m.residual is None for m in _members(model)):
        return {"kind": None, "reason": "the model has no residual network"}, []
    if target is None:
        reason = f"task {task.name!r} states no vector field for this integrator"
        return {"kind": None, "reason": reason}, []
    target_values, kind = target
    learned = learned_residual(model, states, actions)
    train_states, train_actions = _transitions(run.data)
    train_target, _ = missing_physics_target(task, model, train_states, train_actions)
    train_learned = learned_residual(model, train_states, train_actions)
    report = {
        "kind": kind,
        "held_out": _agreement(learned, target_values, names),
        "training": _agreement(train_learned, train_target, names),
    }
    episode = held_out.episodes[0]
    steps = episode.num_steps
    truth = "truth" if kind == "vector field" else "Euler field of true map"
    path = plots.plot_residual_vs_truth(
        episode.times[:-1],
        learned[:steps, shown],
        target_values[:steps, shown],
        {
            "held-out episodes": (target_values[:, shown], learned[:, shown]),
            "training data": (train_target[:, shown], train_learned[:, shown]),
        },
        [names[i] for i in shown],
        out / "residual_vs_truth.png",
        title=f"{task.name}: learned residual against the missing physics ({truth} - fitted prior)",
        time_unit=task.time_unit,
    )
    return report, [path]
