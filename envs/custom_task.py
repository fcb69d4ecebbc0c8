"""A control task for your own system, from plain arguments: no :class:`Task` subclass to
write.

A built-in system's task is a subclass of :class:`Task` (observation maps, spaces, start
states, the textbook prior, the real env). For a system of your own whose observation is its
state, all a learned environment needs is the state and action names, the control interval,
the reward, the action bounds and where episodes start: :class:`CustomTask` takes exactly
that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.task import Task
from hybridgym.models import PhysicsPrior
from hybridgym.models.arrays import Array, uniform

#: ``reward(state, action, next_state) -> B`` on batches (B x n, B x m, B x n)
RewardFunction = Callable[[Array, Array, Array], Array]
#: ``terminated(next_state) -> B`` (bool) on a batch (B x n)
TerminationFunction = Callable[[Array], Array]


class CustomTask(Task):
    """A task for your own system: the observation is the physical state.

    Serve a model fitted to your data as an environment with
    ``LearnedEnv(model, task)`` or ``LearnedVecEnv(model, task, num_envs)``; SB3 agents
    (``make_agent``) and ``evaluate`` take those environments as they take built-in ones.

    Args:
        name: what to call the task in messages (it is not registered with ``get_task``;
            ``register_task(name, lambda: task)`` does that if you want it).
        state_names: the n state variables, e.g. ``("position", "velocity")``; a dataset of
            this task must have these names.
        action_names: the m action variables, e.g. ``("force",)``.
        dt: control interval (the model's and the data's), in your time unit.
        reward: ``reward(state, action, next_state)`` of a batch of transitions, shape B.
            Learned environments pass torch tensors (B x n, B x m, B x n; the action already
            clipped to its bounds) and expect a tensor back; written with arithmetic and
            indexing (``next_state[:, 0]``) it works on numpy arrays as well.
        action_low, action_high: bounds of the action box: one number for every action or m
            numbers.
        start_low, start_high: episodes start from states drawn uniformly in this box: one
            number for every state variable or n numbers.
        max_episode_steps: episode length (truncation), in control intervals.
        terminated: ``terminated(next_state)``, a bool per row of a batch, shape B; None
            (the default) never ends an episode early.
        state_low, state_high: bounds of the observation space (the state); observations
            outside are clipped. Default: unbounded.
        angle_dims: state dimensions that are angles in radians (wrapped in state
            differences, as for the built-in tasks).
        real_env_id: the Gymnasium id of your real system, where you registered one whose
            observation is this state; ``make_real_env`` (and so ``evaluate(agent, task)``
            and ``TrajectoryDataset.collect``) then uses it. None (the default): the task has
            no real env.
        time_unit: the unit of ``dt``, for plots.

    Raises:
        ValueError, TypeError: an argument of the wrong shape, range or type; the message
            names it.

    Example::

        task = CustomTask(
            "oscillator",
            state_names=("position", "velocity"),
            action_names=("force",),
            dt=0.1,
            reward=lambda x, u, x_next: -x_next[:, 0] ** 2,
            action_low=-1.0,
            action_high=1.0,
            start_low=-1.0,
            start_high=1.0,
            max_episode_steps=50,
        )
    """

    def __init__(
        self,
        name: str,
        *,
        state_names: Sequence[str],
        action_names: Sequence[str],
        dt: float,
        reward: RewardFunction,
        action_low: float | Sequence[float],
        action_high: float | Sequence[float],
        start_low: float | Sequence[float],
        start_high: float | Sequence[float],
        max_episode_steps: int,
        terminated: TerminationFunction | None = None,
        state_low: float | Sequence[float] = -np.inf,
        state_high: float | Sequence[float] = np.inf,
        angle_dims: Sequence[int] = (),
        real_env_id: str | None = None,
        time_unit: str = "time units",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self._state_names = _names("state_names", state_names)
        self._action_names = _names("action_names", action_names)
        n, m = len(self._state_names), len(self._action_names)
        if isinstance(dt, bool) or not isinstance(dt, int | float) or not 0 < dt < np.inf:
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        self.dt = float(dt)
        if not callable(reward):
            raise TypeError(f"reward must be a function, got {type(reward).__name__}")
        if terminated is not None and not callable(terminated):
            raise TypeError(
                f"terminated must be a function or None, got {type(terminated).__name__}"
            )
        self._reward, self._terminated = reward, terminated
        low, high = _box("action", action_low, action_high, m, finite=True)
        self._action_space = spaces.Box(_f32(low), _f32(high), dtype=np.float32)
        self._start_low, self._start_high = _box("start", start_low, start_high, n, finite=True)
        low, high = _box("state", state_low, state_high, n, finite=False)
        if np.any(self._start_low < low) or np.any(self._start_high > high):
            raise ValueError("the start box must lie inside [state_low, state_high]")
        self._observation_space = spaces.Box(_f32(low), _f32(high), dtype=np.float32)
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int):
            raise TypeError(f"max_episode_steps must be an int, got {max_episode_steps!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.max_episode_steps = max_episode_steps
        self.angle_dims = tuple(int(i) for i in angle_dims)
        if any(not 0 <= i < n for i in self.angle_dims):
            raise ValueError(f"angle_dims must be state dimensions 0 ... {n - 1}, got {angle_dims}")
        self.real_env_id = real_env_id
        self.time_unit = time_unit
        self.summary = f"{name}: {n} states, {m} actions, dt {self.dt:g}"

    @property
    def state_names(self) -> tuple[str, ...]:
        return self._state_names

    @property
    def action_names(self) -> tuple[str, ...]:
        return self._action_names

    @property
    def observation_space(self) -> spaces.Box:
        return self._observation_space

    @property
    def action_space(self) -> spaces.Box:
        return self._action_space

    def obs_to_state(self, obs: Array) -> Array:
        return obs * 1  # a copy, of the same kind

    def state_to_obs(self, state: Array) -> Array:
        return state * 1

    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        return self._reward(state, action, next_state)

    def terminated(self, next_state: Array) -> Array:
        if self._terminated is None:
            return super().terminated(next_state)
        return self._terminated(next_state)

    def sample_initial_states(
        self,
        n: int,
        generator: np.random.Generator | torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Array:
        return uniform(n, self._start_low, self._start_high, generator, dtype=dtype, device=device)

    def make_real_env(self, **kwargs: Any) -> gym.Env:
        """``gym.make(real_env_id)``, checked against the task's state and action sizes."""
        if self.real_env_id is None:
            raise ValueError(
                f"task {self.name!r} has no real system (real_env_id=None): evaluate on a "
                "LearnedEnv of a model (or of a simulator), or register your system with "
                "Gymnasium and pass CustomTask(real_env_id=...)"
            )
        env = gym.make(self.real_env_id, **kwargs)
        spaces_wanted = (self.observation_space.shape, self.action_space.shape)
        if (env.observation_space.shape, env.action_space.shape) != spaces_wanted:
            shapes = (env.observation_space.shape, env.action_space.shape)
            env.close()
            raise ValueError(
                f"{self.real_env_id} has observation and action shapes {shapes}, task "
                f"{self.name!r} has {spaces_wanted} (its observation is its state)"
            )
        return env

    def _make_prior(self, scale: float) -> PhysicsPrior:
        raise NotImplementedError(
            f"task {self.name!r} has no textbook prior: write your physics as a PhysicsPrior "
            "and build the HybridODE with it (README, 'Bring your own system')"
        )

    def __repr__(self) -> str:
        return (
            f"CustomTask({self.name!r}, state_names={self.state_names}, "
            f"action_names={self.action_names}, dt={self.dt:g})"
        )

    # Two custom tasks are the same task only if they are the same object: their rewards are
    # functions, which cannot be compared.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


def _names(label: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(x, str) and x for x in names):
        raise TypeError(f"{label} must be a sequence of non-empty strings, got {names!r}")
    out = tuple(names)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{label} must be one or more distinct names, got {out}")
    return out


def _box(
    label: str, low: Any, high: Any, size: int, *, finite: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``low`` and ``high`` as float64 arrays of shape (size,), checked."""
    bounds = []
    for side, value in (("low", low), ("high", high)):
        array = np.asarray(value, dtype=np.float64)
        if array.ndim > 1 or array.size not in (1, size):
            raise ValueError(
                f"{label}_{side} must be one number or {size}, got shape {array.shape}"
            )
        array = np.broadcast_to(array.reshape(-1), (size,)).copy()
        if np.isnan(array).any() or (finite and not np.isfinite(array).all()):
            kind = "finite numbers" if finite else "numbers"
            raise ValueError(f"{label}_{side} must be {kind}, got {value!r}")
        bounds.append(array)
    if not np.all(bounds[0] <= bounds[1]):
        raise ValueError(f"{label}_low must be <= {label}_high, got {low!r} and {high!r}")
    return bounds[0], bounds[1]


def _f32(bound: np.ndarray) -> np.ndarray:
    """A Box bound in float32 (Gymnasium warns when it has to lower the precision itself)."""
    return bound.astype(np.float32)
