"""Trajectories of a real system: validated episodes, a dataset, CSV and an append-only store.

An :class:`Episode` holds ``T + 1`` states, the ``T`` actions between them, optional rewards and
the time of each state. A :class:`TrajectoryDataset` is a sequence of episodes with named state
and action variables; every episode is checked on entry (shapes, numbers, finiteness, strictly
increasing times) and any error names the episode and the field.

Datasets are built from arrays (:meth:`TrajectoryDataset.from_arrays`), from a Gymnasium env
(:meth:`TrajectoryDataset.collect`), from CSV (:meth:`TrajectoryDataset.from_csv`) or from Minari
(:meth:`TrajectoryDataset.from_minari`, optional dependency). On disk a dataset is a directory
(:meth:`TrajectoryDataset.save`, :meth:`TrajectoryDataset.load`)::

    dataset.json                  {"format": "hybridgym.TrajectoryDataset", "version": 1,
                                   "state_names": [...], "action_names": [...], "dt": 0.05,
                                   "angle_dims": [0]}
    episodes/episode_000000.npz   states (T+1 x n), actions (T x m), times (T+1),
    episodes/episode_000001.npz   rewards (T) where the episode has them, and
    ...                           terminated (a 0-d bool) where the episode ended by
                                  termination (files without it: False)

The store is append-only: :meth:`TrajectoryDataset.append` writes exactly one new episode file.
Every file is written to a temporary name in the same folder, flushed to disk and renamed into
place, so a crash leaves either the whole file or none (plus a ``*.tmp`` file that
:meth:`TrajectoryDataset.load` ignores).

This module knows no task: :meth:`TrajectoryDataset.collect` takes any object with the
attributes of :class:`TaskLike` (``hybridgym.envs.Task`` has them).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hybridgym.models.arrays import unwrap_angles
from hybridgym.models.files import LOCK_NAME, DirectoryLock, atomic_write_bytes, read_json_object

FORMAT = "hybridgym.TrajectoryDataset"
VERSION = 1
_META_MARK = f"# {FORMAT} "
_EPISODE_FILE = re.compile(r"episode_(\d{6})\.npz")
_EPISODE_KEYS = {"states", "actions", "times", "rewards", "terminated"}


class TaskLike(Protocol):
    """What :meth:`TrajectoryDataset.collect` needs to know about a task.

    ``hybridgym.envs.Task`` satisfies it; so does any object with these attributes.
    """

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the n state variables."""
        ...

    @property
    def action_names(self) -> tuple[str, ...]:
        """Names of the m action variables."""
        ...

    @property
    def angle_dims(self) -> tuple[int, ...]:
        """State dimensions that are angles (unwrapped over time by ``collect``)."""
        ...

    @property
    def dt(self) -> float:
        """Control interval of the real env."""
        ...

    def obs_to_state(self, obs: np.ndarray) -> np.ndarray:
        """Observations, B x obs_dim, to states, B x n, with angles wrapped to [-pi, pi)."""
        ...


class _Policy(Protocol):
    def predict(self, observation: Any, deterministic: bool = ...) -> tuple[Any, Any]: ...


# --- validation --------------------------------------------------------------------------------
def _as_numbers(value: Any, label: str, field: str) -> np.ndarray:
    """``value`` as a float64 array (no copy when it already is one), or a clear error."""
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested sequences
        raise ValueError(
            f"{label}: {field} is not a rectangular array ({error}); rows of different lengths "
            "cannot form one array: give every row the same number of values"
        ) from None
    except Exception as error:  # e.g. a torch tensor that requires grad
        raise TypeError(
            f"{label}: {field} could not be read as a numpy array "
            f"({type(error).__name__}: {error}); pass a numpy array of numbers"
        ) from None
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"{label}: {field} must hold real numbers (int or float), got dtype "
            f"{array.dtype} from {type(value).__name__}; convert it with np.asarray(..., float)"
        )
    return array.astype(np.float64, copy=False)


def _check_finite(array: np.ndarray, label: str, field: str, columns: Sequence[str]) -> None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    value = float(array[where])
    kind = "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    at = f"step {where[0]}" if field != "times" else f"index {where[0]}"
    if len(where) == 2:
        column = columns[where[1]] if where[1] < len(columns) else where[1]
        at += f", column {column!r}"
    raise ValueError(f"{label}: {field} has {kind} at {at}; every value must be finite")


def _validated_arrays(
    states: Any,
    actions: Any,
    rewards: Any,
    times: Any,
    *,
    label: str,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Check one episode's arrays; return them as float64 (states, actions, rewards, times).

    Raises:
        TypeError: a field does not hold real numbers.
        ValueError: anything else: shapes, dimensions, length, finiteness, time order.
    """
    x = _as_numbers(states, label, "states")
    u = _as_numbers(actions, label, "actions")
    if x.ndim != 2:
        raise ValueError(
            f"{label}: states must be a 2-D array (T+1 x n), got shape {x.shape}; "
            "for one state variable use states.reshape(-1, 1)"
        )
    if u.ndim != 2:
        raise ValueError(
            f"{label}: actions must be a 2-D array (T x m), got shape {u.shape}; "
            "for one action variable use actions.reshape(-1, 1)"
        )
    steps = u.shape[0]
    if steps == 0:
        raise ValueError(
            f"{label}: actions has 0 rows (states has {x.shape[0]}); an episode needs at least "
            "one transition: T+1 >= 2 states and T >= 1 actions"
        )
    if x.shape[0] != steps + 1:
        raise ValueError(
            f"{label}: actions has {steps} rows but states has {x.shape[0]}; expected states to "
            "have one row more than actions (T+1 states for T actions)"
        )
    for field, array, names in (("states", x, state_names), ("actions", u, action_names)):
        if names is not None and array.shape[1] != len(names):
            raise ValueError(
                f"{label}: {field} has {array.shape[1]} columns but the dataset names "
                f"{len(names)} variables {tuple(names)}; give one column per name"
            )
    if x.shape[1] == 0:
        raise ValueError(f"{label}: states has 0 columns; a system needs at least one state")
    _check_finite(x, label, "states", state_names or ())
    _check_finite(u, label, "actions", action_names or ())
    r = None
    if rewards is not None:
        r = _as_numbers(rewards, label, "rewards")
        if r.shape != (steps,):
            raise ValueError(
                f"{label}: rewards must have shape ({steps},), one per action, got {r.shape}"
            )
        _check_finite(r, label, "rewards", ())
    t = _as_numbers(times, label, "times")
    if t.shape != (steps + 1,):
        raise ValueError(
            f"{label}: times must have shape ({steps + 1},), one per state, got {t.shape}"
        )
    _check_finite(t, label, "times", ())
    with np.errstate(over="ignore"):  # -1e308 -> 1e308 is an increase, its gap overflows
        gaps = np.diff(t)
    if not (gaps > 0).all():
        k = int(np.argmax(gaps <= 0)) + 1
        raise ValueError(
            f"{label}: times must be strictly increasing; times[{k}]={float(t[k])!r} <= "
            f"times[{k - 1}]={float(t[k - 1])!r}"
        )
    return x, u, r, t


def _check_terminated(value: Any, label: str) -> bool:
    """``value`` as a bool (Python or numpy bool, or a 0-d bool/0/1 array), or a TypeError."""
    array = np.asarray(value)
    flag = array.dtype == bool or (array.dtype.kind in "iu" and bool(np.isin(array, (0, 1)).all()))
    if array.shape == () and flag:
        return bool(array)
    raise TypeError(
        f"{label}: terminated must be True or False (did the episode end by termination rather "
        f"than a time limit), got {value!r}"
    )


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    copy = np.array(array, dtype=np.float64, copy=True)
    copy.setflags(write=False)
    return copy


def _check_dt(dt: Any) -> float | None:
    if dt is None:
        return None
    if isinstance(dt, bool) or not isinstance(dt, int | float | np.integer | np.floating):
        raise TypeError(f"dt must be a number > 0 or None, got {type(dt).__name__} {dt!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt (the control interval) must be finite and > 0, got {dt!r}")
    return float(dt)


def _default_times(steps: int, dt: float | None, label: str, t0: float = 0.0) -> np.ndarray:
    if dt is None:
        raise ValueError(
            f"{label}: has no times and no dt is set; pass times (T+1 values) or dt "
            "(the control interval, then times = t0 + dt * arange(T+1))"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        times = t0 + dt * np.arange(steps + 1, dtype=np.float64)
    if not np.isfinite(times).all():
        raise ValueError(
            f"{label}: dt={dt!r} and t0={t0!r} give times that are not finite over {steps} "
            "steps (t0 + dt * arange(T+1)); pass a smaller dt or t0, or times"
        )
    return times


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    return int(seed)


def _num_rows(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _check_names(names: Any, field: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"{field} must be a sequence of strings, got {names!r}")
    names = tuple(names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{field} must hold strings, got {type(name).__name__} {name!r}")
        if not name.strip():
            raise ValueError(f"{field} must be non-empty strings, got {names!r}")
        if name != name.strip():  # a CSV header is read with its cells stripped
            raise ValueError(
                f"{field} must not start or end with whitespace (CSV headers are read "
                f"stripped), got {name!r}"
            )
        if not name.isprintable():  # line breaks, tabs, control characters
            raise ValueError(
                f"{field} must be printable on one line (they are CSV headers), got {name!r}"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{field} must be unique; {duplicates} appear more than once")
    return names


def _check_angle_dims(angle_dims: Any, state_dim: int) -> tuple[int, ...]:
    if isinstance(angle_dims, str) or not isinstance(angle_dims, Iterable):
        raise TypeError(f"angle_dims must be a sequence of ints, got {angle_dims!r}")
    dims = tuple(angle_dims)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int | np.integer):
            raise TypeError(f"angle_dims must hold ints, got {type(d).__name__} {d!r}")
        if not 0 <= d < state_dim:
            raise ValueError(
                f"angle_dims holds {d}, outside the {state_dim} state dimensions "
                f"(valid: 0..{state_dim - 1})"
            )
    if len(set(dims)) != len(dims):
        raise ValueError(f"angle_dims must not repeat a dimension, got {dims}")
    return tuple(sorted(int(d) for d in dims))


# --- episodes ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Episode:
    """One trajectory: T+1 states, the T actions between them, rewards and times.

    Construction validates and copies: all arrays are stored as read-only float64.

    Attributes:
        states: T+1 x n; ``states[k]`` at ``times[k]``.
        actions: T x m; ``actions[k]`` held from ``times[k]`` to ``times[k + 1]``.
        rewards: shape (T,) for the transition k -> k+1, or None.
        times: shape (T+1,), strictly increasing.
        terminated: the episode ended by termination (its last state is terminal: the env
            said ``terminated``), not by a time limit, a step budget or the end of a log.
            Default False.

    Raises:
        TypeError: a field does not hold real numbers.
        ValueError: shapes disagree, T = 0, a value is not finite or times do not increase.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None
    times: np.ndarray
    terminated: bool = False

    def __post_init__(self) -> None:
        x, u, r, t = _validated_arrays(
            self.states, self.actions, self.rewards, self.times, label="episode"
        )
        object.__setattr__(self, "terminated", _check_terminated(self.terminated, "episode"))
        object.__setattr__(self, "states", _frozen_copy(x))
        object.__setattr__(self, "actions", _frozen_copy(u))
        object.__setattr__(self, "rewards", None if r is None else _frozen_copy(r))
        object.__setattr__(self, "times", _frozen_copy(t))

    @classmethod
    def from_arrays(
        cls,
        states: Any,
        actions: Any,
        rewards: Any = None,
        times: Any = None,
        *,
        dt: float | None = None,
        t0: float = 0.0,
        terminated: bool = False,
    ) -> Episode:
        """Build an episode; without ``times`` they are ``t0 + dt * arange(T+1)``.

        Args:
            states: T+1 x n.
            actions: T x m.
            rewards: shape (T,), or None.
            times: shape (T+1,), or None (then ``dt`` is required).
            dt: the control interval, used only when ``times`` is None.
            t0: the time of the first state, used only when ``times`` is None.
            terminated: the episode ended by termination (see the class).
        """
        if times is None:
            times = _default_times(_num_rows(actions), _check_dt(dt), "episode", t0)
        return cls(states, actions, rewards, times, terminated)

    @property
    def num_steps(self) -> int:
        """T, the number of transitions."""
        return int(self.actions.shape[0])

    @property
    def state_dim(self) -> int:
        """n, the number of state variables."""
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        """m, the number of action variables."""
        return int(self.actions.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Episode):
            return NotImplemented
        if (self.rewards is None) != (other.rewards is None):
            return False
        return (
            self.terminated == other.terminated
            and np.array_equal(self.states, other.states)
            and np.array_equal(self.actions, other.actions)
            and np.array_equal(self.times, other.times)
            and (self.rewards is None or np.array_equal(self.rewards, other.rewards))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Episode(num_steps={self.num_steps}, state_dim={self.state_dim}, "
            f"action_dim={self.action_dim}, rewards={self.rewards is not None}, "
            f"t=[{self.times[0]:.6g}, {self.times[-1]:.6g}]"
            + (", terminated=True)" if self.terminated else ")")
        )


# --- atomic files --------------------------------------------------------------------------------
def _episode_bytes(episode: Episode) -> bytes:
    arrays = {"states": episode.states, "actions": episode.actions, "times": episode.times}
    if episode.rewards is not None:
        arrays["rewards"] = episode.rewards
    if episode.terminated:  # absent means False: stores without terminations read as before
        arrays["terminated"] = np.array(True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _episode_path(directory: Path, index: int) -> Path:
    return directory / "episodes" / f"episode_{index:06d}.npz"


# --- the dataset ---------------------------------------------------------------------------------
class TrajectoryDataset:
    """Episodes of one system with named state and action variables.

    Args:
        episodes: :class:`Episode` objects; each is checked against the names on entry.
        state_names: names of the n state variables (unique, non-empty).
        action_names: names of the m action variables (unique, non-empty, distinct from the
            state names; may be empty for a system without inputs).
        dt: the nominal control interval (> 0), used to make times for episodes that come
            without them; None where every episode brings its own times.
        angle_dims: state dimensions that are angles (stored unwrapped, continuous in time).

    Raises:
        TypeError, ValueError: bad names, dt, angle_dims or episodes; the message names the
            episode and the field.
    """

    def __init__(
        self,
        episodes: Iterable[Episode] = (),
        *,
        state_names: Sequence[str],
        action_names: Sequence[str],
        dt: float | None = None,
        angle_dims: Sequence[int] = (),
    ) -> None:
        self._state_names = _check_names(state_names, "state_names")
        self._action_names = _check_names(action_names, "action_names")
        if not self._state_names:
            raise ValueError("state_names is empty; a system needs at least one state variable")
        shared = sorted(set(self._state_names) & set(self._action_names))
        if shared:
            raise ValueError(f"{shared} appear in both state_names and action_names; rename one")
        self._dt = _check_dt(dt)
        self._angle_dims = _check_angle_dims(angle_dims, len(self._state_names))
        self._directory: Path | None = None
        if isinstance(episodes, Episode):
            raise TypeError("episodes must be a sequence of Episode; wrap one episode in a list")
        self._episodes: tuple[Episode, ...] = ()
        self._episodes = tuple(
            self._checked(episode, index) for index, episode in enumerate(episodes)
        )

    # --- description ---------------------------------------------------------------------------
    @property
    def episodes(self) -> tuple[Episode, ...]:
        """All episodes, in order."""
        return self._episodes

    @property
    def num_steps(self) -> int:
        """Total number of transitions over all episodes."""
        return sum(episode.num_steps for episode in self._episodes)

    @property
    def state_dim(self) -> int:
        return len(self._state_names)

    @property
    def action_dim(self) -> int:
        return len(self._action_names)

    @property
    def state_names(self) -> tuple[str, ...]:
        return self._state_names

    @property
    def action_names(self) -> tuple[str, ...]:
        return self._action_names

    @property
    def angle_dims(self) -> tuple[int, ...]:
        return self._angle_dims

    @property
    def dt(self) -> float | None:
        """The nominal control interval, or None."""
        return self._dt

    @property
    def directory(self) -> Path | None:
        """The store this dataset appends to, or None when it lives in memory only."""
        return self._directory

    def __len__(self) -> int:
        return len(self._episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self._episodes)

    def __getitem__(self, index: int) -> Episode:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(
                f"dataset indices must be ints, got {type(index).__name__}; "
                "use subset(indices) for several episodes"
            )
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} out of range for a dataset of {len(self)}")
        return self._episodes[index]

    def __eq__(self, other: object) -> bool:
        """Same names, dt, angle dims and episodes (the directory does not count)."""
        if not isinstance(other, TrajectoryDataset):
            return NotImplemented
        return self._spec() == other._spec() and self._episodes == other._episodes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TrajectoryDataset(episodes={len(self)}, num_steps={self.num_steps}, "
            f"state_names={self._state_names}, action_names={self._action_names}, "
            f"dt={self._dt}, angle_dims={self._angle_dims}, directory={self._directory})"
        )

    # --- arrays --------------------------------------------------------------------------------
    def states(self) -> np.ndarray:
        """All states, concatenated over episodes: sum(T+1) x n."""
        parts = [episode.states for episode in self._episodes]
        return np.concatenate(parts) if parts else np.zeros((0, self.state_dim))

    def actions(self) -> np.ndarray:
        """All actions, concatenated over episodes: sum(T) x m."""
        parts = [episode.actions for episode in self._episodes]
        return np.concatenate(parts) if parts else np.zeros((0, self.action_dim))

    def rewards(self) -> np.ndarray | None:
        """All rewards, sum(T); None if any episode has none."""
        if any(episode.rewards is None for episode in self._episodes):
            return None
        parts = [episode.rewards for episode in self._episodes]
        return np.concatenate(parts) if parts else np.zeros(0)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every transition (x_k, u_k, x_{k+1}) over all episodes.

        Returns:
            x: N x n, u: N x m, x_next: N x n, with N = :attr:`num_steps`.
        """
        if not self._episodes:
            empty = np.zeros((0, self.state_dim))
            return empty, np.zeros((0, self.action_dim)), empty.copy()
        x = np.concatenate([episode.states[:-1] for episode in self._episodes])
        x_next = np.concatenate([episode.states[1:] for episode in self._episodes])
        return x, self.actions(), x_next

    # --- building ------------------------------------------------------------------------------
    def _spec(self) -> dict[str, Any]:
        return {
            "state_names": list(self._state_names),
            "action_names": list(self._action_names),
            "dt": self._dt,
            "angle_dims": list(self._angle_dims),
        }

    def _like(self, episodes: Iterable[Episode]) -> TrajectoryDataset:
        """A new, unbound dataset with these names and these (already checked) episodes."""
        new = TrajectoryDataset(
            state_names=self._state_names,
            action_names=self._action_names,
            dt=self._dt,
            angle_dims=self._angle_dims,
        )
        new._episodes = tuple(episodes)
        return new

    def _checked(self, episode: Any, index: int) -> Episode:
        if not isinstance(episode, Episode):
            raise TypeError(
                f"episode {index}: expected an Episode, got {type(episode).__name__}; use "
                "TrajectoryDataset.from_arrays or Episode.from_arrays to build one from arrays"
            )
        _validated_arrays(
            episode.states,
            episode.actions,
            episode.rewards,
            episode.times,
            label=f"episode {index}",
            state_names=self._state_names,
            action_names=self._action_names,
        )
        return episode

    def _make_episode(
        self,
        states: Any,
        actions: Any,
        rewards: Any,
        times: Any,
        label: str,
        terminated: Any = False,
    ) -> Episode:
        """Validate arrays with this dataset's names (errors say ``label``) and build an Episode."""
        if times is None:
            times = _default_times(_num_rows(actions), self._dt, label)
        x, u, r, t = _validated_arrays(
            states,
            actions,
            rewards,
            times,
            label=label,
            state_names=self._state_names,
            action_names=self._action_names,
        )
        return Episode(x, u, r, t, _check_terminated(terminated, label))

    @classmethod
    def from_arrays(
        cls,
        states: Any,
        actions: Any,
        rewards: Any = None,
        *,
        dt: float | None = None,
        times: Any = None,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        angle_dims: Sequence[int] = (),
    ) -> TrajectoryDataset:
        """A dataset from arrays of one or several episodes.

        ``states`` decides the layout and the other fields follow it:

        * one episode: states T+1 x n, actions T x m, rewards (T,), times (T+1,);
        * several episodes: a list (lengths may differ) of such arrays per field, or 3-D
          arrays E x (T+1) x n and E x T x m with rewards E x T and times E x (T+1).

        Args:
            states, actions, rewards: as above; rewards may be None.
            dt: the control interval; required when ``times`` is None.
            times: as above, or None for ``dt * arange(T+1)`` in every episode.
            state_names: default ``("x0", "x1", ...)``.
            action_names: default ``("u0", "u1", ...)``.
            angle_dims: state dimensions that are angles.

        Raises:
            TypeError, ValueError: naming the episode and the field.
        """
        per_episode = _episode_layout(states)
        states_list = _per_episode(states, "states", per_episode, None)
        count = len(states_list)
        actions_list = _per_episode(actions, "actions", per_episode, count)
        rewards_list = _per_episode(rewards, "rewards", per_episode, count)
        times_list = _per_episode(times, "times", per_episode, count)
        if state_names is None:
            n = _num_columns(states_list[0], "states")
            state_names = tuple(f"x{i}" for i in range(n))
        if action_names is None:
            m = _num_columns(actions_list[0], "actions")
            action_names = tuple(f"u{i}" for i in range(m))
        dataset = cls(
            state_names=state_names, action_names=action_names, dt=dt, angle_dims=angle_dims
        )
        dataset._episodes = tuple(
            dataset._make_episode(*fields, label=f"episode {i}")
            for i, fields in enumerate(
                zip(states_list, actions_list, rewards_list, times_list, strict=True)
            )
        )
        return dataset

    @classmethod
    def collect(
        cls,
        env: Any,
        task: TaskLike,
        policy: _Policy | None = None,
        *,
        episodes: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        deterministic: bool = False,
    ) -> TrajectoryDataset:
        """Run a Gymnasium env and record its trajectories.

        Episode i starts with ``env.reset(seed=seed + i)`` and runs until the env terminates or
        truncates it (so the env needs a time limit) or the ``steps`` budget is spent; a cut
        episode is kept. States are ``task.obs_to_state(obs)`` with the angle dimensions
        unwrapped over time, so an angle that goes round keeps counting. Times are
        ``k * task.dt``. The actions recorded are those passed to ``env.step``; an episode the
        env ended with ``terminated`` (not ``truncated``) is recorded with
        ``terminated=True``.

        Args:
            env: a ``gymnasium.Env`` whose observations ``task.obs_to_state`` understands.
            task: see :class:`TaskLike`.
            policy: None for uniform random actions from ``env.action_space`` (seeded with
                ``seed``), or an object with SB3's ``predict(obs, episode_start=...,
                deterministic=...)`` that returns ``(action, state)``; ``episode_start`` is
                True at each episode's first step.
            episodes: number of episodes (>= 1); give this or ``steps``, not both.
            steps: total number of transitions (>= 1).
            seed: base seed of the resets and of the random policy.
            deterministic: passed to ``policy.predict``.
        """
        budget_episodes, budget_steps = _check_budget(episodes, steps)
        seed = _check_seed(seed)
        state_names = _check_names(task.state_names, "task.state_names")
        action_names = _check_names(task.action_names, "task.action_names")
        dataset = cls(
            state_names=state_names,
            action_names=action_names,
            dt=task.dt,
            angle_dims=task.angle_dims,
        )
        if policy is None:
            env.action_space.seed(seed)
        elif not callable(getattr(policy, "predict", None)):
            raise TypeError(
                f"policy must have SB3's predict(obs, deterministic=...) -> (action, state) or "
                f"be None for random actions, got {type(policy).__name__}"
            )
        collected: list[Episode] = []
        remaining = budget_steps
        while (budget_episodes is None or len(collected) < budget_episodes) and remaining != 0:
            label = f"episode {len(collected)}"
            states, actions, rewards, terminated = _run_episode(
                env, task, policy, seed + len(collected), deterministic, remaining, label
            )
            states = unwrap_angles(states, dataset.angle_dims)
            times = task.dt * np.arange(len(states), dtype=np.float64)
            collected.append(
                dataset._make_episode(states, actions, rewards, times, label, terminated)
            )
            if remaining is not None:
                remaining -= len(actions)
        dataset._episodes = tuple(collected)
        return dataset

    # --- the append-only store -----------------------------------------------------------------
    def append(
        self,
        episode: Episode | Any,
        actions: Any = None,
        rewards: Any = None,
        times: Any = None,
        *,
        terminated: bool = False,
    ) -> Episode:
        """Add one episode: an :class:`Episode`, or ``append(states, actions, rewards, times,
        terminated=...)``.

        The episode is validated first. When the dataset is bound to a directory, exactly one
        new episode file is then written atomically, and only after that is the episode added in
        memory: a failed append changes neither the store nor this object.

        Returns:
            The episode as stored.

        Raises:
            TypeError, ValueError: the episode is invalid (nothing is written).
            FileExistsError: the next episode file already exists (someone else appended).
        """
        index = len(self._episodes)
        label = f"episode {index}"
        if isinstance(episode, Episode):
            if actions is not None or rewards is not None or times is not None or terminated:
                raise TypeError(
                    "append got an Episode and arrays; pass an Episode alone, or "
                    "states, actions, rewards, times, terminated"
                )
            new = self._checked(episode, index)
        else:
            new = self._make_episode(episode, actions, rewards, times, label, terminated)
        if self._directory is not None:
            path = _episode_path(self._directory, index)
            with DirectoryLock(self._directory, "dataset store"):
                if path.exists():
                    raise FileExistsError(
                        f"{path} already exists: another writer appended to {self._directory}; "
                        "load the dataset again before appending"
                    )
                atomic_write_bytes(path, _episode_bytes(new))
        self._episodes = (*self._episodes, new)
        return new

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the dataset to ``directory`` and bind it there (later appends go to disk).

        A new or empty directory gets ``dataset.json`` and one file per episode. A directory
        that already holds this dataset's first k episodes (same names, dt and angle dims) gets
        the rest, so a save that was interrupted can simply be repeated.

        Raises:
            FileExistsError: the directory holds a different dataset, or other files.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a directory")
        with DirectoryLock(directory, "dataset store"):  # one writer at a time
            self._save(directory)

    def _save(self, directory: Path) -> None:
        existing = _existing_store(directory)
        if existing is None:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "episodes").mkdir(exist_ok=True)
            text = json.dumps({"format": FORMAT, "version": VERSION, **self._spec()}, indent=2)
            atomic_write_bytes(directory / "dataset.json", (text + "\n").encode())
            start = 0
        else:
            self._check_same_store(existing, directory)
            start = len(existing)
            (directory / "episodes").mkdir(exist_ok=True)
        for index in range(start, len(self._episodes)):
            atomic_write_bytes(
                _episode_path(directory, index), _episode_bytes(self._episodes[index])
            )
        self._directory = directory

    def _check_same_store(self, existing: TrajectoryDataset, directory: Path) -> None:
        if existing._spec() != self._spec():
            raise FileExistsError(
                f"{directory} holds a different dataset ({existing._spec()}) than this one "
                f"({self._spec()}); save to another directory"
            )
        if len(existing) > len(self) or existing.episodes != self._episodes[: len(existing)]:
            raise FileExistsError(
                f"{directory} holds {len(existing)} episodes that are not the first episodes of "
                f"this dataset ({len(self)} episodes); save to another directory, or load that "
                "one and append to it"
            )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TrajectoryDataset:
        """Read a dataset written by :meth:`save` / :meth:`append`, bound to ``directory``.

        Every episode file is validated; errors name the file. Leftover temporary files of an
        interrupted write (``*.tmp``) are ignored.

        Raises:
            FileNotFoundError: no ``dataset.json`` in ``directory``.
            ValueError: a file is unreadable, has unknown or missing arrays, or is invalid.
        """
        directory = Path(directory)
        meta_path = directory / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} does not exist; {directory} is not a saved TrajectoryDataset "
                "(write one with TrajectoryDataset.save)"
            )
        dataset = _dataset_from_meta(read_json_object(meta_path), meta_path)
        episodes = []
        for index, path in enumerate(_episode_files(directory / "episodes")):
            episodes.append(_read_episode(dataset, path, index))
        dataset._episodes = tuple(episodes)
        dataset._directory = directory
        return dataset

    # --- CSV -----------------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write every episode as CSV (atomically), readable by :meth:`from_csv` without options.

        The first line is ``# hybridgym.TrajectoryDataset {json}`` (names, dt, angle dims), then
        a header ``episode,t,<state names>,<action names>,reward,terminated`` and one row per
        state; the last row of each episode has empty action and reward cells (so do all reward
        cells of an episode without rewards) and its ``terminated`` cell is 1 where the episode
        ended by termination, else 0 (the other rows leave it empty). Numbers are written with
        full float64 precision.
        """
        names = [*self._state_names, *self._action_names]
        columns = ["episode", "t", *names, "reward", "terminated"]
        clashes = sorted({"episode", "t", "reward", "terminated"} & set(names))
        if clashes:
            raise ValueError(
                f"variables named {clashes} clash with the CSV's own columns episode, t, reward, "
                "terminated; rename them before writing CSV"
            )
        buffer = io.StringIO()
        buffer.write(_META_MARK + json.dumps({"version": VERSION, **self._spec()}) + "\n")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        blank = [""] * (self.action_dim + 1)
        for e, episode in enumerate(self._episodes):
            for k in range(episode.num_steps + 1):
                row = [str(e), repr(float(episode.times[k]))]
                row += [repr(v) for v in episode.states[k].tolist()]
                if k < episode.num_steps:
                    row += [repr(v) for v in episode.actions[k].tolist()]
                    row.append("" if episode.rewards is None else repr(float(episode.rewards[k])))
                    row.append("")
                else:
                    row += [*blank, str(int(episode.terminated))]
                writer.writerow(row)
        atomic_write_bytes(Path(path), buffer.getvalue().encode())

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        state_columns: Sequence[str] | None = None,
        action_columns: Sequence[str] | None = None,
        episode_column: str | None = "episode",
        time_column: str | None = "t",
        reward_column: str | None = "reward",
        dt: float | None = None,
        angle_dims: Sequence[int] | None = None,
        terminated_column: str | None = "terminated",
    ) -> TrajectoryDataset:
        """Read trajectories from CSV: a header row, then one row per state.

        Rows are grouped into episodes by ``episode_column`` in order of first appearance;
        within an episode, times must increase. The action and reward cells of an episode's last
        row are ignored and may be empty; every other row must have them (reward cells may all
        be empty for an episode without rewards).

        Args:
            path: the CSV file.
            state_columns, action_columns: the columns of the states and actions, in order.
                None takes them from the first line of a file written by :meth:`to_csv`.
            episode_column: None when the file holds one episode.
            time_column: None to make times ``dt * arange(T+1)`` (then ``dt`` is required).
            reward_column: None when the file has no rewards.
            dt: the control interval; None takes it from a :meth:`to_csv` file, if any.
            angle_dims: None takes them from a :meth:`to_csv` file, else none.
            terminated_column: the column saying whether an episode ended by termination: 1
                (or ``true``) in the episode's last row where it did; 0, ``false`` or empty
                otherwise, and empty or 0 in every other row. A file without this column
                (as written before it existed) has no terminations; None ignores the column.

        Raises:
            FileNotFoundError: no such file.
            ValueError, TypeError: a missing column, an unparsable cell or an invalid episode;
                the message names the file, line, column or episode.
        """
        path = Path(path)
        meta, header, rows = _read_csv(path)
        if state_columns is None or action_columns is None:
            if meta is None:
                raise ValueError(
                    f"{path} was not written by TrajectoryDataset.to_csv (its first line is not "
                    f"'{_META_MARK}{{...}}'); pass state_columns=[...] and action_columns=[...] "
                    f"naming the columns; the header has {header}"
                )
        state_columns = meta["state_names"] if state_columns is None else state_columns
        action_columns = meta["action_names"] if action_columns is None else action_columns
        if dt is None and meta is not None:
            dt = meta.get("dt")
        if angle_dims is None:  # the file's angle dims describe the file's own state columns
            from_file = meta is not None and list(state_columns) == meta["state_names"]
            angle_dims = meta.get("angle_dims", ()) if from_file else ()
        dataset = cls(
            state_names=state_columns, action_names=action_columns, dt=dt, angle_dims=angle_dims
        )
        columns = _CsvColumns(path, header, state_columns, action_columns)
        columns.locate(episode_column, time_column, reward_column)
        columns.locate_terminated(terminated_column)
        groups: dict[str, list[tuple[int, list[str]]]] = {}
        for line, row in rows:
            columns.check_width(line, row)
            key = row[columns.episode] if columns.episode is not None else ""
            groups.setdefault(key, []).append((line, row))
        episodes = []
        for index, (key, group) in enumerate(groups.items()):
            label = f"episode {index}" + (f" (id {key!r} in {path.name})" if key else "")
            fields = columns.parse_episode(group)
            terminated = columns.parse_terminated(group)
            episodes.append(dataset._make_episode(*fields, label=label, terminated=terminated))
        dataset._episodes = tuple(episodes)
        return dataset

    # --- Minari --------------------------------------------------------------------------------
    def to_minari(
        self,
        dataset_id: str,
        *,
        description: str = "",
        author: str | None = None,
        author_email: str | None = None,
        code_permalink: str | None = None,
        algorithm_name: str | None = None,
    ) -> Any:
        """Write a local Minari dataset (in Minari's folder: ``MINARI_DATASETS_PATH``).

        Minari records observations: they are this dataset's states (an unbounded float64
        ``Box`` of shape (n,)); actions are an unbounded ``Box`` of shape (m,). Each step has
        ``terminations`` and ``truncations`` False but at an episode's last step, where one of
        them is True (``terminations`` where the episode ended by termination);
        ``infos["time"]`` holds the times. Names, dt and angle dims go on the last line of the
        description, so :meth:`from_minari` reads the dataset back without options. Needs
        ``pip install hybridgym[minari]``.

        Args:
            dataset_id: Minari's id, ``"namespace/name-v0"``.
            description, author, author_email, code_permalink, algorithm_name: Minari's
                metadata; None leaves it out (without Minari's warnings about it).

        Returns:
            The ``minari.MinariDataset`` written.

        Raises:
            ImportError: Minari is not installed.
            ValueError: an episode has no rewards (Minari stores a reward for every step).
        """
        minari, episode_buffer = _import_minari()
        from gymnasium import spaces

        buffers = []
        for index, episode in enumerate(self._episodes):
            if episode.rewards is None:
                raise ValueError(
                    f"episode {index}: rewards is None, but Minari stores a reward for every "
                    "step; drop the episode (subset) or give it rewards"
                )
            steps = episode.num_steps
            buffers.append(
                episode_buffer(
                    id=index,
                    observations=np.array(episode.states),
                    actions=np.array(episode.actions),
                    rewards=episode.rewards.tolist(),
                    terminations=[False] * (steps - 1) + [episode.terminated],
                    truncations=[False] * (steps - 1) + [not episode.terminated],
                    infos={"time": np.array(episode.times)},
                )
            )
        meta = json.dumps({"version": VERSION, **self._spec()})
        unbounded = {"low": -np.inf, "high": np.inf, "dtype": np.float64}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_MINARI_NONE_WARNINGS, category=UserWarning)
            return minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                observation_space=spaces.Box(shape=(self.state_dim,), **unbounded),
                action_space=spaces.Box(shape=(self.action_dim,), **unbounded),
                description=f"{description}\n{_META_MARK}{meta}".lstrip("\n"),
                author=author,
                author_email=author_email,
                code_permalink=code_permalink,
                algorithm_name=algorithm_name,
            )

    @classmethod
    def from_minari(
        cls,
        source: str | Any,
        *,
        task: TaskLike | None = None,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        dt: float | None = None,
        angle_dims: Sequence[int] | None = None,
    ) -> TrajectoryDataset:
        """Read a Minari dataset (an id of a local dataset, or a ``minari.MinariDataset``).

        With ``task``, observations become states through ``task.obs_to_state`` (angles
        unwrapped over time) and the task gives names, dt and angle dims. Without it, the
        observations are the states (arrays of shape T+1 x n): names, dt and angle dims come
        from a dataset written by :meth:`to_minari`, else from the arguments (default names
        ``x0, ...`` and ``u0, ...``). Times are ``infos["time"]`` where present, else
        ``dt * arange(T+1)``. Needs ``pip install hybridgym[minari]``.

        Raises:
            ImportError: Minari is not installed.
            TypeError: ``task`` together with names, dt or angle_dims.
            ValueError, TypeError: an invalid episode, naming it.
        """
        minari, _ = _import_minari()
        dataset = minari.load_dataset(source) if isinstance(source, str) else source
        given = {"state_names": state_names, "action_names": action_names, "dt": dt}
        if task is not None and (
            angle_dims is not None or any(v is not None for v in given.values())
        ):
            raise TypeError("from_minari got a task and names, dt or angle_dims; pass one or other")
        if task is not None:
            spec = {
                "state_names": task.state_names,
                "action_names": task.action_names,
                "dt": task.dt,
                "angle_dims": task.angle_dims,
            }
        else:
            spec = _minari_spec(dataset)
            spec.update({k: v for k, v in given.items() if v is not None})
            if angle_dims is not None:
                spec["angle_dims"] = angle_dims
        episodes = list(dataset.iterate_episodes())
        for key, field, prefix in (
            ("state_names", "observations", "x"),
            ("action_names", "actions", "u"),
        ):
            if key not in spec:
                if not episodes:
                    raise ValueError(f"the Minari dataset has no episodes; pass {key}")
                count = _num_columns(getattr(episodes[0], field), field)
                spec[key] = [f"{prefix}{i}" for i in range(count)]
        result = cls(**spec)
        collected = []
        for index, episode in enumerate(episodes):
            label = f"episode {index} (Minari id {episode.id})"
            states = episode.observations
            if task is not None:
                observations = _as_numbers(states, label, "observations")
                states = unwrap_angles(task.obs_to_state(observations), result.angle_dims)
            times = (episode.infos or {}).get("time")
            terminations = np.asarray(getattr(episode, "terminations", None), dtype=object)
            collected.append(
                result._make_episode(
                    states,
                    episode.actions,
                    episode.rewards,
                    times,
                    label,
                    bool(terminations.reshape(-1)[-1]) if terminations.ndim else False,
                )
            )
        result._episodes = tuple(collected)
        return result

    # --- selections ----------------------------------------------------------------------------
    def subset(self, indices: Iterable[int]) -> TrajectoryDataset:
        """A new, unbound dataset of these episodes (repeats allowed), in this order."""
        return self._like([self[i] for i in indices])

    def split(
        self, validation_fraction: float = 0.2, seed: int = 0
    ) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """Split by whole episodes into (train, validation), at random but seeded.

        The validation part gets ``round(validation_fraction * E)`` episodes, at least one and
        at most E - 1 when ``validation_fraction > 0`` and E >= 2. With a single episode (or
        ``validation_fraction = 0``) the validation part is empty. Each part keeps the
        original episode order. Neither part is bound to a directory.
        """
        if isinstance(validation_fraction, bool) or not isinstance(
            validation_fraction, int | float
        ):
            raise TypeError(f"validation_fraction must be a number, got {validation_fraction!r}")
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
        count = len(self._episodes)
        n_val = round(validation_fraction * count)
        if validation_fraction > 0 and count >= 2:
            n_val = min(max(n_val, 1), count - 1)
        elif count < 2:
            n_val = 0
        order = np.random.default_rng(_check_seed(seed)).permutation(count)
        val = np.sort(order[:n_val])
        train = np.sort(order[n_val:])
        return self.subset(train.tolist()), self.subset(val.tolist())

    def bootstrap(self, seed: int) -> TrajectoryDataset:
        """E episodes drawn with replacement from this dataset's E (for ensemble members)."""
        if not self._episodes:
            raise ValueError("cannot bootstrap an empty dataset; add episodes first")
        draws = np.random.default_rng(_check_seed(seed)).integers(
            0, len(self._episodes), len(self._episodes)
        )
        return self.subset(draws.tolist())

    def merge(self, other: TrajectoryDataset) -> TrajectoryDataset:
        """A new, unbound dataset: this one's episodes, then ``other``'s (same names, dt and
        angle dims required)."""
        if not isinstance(other, TrajectoryDataset):
            raise TypeError(f"can merge only a TrajectoryDataset, got {type(other).__name__}")
        if other._spec() != self._spec():
            raise ValueError(
                f"cannot merge datasets of different systems: {self._spec()} vs {other._spec()}"
            )
        return self._like(self._episodes + other._episodes)

    def __add__(self, other: TrajectoryDataset) -> TrajectoryDataset:
        if not isinstance(other, TrajectoryDataset):
            return NotImplemented
        return self.merge(other)


# --- helpers of from_arrays and collect ----------------------------------------------------------
def _episode_layout(states: Any) -> bool:
    """Whether ``states`` holds several episodes (a list of 2-D arrays or a 3-D array)."""
    if isinstance(states, list | tuple):
        if not states:
            raise ValueError("states is empty; give at least one episode")
        return np.ndim(states[0]) >= 2 if _regular(states[0]) else True
    return np.ndim(states) == 3 if _regular(states) else False


def _regular(value: Any) -> bool:
    try:
        np.ndim(value)
    except Exception:
        return False
    return True


def _per_episode(value: Any, field: str, per_episode: bool, count: int | None) -> list[Any]:
    """Split a field into one entry per episode (None fields give a list of None)."""
    if not per_episode:
        return [value]
    if value is None:
        if count is None:
            raise ValueError(f"{field} is None; give an array")
        return [None] * count
    if not isinstance(value, list | tuple):
        value = _as_numbers(value, "from_arrays", field)
        if value.ndim == 0:
            raise ValueError(
                f"{field} must hold one entry per episode, got a single number {value!r}"
            )
    if count is None and len(value) == 0:
        raise ValueError(f"{field} holds no episodes; give at least one")
    if count is not None and len(value) != count:
        raise ValueError(
            f"{field} has {len(value)} episodes but states has {count}; give one entry per episode"
        )
    return list(value)


def _num_columns(value: Any, field: str) -> int:
    """Columns of episode 0's ``field``, to name them when the caller gave no names."""
    array = _as_numbers(value, "episode 0", field)
    if array.ndim != 2:
        raise ValueError(
            f"episode 0: {field} must be a 2-D array (rows x variables), got shape "
            f"{array.shape}; for one variable use {field}.reshape(-1, 1)"
        )
    return int(array.shape[1])


def _check_budget(episodes: Any, steps: Any) -> tuple[int | None, int | None]:
    if (episodes is None) == (steps is None):
        raise ValueError(
            f"give exactly one of episodes= (number of episodes) or steps= (number of "
            f"transitions), got episodes={episodes!r}, steps={steps!r}"
        )
    for name, value in (("episodes", episodes), ("steps", steps)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return (
        None if episodes is None else int(episodes),
        None if steps is None else int(steps),
    )


def _run_episode(
    env: Any,
    task: TaskLike,
    policy: _Policy | None,
    seed: int,
    deterministic: bool,
    budget: int | None,
    label: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """One episode from ``env.reset(seed=seed)``: states (T+1 x n, wrapped), actions, rewards
    and whether the env terminated it."""
    m = len(task.action_names)
    obs, _ = env.reset(seed=seed)
    states = [_obs_to_state(task, obs)]
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    done = terminated = False
    while not done and (budget is None or len(actions) < budget):
        if policy is None:
            action = env.action_space.sample()
        else:
            start = np.array([not actions])  # SB3's episode_start: planners reset on it
            action, _ = policy.predict(obs, episode_start=start, deterministic=deterministic)
        recorded = np.asarray(action, dtype=np.float64)
        if recorded.size != m:
            raise ValueError(
                f"{label}: the policy gave an action of shape {recorded.shape} at step "
                f"{len(actions)}, but the task has {m} actions {task.action_names}"
            )
        obs, reward, terminated, truncated, _ = env.step(action)
        states.append(_obs_to_state(task, obs))
        actions.append(recorded.reshape(m))
        rewards.append(float(reward))
        done = bool(terminated or truncated)
    states_array, rewards_array = np.stack(states), np.asarray(rewards, dtype=np.float64)
    return states_array, np.stack(actions), rewards_array, bool(terminated)


def _obs_to_state(task: TaskLike, obs: Any) -> np.ndarray:
    state = np.asarray(task.obs_to_state(np.asarray(obs, dtype=np.float64)[None]), np.float64)
    return state[0].copy()


# --- helpers of the store ------------------------------------------------------------------------
def _dataset_from_meta(meta: dict[str, Any], path: Path) -> TrajectoryDataset:
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path} has version {meta.get('version')!r}; this hybridgym reads version "
            f"{VERSION} (a newer hybridgym may have written it)"
        )
    try:
        return TrajectoryDataset(
            state_names=meta["state_names"],
            action_names=meta["action_names"],
            dt=meta.get("dt"),
            angle_dims=meta.get("angle_dims", ()),
        )
    except KeyError as error:
        raise ValueError(f"{path} lacks the key {error}") from None
    except (TypeError, ValueError) as error:
        raise type(error)(f"{path}: {error}") from None


def _existing_store(directory: Path) -> TrajectoryDataset | None:
    """The dataset already in ``directory``, or None where it is absent or empty."""
    if not directory.exists():
        return None
    if not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    if (directory / "dataset.json").exists():
        return TrajectoryDataset.load(directory)
    if any(path.name != LOCK_NAME for path in directory.iterdir()):
        raise FileExistsError(
            f"{directory} is not empty and holds no dataset.json; save to a new or empty directory"
        )
    return None


def _episode_files(folder: Path) -> list[Path]:
    """The episode files in order; temporary files and other names are ignored."""
    if not folder.is_dir():
        return []
    found = {}
    for path in folder.iterdir():
        match = _EPISODE_FILE.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    for index in range(len(found)):
        if index not in found:
            raise ValueError(
                f"{folder} lacks episode_{index:06d}.npz but holds later episodes; the store "
                "is append-only, so a missing file means it was deleted or moved"
            )
    return [found[index] for index in range(len(found))]


def _read_episode(dataset: TrajectoryDataset, path: Path, index: int) -> Episode:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # zipfile, OSError, pickled objects: all mean a bad file
        raise ValueError(
            f"{path} is not a readable episode file ({type(error).__name__}: {error})"
        ) from None
    unknown = sorted(set(arrays) - _EPISODE_KEYS)
    missing = sorted({"states", "actions", "times"} - set(arrays))
    if unknown or missing:
        raise ValueError(
            f"{path} must hold arrays states, actions, times and optionally rewards and "
            f"terminated; missing {missing}, unknown {unknown}"
        )
    return dataset._make_episode(
        arrays["states"],
        arrays["actions"],
        arrays.get("rewards"),
        arrays["times"],
        label=f"episode {index} ({path})",
        terminated=arrays.get("terminated", False),
    )


# --- helpers of Minari ---------------------------------------------------------------------------
#: Minari's warnings about metadata left as None, which to_minari leaves out on purpose
_MINARI_NONE_WARNINGS = r"(`\w+` is set to None|env_spec is None)"


def _import_minari() -> tuple[Any, Any]:
    """(the minari module, its EpisodeBuffer class), or an ImportError that says the fix."""
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError as error:
        raise ImportError(
            "Minari import/export needs the optional dependency minari; install it with "
            f"`pip install hybridgym[minari]` ({error})"
        ) from error
    return minari, EpisodeBuffer


def _minari_spec(dataset: Any) -> dict[str, Any]:
    """Names, dt and angle dims from the last description line that to_minari wrote, or {}."""
    description = str(dataset.storage.metadata.get("description") or "")
    last = description.splitlines()[-1] if description else ""
    if not last.startswith(_META_MARK):
        return {}
    try:
        meta = json.loads(last[len(_META_MARK) :])
    except json.JSONDecodeError:
        return {}
    keys = ("state_names", "action_names", "dt", "angle_dims")
    return {key: meta[key] for key in keys if key in meta}


# --- helpers of from_csv -------------------------------------------------------------------------
def _read_csv(path: Path) -> tuple[dict[str, Any] | None, list[str], list[tuple[int, list[str]]]]:
    """(metadata of a to_csv file or None, header, [(line number, cells)] of non-blank rows)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets start UTF-8 with a BOM
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None
    lines = text.splitlines()
    meta = None
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        if skipped == 0 and lines[0].startswith(_META_MARK):
            try:
                meta = json.loads(lines[0][len(_META_MARK) :])
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line 1: unreadable metadata: {error}") from None
            if not isinstance(meta, dict) or not {"state_names", "action_names"} <= meta.keys():
                raise ValueError(f"{path} line 1: the metadata lacks state_names or action_names")
            _check_csv_meta(meta, path)
        skipped += 1
    reader = csv.reader(lines[skipped:])
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} has no header row")
    rows = [(skipped + i + 2, row) for i, row in enumerate(reader) if any(c.strip() for c in row)]
    return meta, [c.strip() for c in header], rows


def _check_csv_meta(meta: dict[str, Any], path: Path) -> None:
    """The metadata line of a to_csv file holds valid names, dt and angle dims, or an error that
    names the file and the key."""
    try:
        state_names = _check_names(meta["state_names"], "state_names")
        _check_names(meta["action_names"], "action_names")
        _check_dt(meta.get("dt"))
        _check_angle_dims(meta.get("angle_dims", ()), len(state_names))
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"{path} line 1: the metadata written by to_csv is invalid: {error}; fix or delete "
            "that line (then pass state_columns and action_columns)"
        ) from None
    meta["state_names"], meta["action_names"] = list(state_names), list(meta["action_names"])


#: cells of the CSV's terminated column (lower-cased)
_CSV_FLAGS = {"": False, "0": False, "1": True, "false": False, "true": True}


class _CsvColumns:
    """Where each field lives in a CSV header, and how to parse one episode's rows."""

    def __init__(
        self, path: Path, header: list[str], states: Sequence[str], actions: Sequence[str]
    ) -> None:
        self.path = path
        self.header = header
        duplicates = sorted({c for c in header if header.count(c) > 1})
        if duplicates:
            raise ValueError(f"{path}: the header repeats the columns {duplicates}")
        self.states = [self.find(c, "state_columns") for c in states]
        self.actions = [self.find(c, "action_columns") for c in actions]

    def find(self, column: str, option: str) -> int:
        if column not in self.header:
            raise ValueError(
                f"{self.path}: no column {column!r} (from {option}); the header has "
                f"{self.header}; pass {option} naming the file's columns"
            )
        return self.header.index(column)

    def locate(self, episode: str | None, time: str | None, reward: str | None) -> None:
        hints = {"episode_column": "a file with one episode", "time_column": "times from dt"}
        hints["reward_column"] = "a file without rewards"
        found = {}
        for option, column in (
            ("episode_column", episode),
            ("time_column", time),
            ("reward_column", reward),
        ):
            if column is not None and column not in self.header:
                raise ValueError(
                    f"{self.path}: no column {column!r} (the {option}); the header has "
                    f"{self.header}; pass {option}=None for {hints[option]}"
                )
            found[option] = None if column is None else self.header.index(column)
        self.episode = found["episode_column"]
        self.time = found["time_column"]
        self.reward = found["reward_column"]

    def locate_terminated(self, column: str | None) -> None:
        """The termination column, if the header has it (files written before it have not)."""
        found = column is not None and column in self.header
        self.terminated = self.header.index(column) if found else None

    def parse_terminated(self, group: list[tuple[int, list[str]]]) -> bool:
        """Whether one episode's rows say it ended by termination (its last row's cell)."""
        if self.terminated is None:
            return False
        flags = []
        for line, row in group:
            cell = row[self.terminated].strip().lower()
            if cell not in _CSV_FLAGS:
                raise ValueError(
                    f"{self.path} line {line}, column {self.header[self.terminated]!r}: the cell "
                    f"holds {row[self.terminated]!r}; expected 1 or 0 (true/false, or empty for 0)"
                )
            flags.append(_CSV_FLAGS[cell])
        early = next((i for i, flag in enumerate(flags[:-1]) if flag), None)
        if early is not None:
            raise ValueError(
                f"{self.path} line {group[early][0]}, column {self.header[self.terminated]!r}: "
                "only an episode's last row may say terminated (a terminal state ends the "
                "episode); put 1 in the last row, 0 or nothing elsewhere"
            )
        return flags[-1]

    def check_width(self, line: int, row: list[str]) -> None:
        if len(row) != len(self.header):
            raise ValueError(
                f"{self.path} line {line}: {len(row)} cells, but the header has "
                f"{len(self.header)} columns"
            )

    def number(self, line: int, row: list[str], column: int) -> float:
        cell = row[column].strip()
        try:
            return float(cell)
        except ValueError:
            what = "is empty" if not cell else f"holds {cell!r}, not a number"
            raise ValueError(
                f"{self.path} line {line}, column {self.header[column]!r}: the cell {what}"
            ) from None

    def parse_episode(
        self, group: list[tuple[int, list[str]]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(states, actions, rewards or None, times or None) of one episode's rows."""
        states = [[self.number(line, row, c) for c in self.states] for line, row in group]
        actions = [[self.number(line, row, c) for c in self.actions] for line, row in group[:-1]]
        times = None
        if self.time is not None:
            times = np.array([self.number(line, row, self.time) for line, row in group])
        rewards = None
        if self.reward is not None and any(row[self.reward].strip() for _, row in group[:-1]):
            rewards = np.array([self.number(line, row, self.reward) for line, row in group[:-1]])
        n, m = len(self.states), len(self.actions)
        return (
            np.array(states, dtype=np.float64).reshape(len(states), n),
            np.array(actions, dtype=np.float64).reshape(len(actions), m),
            rewards,
            times,
        )
