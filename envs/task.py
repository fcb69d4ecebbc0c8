"""What is known about a control problem apart from its dynamics.

A :class:`Task` holds the reward, termination, observation<->state maps, state difference and
start-state sampler of one system, plus the textbook physics prior. The real environment of
each built-in system calls these very functions, the learned environments call them on model
states, and the tests compare them against the real environments.

Every function on states takes a leading batch dimension. They accept torch tensors (the
documented interface, used by models and learned envs) and also numpy arrays, returning the same
kind they were given; the real environments use the numpy path.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from hybridgym.models import HybridODE, MLPResidual, PhysicsPrior, fixed_step
from hybridgym.models.arrays import Array, array_namespace, lasting_tensor, wrap_angle
from hybridgym.models.hybrid import register_prior_builder


class Task(ABC):
    """Base class of a control task. Subclasses set the class attributes and implement the
    abstract methods; all state functions are batched (leading dimension B).

    Class attributes:
        name: the task's name for :func:`get_task`, e.g. ``"pendulum"``.
        real_env_id: the Gymnasium id of the real system.
        dt: control interval, in the system's time unit (stated in each task's docstring).
        max_episode_steps: episode length of the real system.
        angle_dims: state dimensions that are angles (wrapped by :meth:`state_difference`,
            unwrapped over time when datasets are built from observations).
        return_threshold: an episode return that counts as good control, used to report
            "real steps to threshold"; None where the task has no such number.
        default_perturbation: how far below the truth :meth:`make_prior` starts the constants.
        summary: the dynamics in one line, for tables.
        time_unit: the unit of ``dt``, for plots.
    """

    name: ClassVar[str]
    real_env_id: ClassVar[str]
    dt: ClassVar[float]
    max_episode_steps: ClassVar[int]
    angle_dims: ClassVar[tuple[int, ...]] = ()
    return_threshold: ClassVar[float | None] = None
    default_perturbation: ClassVar[float] = 0.3
    summary: ClassVar[str] = ""
    time_unit: ClassVar[str] = "time units"

    # --- description -------------------------------------------------------------------------
    @property
    @abstractmethod
    def state_names(self) -> tuple[str, ...]:
        """Names of the state variables, length n."""

    @property
    @abstractmethod
    def action_names(self) -> tuple[str, ...]:
        """Names of the action variables, length m."""

    @property
    @abstractmethod
    def observation_space(self) -> spaces.Box:
        """The real environment's observation space (float32 Box)."""

    @property
    @abstractmethod
    def action_space(self) -> spaces.Box:
        """The real environment's action space (float32 Box)."""

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def obs_dim(self) -> int:
        return int(self.observation_space.shape[0])

    @property
    def real_env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make the real env match this task (e.g. ``num_zones``)."""
        return {}

    def make_real_env(self, **kwargs: Any) -> gym.Env:
        """``gym.make`` this task's real system; ``kwargs`` override :attr:`real_env_kwargs`."""
        return gym.make(self.real_env_id, **{**self.real_env_kwargs, **kwargs})

    # --- maps between observations and states ------------------------------------------------
    @abstractmethod
    def obs_to_state(self, obs: Array) -> Array:
        """Observations (B x obs_dim) to physical states (B x n). Angles come out wrapped."""

    @abstractmethod
    def state_to_obs(self, state: Array) -> Array:
        """Physical states (B x n) to observations (B x obs_dim)."""

    # --- the control problem -----------------------------------------------------------------
    @abstractmethod
    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        """Reward of a batch of transitions, shape B."""

    def terminated(self, next_state: Array) -> Array:
        """Whether each next state ends the episode, shape B (bool). Default: never."""
        if isinstance(next_state, torch.Tensor):
            return torch.zeros(next_state.shape[:-1], dtype=torch.bool, device=next_state.device)
        return np.zeros(next_state.shape[:-1], dtype=bool)

    def state_difference(self, a: Array, b: Array) -> Array:
        """``a - b`` for batches of states, with angle dimensions wrapped to [-pi, pi)."""
        diff = a - b
        if not self.angle_dims:
            return diff
        xp = array_namespace(diff)
        columns = [
            wrap_angle(diff[..., i]) if i in self.angle_dims else diff[..., i]
            for i in range(diff.shape[-1])
        ]
        return xp.stack(columns, -1)

    @abstractmethod
    def sample_initial_states(
        self,
        n: int,
        generator: np.random.Generator | torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Array:
        """Draw n start states, n x state_dim.

        With a ``numpy.random.Generator`` the result is float64 numpy (the real envs pass their
        ``np_random``); with a ``torch.Generator`` or None it is a torch tensor of ``dtype``.
        """

    # --- parts learned from data --------------------------------------------------------------
    @property
    def learned_parts(self) -> dict[str, torch.nn.Module]:
        """Modules of this task that are learned from recorded data (e.g. a
        :class:`~hybridgym.envs.GymTask`'s reward and termination models), by name; empty for
        a task that states everything (every built-in task)."""
        return {}

    def reset_learned(self, seed: int = 0) -> None:
        """Start :attr:`learned_parts` afresh, their initial weights drawn with ``seed`` (a
        fresh loop run does this, so the same seed gives the same run)."""
        return None  # nothing is learned by a task that states everything

    def learn(self, data: Any, config: Any = None) -> dict[str, Any]:
        """Refit :attr:`learned_parts` on ``data`` (a ``TrajectoryDataset`` of this task),
        warm-started; returns a report per part. A task without learned parts does nothing."""
        return {}

    # --- dynamics ----------------------------------------------------------------------------
    def make_prior(self, perturbation: float | None = None) -> PhysicsPrior:
        """The textbook physics of this system as a :class:`PhysicsPrior`.

        Args:
            perturbation: relative offset of the initial constants from the truth: each
                learnable constant starts at ``true * (1 - perturbation)``. None uses the
                task's documented :attr:`default_perturbation`; 0 starts at the true values
                (the prior still lacks the missing physics).
        """
        prior = self._make_prior(self.prior_scale(perturbation))
        prior.rebuild_spec = {
            "builder": "task",
            "module": "hybridgym.envs",
            "task": self.name,
            "task_kwargs": self.real_env_kwargs,
        }
        return prior

    def make_residual(
        self,
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
        structured: bool = True,
        prior: torch.nn.Module | None = None,
    ) -> torch.nn.Module:
        """The network part of this system's hybrid model: by default an
        :class:`~hybridgym.models.MLPResidual` on the whole state (angles as sin/cos). A system
        whose missing physics has a known shape overrides it unless ``structured=False`` (a
        network without a prior must model every state): alike units get a
        :class:`~hybridgym.models.UnitResidual`, the cart-pole a network of generalised forces
        mapped through its mass matrix, which reads ``prior``'s starting constants."""
        return MLPResidual(
            self.state_dim,
            self.action_dim,
            hidden=hidden,
            activation=activation,
            angle_dims=self.angle_dims,
        )

    @abstractmethod
    def _make_prior(self, scale: float) -> PhysicsPrior:
        """The prior with learnable constants at ``scale`` times the truth."""

    def prior_scale(self, perturbation: float | None = None) -> float:
        """``1 - perturbation`` after checking it (None: :attr:`default_perturbation`)."""
        value = self.default_perturbation if perturbation is None else perturbation
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ValueError(f"perturbation must be a number in [0, 1), got {perturbation!r}")
        return 1.0 - float(value)

    def true_vector_field(self, state: Array, action: Array) -> Array:
        """dx/dt of the real system (B x n), for systems that are ODEs."""
        raise NotImplementedError(
            f"task {self.name!r} has no continuous-time truth; use true_step(state, action)"
        )

    def missing_physics(self, state: Array, action: Array) -> Array:
        """True vector field minus the textbook prior at the true constants (B x n): what a
        residual should learn, for plots and tests. Where the task knows it."""
        raise NotImplementedError(f"task {self.name!r} does not state its missing physics")

    #: integration of :meth:`true_vector_field` over one control interval
    integrator: ClassVar[str] = "rk4"
    substeps: ClassVar[int] = 1

    def true_step(self, state: Array, action: Array) -> Array:
        """The real system's deterministic transition over one control interval (B x n).

        Actions are clipped to the action space first, as the real env does.
        """
        action = self.clip_action(action)
        return fixed_step(
            self.true_vector_field,
            state,
            action,
            self.dt,
            method=self.integrator,
            substeps=self.substeps,
        )

    def make_oracle(self) -> torch.nn.Module:
        """A model of the real system's deterministic part: ``step(x, u)`` reproduces
        :meth:`true_step` in torch (a HybridODE whose prior is the true vector field, with the
        real env's integrator; for a discrete-map system, the map). For tests and for
        perfect-model baselines; noise (observation, load) is not part of it."""
        try:
            self.true_vector_field(np.zeros((1, self.state_dim)), np.zeros((1, self.action_dim)))
        except NotImplementedError:
            return _MapOracle(self)
        return HybridODE(
            _TrueField(self), None, self.dt, method=self.integrator, substeps=self.substeps
        )

    def start_state_option(self, options: dict[str, Any] | None) -> np.ndarray | None:
        """The physical start state asked for by ``reset(options={"state": s})``, checked
        (float64, shape n), or None; any other option is an error."""
        options = dict(options or {})
        start = options.pop("state", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; the only option is 'state'")
        if start is None:
            return None
        start = np.asarray(start, dtype=np.float64)
        if start.shape != (self.state_dim,) or not np.all(np.isfinite(start)):
            raise ValueError(
                f"options['state'] must be a finite array of shape ({self.state_dim},) "
                f"with {self.state_names}, got {start!r}"
            )
        return start.copy()

    def observation_batch(self, observation: Any) -> tuple[np.ndarray, bool]:
        """One observation (obs_dim,) or a batch (B x obs_dim) as a float32 batch, and whether
        it was a single one (for ``predict`` methods)."""
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.ndim != 2 or batch.shape[1] != self.obs_dim:
            raise ValueError(
                f"observation must have shape ({self.obs_dim},) or (B, {self.obs_dim}), "
                f"got {obs.shape}"
            )
        return batch, single

    def clip_action(self, action: Array) -> Array:
        """Clip a batch of actions (B x m) to the action space."""
        if isinstance(action, torch.Tensor):
            lo, hi = self._action_bounds(action.dtype, action.device)
            return torch.clamp(action, min=lo, max=hi)
        return np.clip(action, self.action_space.low, self.action_space.high)

    def _action_bounds(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The action space's bounds as tensors, cached per dtype and device (hot path)."""
        cache = self.__dict__.setdefault("_bounds_cache", {})
        key = (dtype, device)
        if key not in cache:
            space = self.action_space
            cache[key] = (
                lasting_tensor(space.low, dtype, device),
                lasting_tensor(space.high, dtype, device),
            )
        return cache[key]

    # --- data --------------------------------------------------------------------------------
    def describes(self, dataset: Any) -> bool:
        """Whether ``dataset`` (a ``TrajectoryDataset``) has this task's state and action
        names, angle dimensions and, where it records one, control interval."""
        dt = getattr(dataset, "dt", None)
        return (
            tuple(dataset.state_names) == self.state_names
            and tuple(dataset.action_names) == self.action_names
            and tuple(dataset.angle_dims) == tuple(self.angle_dims)
            and (dt is None or abs(dt - self.dt) <= 1e-9 * max(1.0, self.dt))
        )

    def check_dataset(self, dataset: Any, source: str = "the dataset") -> None:
        """Raise a ``ValueError`` naming both tasks unless :meth:`describes` holds.

        Args:
            dataset: a ``TrajectoryDataset`` (anything with ``state_names``,
                ``action_names``, ``angle_dims`` and ``dt``).
            source: how to name the data in the message, e.g. its folder.
        """
        if self.describes(dataset):
            return
        others = [get_task(name) for name in task_names() if name != self.name]
        found = next((task.name for task in others if task.describes(dataset)), None)
        what = f"data of task {found!r}" if found else "data of another system"
        dt = getattr(dataset, "dt", None)
        fix = f"use the task {found!r}" if found else "convert the data to this task's variables"
        raise ValueError(
            f"{source} holds {what} (states {tuple(dataset.state_names)}, actions "
            f"{tuple(dataset.action_names)}, dt {dt if dt is None else f'{dt:g}'}), but task "
            f"{self.name!r} has states {self.state_names}, actions {self.action_names}, dt "
            f"{self.dt:g}; use data recorded on {self.real_env_id} or {fix}"
        )

    def __repr__(self) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.real_env_kwargs.items())
        return f"{type(self).__name__}({kwargs})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.real_env_kwargs == other.real_env_kwargs

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.real_env_kwargs.items()))))


class _TrueField(torch.nn.Module):
    """The true vector field of a task as a module (the oracle's prior)."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.state_dim, self.action_dim = task.state_dim, task.action_dim

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.task.true_vector_field(x, u)


class _MapOracle(torch.nn.Module):
    """The true transition of a discrete-map system (Pendulum-v1) as a steppable model."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.state_dim, self.action_dim, self.dt = task.state_dim, task.action_dim, task.dt

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.task.true_step(x, u)

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        states = [x0]
        for k in range(actions.shape[1]):
            states.append(self.step(states[-1], actions[:, k]))
        return torch.stack(states, dim=1)


_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Make ``get_task(name)`` return ``factory(**kwargs)``."""
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered")
    _TASKS[name] = factory


def task_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_task`."""
    return tuple(sorted(_TASKS))


def get_task(name: str | Task, **kwargs: Any) -> Task:
    """The task with this name, e.g. ``get_task("datacenter", num_zones=16)``.

    A :class:`Task` instance is returned as it is (then ``kwargs`` must be empty).
    Unknown names raise ``ValueError`` with the closest known names.
    """
    if isinstance(name, Task):
        if kwargs:
            raise TypeError("get_task got a Task instance and keyword arguments; pass one or other")
        return name
    if not isinstance(name, str):
        raise TypeError(f"task must be a task name (str) or a Task, got {type(name).__name__}")
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}.{hint}")
    return _TASKS[name](**kwargs)


def task_for_env_id(env_id: str | None, **kwargs: Any) -> Task:
    """The task whose real system has this Gymnasium id (e.g. ``"Pendulum-v1"``)."""
    for factory in _TASKS.values():
        if getattr(factory, "real_env_id", None) == env_id:
            return factory(**kwargs)
    known = sorted(getattr(f, "real_env_id", "?") for f in _TASKS.values())
    raise ValueError(
        f"no task has the real env id {env_id!r}; known ids: {', '.join(known)}. "
        "Pass a Task or a task name instead."
    )


def model_task(model: Any) -> Task | None:
    """The task whose :meth:`Task.make_prior` made ``model``'s prior (a HybridODE's, or an
    Ensemble's first member's), or None where the model has no such prior."""
    members = getattr(model, "members", None)
    first = members[0] if members is not None and len(members) else model
    spec = getattr(getattr(first, "prior", None), "rebuild_spec", None)
    if not isinstance(spec, dict) or spec.get("builder") != "task":
        return None
    return get_task(spec["task"], **spec.get("task_kwargs", {}))


def _rebuild_task_prior(spec: dict[str, Any]) -> PhysicsPrior:
    return get_task(spec["task"], **spec.get("task_kwargs", {})).make_prior(perturbation=0.0)


register_prior_builder("task", _rebuild_task_prior)
