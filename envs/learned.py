"""A fitted model served as an environment: the batched core shared by ``LearnedEnv`` (a
``gymnasium.Env``), ``LearnedVecEnv`` (an SB3 ``VecEnv``) and ``LearnedVectorEnv`` (a Gymnasium
``VectorEnv``).

All N environments step as one tensor computation: the model integrates one control interval
for the whole batch, the task maps states to observations and gives rewards and termination.
Randomness (start states, ensemble members) comes from one numpy generator per environment,
so N batched environments reproduce N separate ``LearnedEnv`` seeded the same way.

Devices: :meth:`LearnedCore.step` is torch-native. With the actions already on the core's
device it copies nothing between host and device and never waits for the device (no
``.item()``, no ``.cpu()``, no Python branch on a tensor value), so on a GPU steps queue up
asynchronously. Host work happens only at the edges: a reset draws start states on the host
(one host->device copy per reset call), and the Gymnasium / SB3 front ends read a step's
results with :meth:`StepResult.numpy` (one device->host copy per step).
"""

from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding

from hybridgym.envs.task import Task, get_task, model_task
from hybridgym.models import Ensemble, HybridODE
from hybridgym.models.hybrid import read_checkpoint

START_MODES = ("task", "dataset")
ENSEMBLE_MODES = ("random", "mean")


class SteppableModel(Protocol):
    """Anything that steps a batch of states one control interval (a HybridODE, an exact
    "oracle" model in tests, ...)."""

    state_dim: int
    action_dim: int
    dt: float

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor: ...


def load_model(model: Any, device: str | torch.device = "cpu") -> Any:
    """A model as given, or loaded from a HybridODE or Ensemble checkpoint path."""
    if not isinstance(model, str | os.PathLike):
        return model
    path = pathlib.Path(model)
    try:
        return HybridODE.load(path, map_location=device)
    except ValueError as err:
        if "hybridgym.Ensemble" not in str(err):
            raise
    read_checkpoint(path, "hybridgym.Ensemble", device)  # clear error if it is neither
    return Ensemble.load(path, map_location=device)


@dataclass
class HostStepResult:
    """One batched step on the host (numpy arrays, leading dimension N): observations, rewards
    and disagreement in the model's precision, the four flags as bool."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    diverged: np.ndarray
    uncertain: np.ndarray
    disagreement: np.ndarray


_FLAGS = ("terminated", "truncated", "diverged", "uncertain")


@dataclass
class StepResult:
    """One batched step (all tensors have leading dimension N, on the core's device)."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    diverged: torch.Tensor
    uncertain: torch.Tensor
    disagreement: torch.Tensor

    def numpy(self) -> HostStepResult:
        """The step on the host: from an accelerator in one device->host copy (every field
        packed into one tensor first, :func:`packed_numpy`); on the CPU the arrays share the
        tensors' memory."""
        if self.obs.device.type != "cpu":
            return packed_numpy(self)
        return HostStepResult(
            obs=self.obs.numpy(),
            reward=self.reward.numpy(),
            disagreement=self.disagreement.numpy(),
            **{name: getattr(self, name).numpy() for name in _FLAGS},
        )


def packed_numpy(result: StepResult) -> HostStepResult:
    """``result`` on the host through one copy: the fields are concatenated into one N x k
    tensor of their common precision (flags as 0/1, exact), moved with a single ``.cpu()``
    and split again into arrays of each field's own dtype."""
    n = result.obs.shape[0]
    dtype = torch.promote_types(result.obs.dtype, result.reward.dtype)
    dtype = torch.promote_types(dtype, result.disagreement.dtype)
    columns = [result.obs.reshape(n, -1), result.reward[:, None], result.disagreement[:, None]]
    columns += [getattr(result, name)[:, None] for name in _FLAGS]
    packed = torch.cat([c.to(dtype) for c in columns], dim=1).cpu().numpy()
    k = columns[0].shape[1]
    return HostStepResult(
        obs=np.ascontiguousarray(packed[:, :k], dtype=_numpy_dtype(result.obs.dtype)),
        reward=packed[:, k].astype(_numpy_dtype(result.reward.dtype)),
        disagreement=packed[:, k + 1].astype(_numpy_dtype(result.disagreement.dtype)),
        **{name: packed[:, k + 2 + i] != 0 for i, name in enumerate(_FLAGS)},
    )


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


class LearnedCore:
    """N environments of a learned model as tensors.

    Args:
        model: a HybridODE, an Ensemble, anything with ``step(x, u)`` (see
            :class:`SteppableModel`), or a checkpoint path.
        task: a Task or its name (reward, termination, maps, start states).
        num_envs: N.
        start: ``"task"`` (the task's start-state sampler) or ``"dataset"`` (states drawn
            uniformly from ``dataset``: MBPO-style branching from real data).
        dataset: a TrajectoryDataset of the task (for ``start="dataset"``).
        ensemble_mode: with an Ensemble, ``"random"`` (one member per episode) or ``"mean"``.
        uncertainty_penalty: subtracted from the reward times the members' disagreement.
        uncertainty_cutoff: truncate an episode when the disagreement exceeds it.
        max_episode_steps: truncation length; None uses the task's.
        divergence_threshold: a state with a non-finite or larger entry ends the episode.
        device, dtype: where and in which precision the model runs.

    Attributes:
        states, elapsed, members: per-environment tensors on ``device`` (N x n, N, N).
        done: bool tensor (N) on ``device``: the episode ended and the environment was not
            reset since. Updated by :meth:`step` on the device; :attr:`needs_reset` reads it.
        started: bool numpy array (N): the environment has been reset (or set) at least once.
    """

    def __init__(
        self,
        model: Any,
        task: Task | str,
        num_envs: int,
        *,
        start: str = "task",
        dataset: Any = None,
        ensemble_mode: str = "random",
        uncertainty_penalty: float = 0.0,
        uncertainty_cutoff: float | None = None,
        max_episode_steps: int | None = None,
        divergence_threshold: float = 1e6,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.task = get_task(task)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = load_model(model, self.device)
        if isinstance(self.model, torch.nn.Module):
            self.model = self.model.to(device=self.device, dtype=dtype).eval()
        check_model(self.model, self.task)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
        if ensemble_mode not in ENSEMBLE_MODES:
            raise ValueError(
                f"ensemble_mode must be one of {ENSEMBLE_MODES}, got {ensemble_mode!r}"
            )
        if not uncertainty_penalty >= 0:
            raise ValueError(f"uncertainty_penalty must be >= 0, got {uncertainty_penalty!r}")
        if uncertainty_cutoff is not None and not uncertainty_cutoff > 0:
            raise ValueError(f"uncertainty_cutoff must be > 0 or None, got {uncertainty_cutoff!r}")
        steps = self.task.max_episode_steps if max_episode_steps is None else max_episode_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        self.num_envs = num_envs
        self.start = start
        self.ensemble_mode = ensemble_mode
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.uncertainty_cutoff = uncertainty_cutoff
        self.max_episode_steps = steps
        self.divergence_threshold = float(divergence_threshold)
        self.start_pool = self._start_pool(dataset) if start == "dataset" else None
        self.num_members = self.model.num_members if isinstance(self.model, Ensemble) else 1
        self.rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        n = self.task.state_dim
        self.states = torch.zeros(num_envs, n, device=self.device, dtype=dtype)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.members = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.arange = torch.arange(num_envs, device=self.device)
        space = self.task.observation_space
        self.obs_low = torch.as_tensor(space.low, device=self.device, dtype=dtype)
        self.obs_high = torch.as_tensor(space.high, device=self.device, dtype=dtype)
        #: the bounds on the host too: observations of fresh start states are made there
        self._host_obs_bounds = (
            torch.as_tensor(space.low, dtype=dtype),
            torch.as_tensor(space.high, dtype=dtype),
        )
        actions = self.task.action_space
        self.action_low = torch.as_tensor(actions.low, device=self.device, dtype=dtype)
        self.action_high = torch.as_tensor(actions.high, device=self.device, dtype=dtype)
        self.done = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.started = np.zeros(num_envs, dtype=bool)

    @property
    def needs_reset(self) -> np.ndarray:
        """Bool (N): environments that must be reset before they step on (never started, or
        their episode ended). Reading it copies :attr:`done` to the host, which waits for
        the device; :meth:`step` never reads it."""
        return ~self.started | self.done.cpu().numpy()

    def _start_pool(self, dataset: Any) -> np.ndarray:
        if dataset is None:
            raise ValueError('start="dataset" needs dataset= (a TrajectoryDataset of the task)')
        states = np.asarray(dataset.states(), dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.task.state_dim or len(states) == 0:
            raise ValueError(
                f"dataset states must be N x {self.task.state_dim} ({self.task.state_names}), "
                f"got shape {states.shape}"
            )
        return states  # numpy: drawn on the reset path, which builds numpy start states

    def seed(self, index: int, seed: int | None) -> None:
        """Reseed environment ``index``'s generator (None: fresh entropy)."""
        self.rngs[index] = seeding.np_random(seed)[0]

    @torch.inference_mode()
    def reset_envs(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """New episodes for these environments: start states and ensemble members.

        Draws from each environment's own generator (a loop over the resetting environments
        only; steps have no per-environment Python work), then writes indices, states and
        members to the device in one host->device copy.

        Returns:
            The start states drawn, k x n float64 (on the host, so a front end can make
            their observations without reading the device).
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return np.empty((0, self.task.state_dim))
        starts = np.empty((indices.size, self.task.state_dim))
        members = np.zeros(indices.size, dtype=np.int64)
        for k, i in enumerate(indices):
            rng = self.rngs[i]
            if self.start_pool is None:
                starts[k] = self.task.sample_initial_states(1, rng)[0]
            else:
                starts[k] = self.start_pool[rng.integers(len(self.start_pool))]
            if self.num_members > 1 and self.ensemble_mode == "random":
                members[k] = rng.integers(self.num_members)
        # indices and members are exact in float64; one copy carries everything
        packed = np.concatenate([indices[:, None], members[:, None], starts], axis=1)
        packed = torch.from_numpy(packed).to(self.device, non_blocking=True)
        idx = packed[:, 0].long()
        self.states[idx] = packed[:, 2:].to(self.dtype)
        self.members[idx] = packed[:, 1].long()
        self.elapsed[idx] = 0
        self.done[idx] = False
        self.started[indices] = True
        return starts

    @torch.inference_mode()
    def set_states(self, indices: np.ndarray | list[int], states: Any) -> None:
        """Start these environments from given physical states (k x n)."""
        indices = np.asarray(indices, dtype=np.int64)
        values = torch.as_tensor(np.asarray(states, dtype=np.float64), dtype=self.dtype)
        if values.shape != (indices.size, self.task.state_dim) or not torch.isfinite(values).all():
            raise ValueError(
                f"states must be a finite array of shape ({indices.size}, {self.task.state_dim})"
                f" ({self.task.state_names}), got {tuple(values.shape)}"
            )
        idx = torch.as_tensor(indices, device=self.device)
        self.states[idx] = values.to(self.device)
        self.elapsed[idx] = 0
        self.done[idx] = False
        self.started[indices] = True

    @torch.inference_mode()
    def observe(self, states: torch.Tensor | None = None) -> torch.Tensor:
        """Observations of the states (default: the current ones), clipped to the space.

        Computed where ``states`` are: states on the host (e.g. fresh start states from
        :meth:`reset_envs`) give observations on the host without touching the device.
        """
        states = self.states if states is None else states
        low, high = (
            (self.obs_low, self.obs_high)
            if states.device == self.obs_low.device
            else self._host_obs_bounds
        )
        obs = self.task.state_to_obs(states)
        obs = torch.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.minimum(torch.maximum(obs, low), high)

    @torch.inference_mode()
    def step(
        self, actions: torch.Tensor, hold: torch.Tensor | np.ndarray | None = None
    ) -> StepResult:
        """Step all N environments with actions (N x m); the states advance in place.

        Torch-native: with ``actions`` (and ``hold``) on the core's device nothing is copied
        between host and device and nothing waits for the device; the result stays there
        (:meth:`StepResult.numpy` brings it to the host in one copy). Episodes that end are
        marked in :attr:`done`; reset them with :meth:`reset_envs` (an environment stepped
        on after its end keeps stepping from its last state).

        ``hold`` (bool, N) marks environments that do not advance this call (a Gymnasium
        NEXT_STEP autoreset): their state stays, reward 0, neither terminated nor truncated.

        Raises:
            ResetNeeded: an environment was never reset (a host-side check).
        """
        if not self.started.all():
            raise ResetNeeded(
                f"environments {np.flatnonzero(~self.started)[:8].tolist()} need a reset"
            )
        x = self.states
        u = actions.to(device=self.device, dtype=self.dtype, non_blocking=True)
        u = torch.clamp(u, min=self.action_low, max=self.action_high)
        if isinstance(self.model, Ensemble):
            per_member = self.model.member_steps(x, u)
            if self.num_members > 1:
                disagreement = per_member.std(0).mean(-1)
            else:
                disagreement = torch.zeros_like(x[:, 0])
            if self.ensemble_mode == "mean":
                x_next = per_member.mean(0)
            else:
                x_next = per_member[self.members, self.arange]
        else:
            x_next = self.model.step(x, u)
            disagreement = torch.zeros_like(x[:, 0])
        # NaN compares False, so one comparison catches non-finite and exploding states;
        # the where runs whether or not any diverged (asking would wait for the device)
        diverged = ~(x_next.abs() <= self.divergence_threshold).all(-1)
        x_next = torch.where(diverged[:, None], x, x_next)
        reward = self.task.reward(x, u, x_next)
        if self.uncertainty_penalty:
            reward = reward - self.uncertainty_penalty * disagreement
        reward = torch.nan_to_num(reward, nan=0.0, posinf=0.0, neginf=0.0)
        terminated = self.task.terminated(x_next) & ~diverged
        uncertain = (
            disagreement > self.uncertainty_cutoff
            if self.uncertainty_cutoff is not None
            else torch.zeros_like(diverged)
        )
        moving = None if hold is None else ~self._device_mask(hold)
        if moving is not None:
            x_next = torch.where(moving[:, None], x_next, x)
            reward = torch.where(moving, reward, torch.zeros_like(reward))
            terminated, diverged, uncertain = (
                terminated & moving,
                diverged & moving,
                uncertain & moving,
            )
            self.elapsed += moving.long()
        else:
            self.elapsed += 1
        truncated = ((self.elapsed >= self.max_episode_steps) | diverged | uncertain) & ~terminated
        if moving is not None:
            truncated = truncated & moving
        self.states = x_next
        self.done = self.done | terminated | truncated
        return StepResult(
            obs=self.observe(x_next),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            diverged=diverged,
            uncertain=uncertain,
            disagreement=disagreement,
        )

    def _device_mask(self, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A bool mask (N) on the device: a tensor there is used as it is; a numpy array is
        copied without waiting (it is staged on the host at once)."""
        if not isinstance(mask, torch.Tensor):
            mask = torch.from_numpy(np.asarray(mask, dtype=bool))
        if mask.shape != (self.num_envs,):
            raise ValueError(f"hold must be a bool mask of shape ({self.num_envs},)")
        return mask.to(device=self.device, dtype=torch.bool, non_blocking=True)


def check_model(model: Any, task: Task) -> None:
    """Raise unless ``model`` steps states of ``task``: a ``TypeError`` for an object without
    ``state_dim``, ``action_dim``, ``dt`` and ``step``, a ``ValueError`` naming both sides for
    other dimensions, another control interval or a physics prior made by another task."""
    for attr in ("state_dim", "action_dim", "dt", "step"):
        if not hasattr(model, attr):
            raise TypeError(f"model must have {attr} (a HybridODE, an Ensemble or a checkpoint)")
    fitted_for = model_task(model)
    made = "" if fitted_for is None else f"; the model's prior is task {fitted_for.name!r}'s"
    if (model.state_dim, model.action_dim) != (task.state_dim, task.action_dim):
        raise ValueError(
            f"the model has {model.state_dim} states and {model.action_dim} actions, task "
            f"{task.name!r} has {task.state_dim} {task.state_names} and {task.action_dim}{made}"
        )
    if abs(model.dt - task.dt) > 1e-9 * max(1.0, task.dt):
        raise ValueError(
            f"the model's dt is {model.dt:g}, task {task.name!r} steps {task.dt:g}{made}"
        )
    if fitted_for is not None and fitted_for.name != task.name:
        raise ValueError(
            f"the model's physics prior is that of task {fitted_for.name!r}, but the task is "
            f"{task.name!r}; use a model fitted to {task.name!r} data or the task "
            f"{fitted_for.name!r}"
        )


class LearnedEnv(gym.Env[np.ndarray, np.ndarray]):
    """A fitted model as a Gymnasium environment of its task.

    Each step integrates the model over one control interval, maps the state to an
    observation with the task, and takes the reward and termination from the task. A
    non-finite or exploding model state ends the episode (truncation) with
    ``info["model_diverged"] = True`` and a finite observation; observations are clipped to
    the task's observation space. ``info["disagreement"]`` is the ensemble members' spread.
    ``reset(options={"state": s})`` starts from a given physical state.

    Arguments are those of :class:`LearnedCore` (without ``num_envs``).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, model: Any, task: Task | str, **kwargs: Any) -> None:
        super().__init__()
        self.core = LearnedCore(model, task, 1, **kwargs)
        self.task = self.core.task
        self.model = self.core.model
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self._episode_over = False

    @property
    def state(self) -> np.ndarray:
        """The current model state, shape (n,)."""
        return self.core.states[0].cpu().numpy().astype(np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = self.task.start_state_option(options)
        self.core.rngs[0] = self.np_random
        if start is None:
            self.core.reset_envs([0])
        else:
            self.core.set_states([0], start[None])
        self._episode_over = False
        return self.core.observe()[0].cpu().numpy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        u = np.asarray(action, dtype=np.float32)
        if u.size != self.task.action_dim or not np.all(np.isfinite(u)):
            raise ValueError(
                f"action must be finite with shape {self.action_space.shape}, got {action!r}"
            )
        if self._episode_over:
            raise ResetNeeded("the episode has ended; call reset() before step()")
        result = self.core.step(torch.as_tensor(u.reshape(1, -1))).numpy()  # one copy
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        self._episode_over = terminated or truncated
        info = {
            "model_diverged": bool(result.diverged[0]),
            "disagreement": float(result.disagreement[0]),
        }
        if result.uncertain[0]:
            info["uncertainty_cutoff"] = True
        return result.obs[0].copy(), float(result.reward[0]), terminated, truncated, info
