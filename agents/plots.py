"""Plots of episodes on a task (PNG files, matplotlib's Agg backend)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from hybridgym.agents.evaluation import Episode
from hybridgym.envs import DataCenterTask, LotkaVolterraTask, Task

MAX_PANELS = 6


def _save(fig: plt.Figure, path: str | pathlib.Path) -> pathlib.Path:
    """Write the figure to a temporary name beside ``path`` and rename it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except OSError as err:  # a full disk names no file by itself
        reason = err.strerror or str(err)
        raise type(err)(
            err.errno, f"cannot write {path}: {reason} (the file was left as it was)"
        ) from err
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _state_panels(task: Task) -> list[tuple[str, list[int]]]:
    """(title, state indices) of each panel; zones of a data center share a panel."""
    if isinstance(task, DataCenterTask):
        n = task.num_zones
        return [("inlet temperature [C]", list(range(n))), ("IT load [kW]", list(range(n, 2 * n)))]
    return [(name, [i]) for i, name in enumerate(task.state_names[:MAX_PANELS])]


def plot_episodes(
    task: Task, episodes: Mapping[str, Episode], path: str | pathlib.Path, title: str = ""
) -> pathlib.Path:
    """States and actions over time of several labelled episodes, one panel per variable.

    Returns the path of the PNG written.
    """
    panels = _state_panels(task)
    rows = len(panels) + 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 1.9 * rows + 0.6), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, episode) in enumerate(episodes.items()):
        colour = colours[k % len(colours)]
        t = np.arange(len(episode.states)) * task.dt
        for ax, (name, idx) in zip(axes[:-1, 0], panels, strict=False):
            values = episode.states[:, idx]
            if len(idx) == 1:
                ax.plot(t, values[:, 0], color=colour, label=label)
            else:  # many zones: the mean and the min-max band
                ax.plot(t, values.mean(1), color=colour, label=f"{label} (mean)")
                ax.fill_between(t, values.min(1), values.max(1), color=colour, alpha=0.2)
            ax.set_ylabel(name)
        ax_u = axes[-1, 0]
        u = episode.actions
        if u.shape[1] == 1:
            ax_u.step(t[:-1], u[:, 0], where="post", color=colour, label=label)
        else:
            ax_u.step(t[:-1], u.mean(1), where="post", color=colour, label=f"{label} (mean)")
        ax_u.set_ylabel("action" if u.shape[1] == 1 else "mean action")
    if isinstance(task, DataCenterTask):
        axes[0, 0].axhline(27.0, color="red", linestyle="--", linewidth=1, label="27 C limit")
    axes[-1, 0].set_xlabel(f"time [{task.time_unit}]")
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle(title or task.real_env_id)
    return _save(fig, path)


def plot_phase_portrait(
    task: LotkaVolterraTask,
    episodes: Mapping[str, Episode],
    path: str | pathlib.Path,
) -> pathlib.Path:
    """Prey against predators for Lotka-Volterra episodes, with the target marked."""
    from hybridgym.envs.systems.lotka_volterra import TARGET

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, episode in episodes.items():
        ax.plot(episode.states[:, 0], episode.states[:, 1], label=label, linewidth=1.2)
        ax.plot(*episode.states[0, :2], "o", color=ax.lines[-1].get_color())
    ax.plot(*TARGET, "k*", markersize=12, label="target")
    ax.set_xlabel("prey")
    ax.set_ylabel("predators")
    ax.set_title("Lotka-Volterra phase portrait")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_prediction(
    times: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    state_names: tuple[str, ...] | list[str],
    path: str | pathlib.Path,
    *,
    observed: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    time_unit: str = "time units",
) -> pathlib.Path:
    """Model predictions against the truth, one panel per state.

    Args:
        times: T, the time of each row of ``truth`` and of each prediction.
        truth: T x n true states.
        predictions: label -> T x n predicted states.
        state_names: n names.
        observed: optional (times, states) of the data the model was fitted to (dots).
    """
    n = truth.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n + 0.6), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(times, truth[:, i], color="black", linewidth=2, label="truth")
        for label, pred in predictions.items():
            ax.plot(times, pred[:, i], linestyle="--", linewidth=1.5, label=label)
        if observed is not None:
            ax.plot(
                observed[0],
                observed[1][:, i],
                "o",
                color="grey",
                markersize=4,
                label="training data",
            )
        ax.set_ylabel(state_names[i])
    axes[-1, 0].set_xlabel(f"time [{time_unit}]")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def plot_loop_metrics(
    rows: list[Mapping[str, float]],
    directory: str | pathlib.Path,
    task: Task,
    baselines: Mapping[str, list[tuple[float, float]]] | None = None,
) -> list[pathlib.Path]:
    """The model-based loop's curves: evaluation return against real steps (with the task's
    solved threshold and optional other curves, label -> [(real steps, return)]) and the
    model's prediction error on new data against real steps. Writes two PNGs."""
    directory = pathlib.Path(directory)
    steps = np.array([row["real_steps"] for row in rows], dtype=float)
    mean = np.array([row["eval_return_mean"] for row in rows], dtype=float)
    std = np.array([row["eval_return_std"] for row in rows], dtype=float)
    evaluated = np.isfinite(mean)  # iterations without an evaluation (eval_every) have NaN
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps[evaluated], mean[evaluated], "o-", label="model-based loop")
    low, high = (mean - std)[evaluated], (mean + std)[evaluated]
    ax.fill_between(steps[evaluated], low, high, alpha=0.2)
    for label, curve in (baselines or {}).items():
        if curve:
            xs, ys = zip(*curve, strict=True)
            ax.plot(xs, ys, ".-", label=label)
    if task.return_threshold is not None:
        ax.axhline(task.return_threshold, color="k", ls="--", lw=1, label="solved")
    ax.set_xlabel("real steps")
    ax.set_ylabel("evaluation return (real system)")
    ax.set_title(f"{task.name}: return vs real interaction")
    if baselines:
        ax.set_xscale("log")
    ax.legend()
    paths = [_save(fig, directory / "return_vs_real_steps.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [row["model_error"] for row in rows], "o-")
    ax.set_xlabel("real steps")
    ax.set_ylabel("k-step prediction error on new data (per state spread)")
    ax.set_title(f"{task.name}: model error before each refit")
    paths.append(_save(fig, directory / "model_error.png"))
    return paths


def plot_return_vs_real_steps(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    path: str | pathlib.Path,
    *,
    threshold: float | None = None,
    title: str = "",
    subtitle: str = "",
    eval_episodes: int | None = None,
) -> pathlib.Path:
    """Evaluation return against real-system steps of several methods, each over seeds.

    Args:
        curves: label -> (steps, median, low, high), each of shape S (e.g. from
            ``hybridgym.agents.compare.aggregate_curves``): a line through the medians, a band
            (and bars, visible at a single point too) from low to high.
        threshold: drawn as a dashed line where given.
        eval_episodes: the evaluation episodes behind each return (for the axis label).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, (steps, median, low, high) in curves.items():
        (line,) = ax.plot(steps, median, "o-", markersize=4, label=label)
        colour = line.get_color()
        ax.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.vlines(steps, low, high, color=colour, alpha=0.6, linewidth=1)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xscale("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    spans_a_decade = any(len(c[0]) and c[0].max() >= 10 * c[0].min() for c in curves.values())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter() if spans_a_decade else plain)
    ax.set_xlabel("real-system steps (transitions, log scale)")
    episodes = "" if not eval_episodes else f"mean of {eval_episodes} "
    plural = "" if eval_episodes == 1 else "s"
    ax.set_ylabel(f"return ({episodes}evaluation episode{plural})")
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_prediction_errors(
    errors: Mapping[str, tuple[list[int], Mapping[str, list[float]]]],
    state_names: list[str] | tuple[str, ...],
    path: str | pathlib.Path,
    *,
    dt: float,
    time_unit: str = "time units",
    title: str = "",
) -> pathlib.Path:
    """k-step prediction RMSE against the horizon k, one panel per state (log scale).

    Args:
        errors: label (e.g. which data) -> (horizons, state name -> RMSE per horizon).
        state_names: the states to show, one panel each.
        dt: the control interval (the top axis shows the horizon in time).
    """
    n = len(state_names)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.3 * n + 0.8), sharex=True, squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, name in zip(axes[:, 0], state_names, strict=True):
        for k, (label, (horizons, by_state)) in enumerate(errors.items()):
            ax.plot(horizons, by_state[name], styles[k % len(styles)], label=label)
        ax.set_yscale("log")
        ax.set_ylabel(f"RMSE of {name}")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1, 0].set_xlabel(f"horizon k (steps of {dt:g} {time_unit})")
    top = axes[0, 0].secondary_xaxis("top", functions=(lambda k: k * dt, lambda t: t / dt))
    top.set_xlabel(f"horizon [{time_unit}]")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_phase_comparison(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    state_names: list[str] | tuple[str, ...],
    path: str | pathlib.Path,
    *,
    title: str = "",
) -> pathlib.Path:
    """Phase portraits of a two-state system, the real trajectory against the model's.

    Args:
        panels: panel title -> (real states, model states), each T x 2 (a circle marks the
            start).
        state_names: the two state names (x and y axes).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8), squeeze=False)
    for ax, (label, (real, model)) in zip(axes[0], panels.items(), strict=True):
        ax.plot(real[:, 0], real[:, 1], color="black", linewidth=1.6, label="real system")
        ax.plot(model[:, 0], model[:, 1], "--", color="tab:red", linewidth=1.4, label="model")
        ax.plot(*real[0, :2], "o", color="tab:blue", label="start")
        ax.set_xlabel(state_names[0])
        ax.set_ylabel(state_names[1])
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_residual_vs_truth(
    times: np.ndarray,
    learned: np.ndarray,
    target: np.ndarray,
    scatter: Mapping[str, tuple[np.ndarray, np.ndarray]],
    state_names: list[str] | tuple[str, ...],
    path: str | pathlib.Path,
    *,
    title: str = "",
    time_unit: str = "time units",
) -> pathlib.Path:
    """The learned residual against the true missing term, one row per state derivative:
    along one trajectory (left) and scattered against each other (right, with y = x).

    Args:
        times: T, the time of each row of ``learned`` and ``target``.
        learned, target: T x n residual dx/dt along the trajectory.
        scatter: label -> (target, learned), each N x n, for the right column.
        state_names: n names.
    """
    n = len(state_names)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n + 0.8), squeeze=False)
    for i, name in enumerate(state_names):
        ax = axes[i, 0]
        ax.plot(times, target[:, i], color="black", linewidth=1.6, label="true missing term")
        ax.plot(times, learned[:, i], "--", color="tab:red", linewidth=1.4, label="learned")
        ax.set_ylabel(f"d{name}/dt residual")
        ax = axes[i, 1]
        for label, (x, y) in scatter.items():
            ax.plot(x[:, i], y[:, i], ".", markersize=3, alpha=0.5, label=label)
        both = np.concatenate([np.concatenate([x[:, i], y[:, i]]) for x, y in scatter.values()])
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], "k-", linewidth=0.8, label="y = x")
        ax.set_xlabel(f"true missing term, d{name}/dt")
        ax.set_ylabel("learned residual")
    axes[-1, 0].set_xlabel(f"time [{time_unit}] (first held-out episode)")
    axes[0, 0].legend(fontsize=8, loc="best")
    axes[0, 1].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
