"""Vectorised learned environments: an SB3 ``VecEnv`` and a Gymnasium ``VectorEnv``, both
stepping all N environments as one tensor computation (:class:`LearnedCore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env import VecEnv

from hybridgym.envs.learned import LearnedCore
from hybridgym.envs.task import Task


class LearnedVecEnv(VecEnv):
    """N learned environments as a stable-baselines3 ``VecEnv``.

    Follows SB3's conventions: same-step autoreset, ``infos[i]["terminal_observation"]`` and
    ``infos[i]["TimeLimit.truncated"]`` for finished episodes, seeding through ``seed()``
    (environment i gets seed + i, as N separate ``LearnedEnv`` reset with those seeds).
    Numpy crosses the boundary once per step for the whole batch and each way: the actions
    go to the device in one copy (from a pinned buffer, without waiting, on a GPU) and the
    step's results come back in one copy (:meth:`StepResult.numpy`); environments whose
    episode ended are reset on the host and their first observations made there, so a step
    reads the device once. Each info also carries ``model_diverged`` for a finished episode
    whose model state exploded.

    Arguments are those of :class:`LearnedCore`. Attributes are shared by all environments:
    ``get_attr`` returns the shared value for each index, ``set_attr`` sets it for all.
    """

    def __init__(self, model: Any, task: Task | str, num_envs: int, **kwargs: Any) -> None:
        self.core = LearnedCore(model, task, num_envs, **kwargs)
        self.task = self.core.task
        self.model = self.core.model
        self.render_mode = None
        super().__init__(num_envs, self.task.observation_space, self.task.action_space)
        # page-locked on a GPU, so the host->device copy of the actions need not wait; it is
        # rewritten only in step_async, after step_wait's read of the device has finished it
        self._actions = torch.zeros(
            num_envs, self.task.action_dim, pin_memory=self.core.device.type == "cuda"
        )

    def reset(self) -> np.ndarray:
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self.core.seed(i, seed)
        self._reset_seeds()
        self._reset_options()
        self.core.reset_envs(np.arange(self.num_envs))
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.core.observe().cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        if actions.shape[1] != self.task.action_dim:
            raise ValueError(
                f"actions must be ({self.num_envs}, {self.task.action_dim}), got {actions.shape}"
            )
        _check_finite(actions)
        self._actions.copy_(torch.from_numpy(actions))

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        result = self.core.step(self._actions).numpy()  # the one device->host copy
        obs = result.obs
        rewards = np.asarray(result.reward, dtype=np.float32)
        terminated, truncated = result.terminated, result.truncated
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(dones)
        if finished.size:
            for i in finished:
                infos[i] = {
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                    "model_diverged": bool(result.diverged[i]),
                }
            starts = self.core.reset_envs(finished)
            first = self.core.observe(torch.from_numpy(starts).to(self.core.dtype))
            obs[finished] = first.numpy()  # made on the host, from the states just drawn
        return obs, rewards, dones, infos

    def close(self) -> None:
        return None

    def _indices(self, indices: Any) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        if sorted(self._indices(indices)) != list(range(self.num_envs)):
            raise ValueError(
                "the environments of a LearnedVecEnv share their attributes; set_attr applies "
                "to all of them (indices=None)"
            )
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


class LearnedVectorEnv(VectorEnv):
    """N learned environments as a Gymnasium ``VectorEnv`` with ``NEXT_STEP`` autoreset.

    An environment whose episode ended is reset on the following ``step`` call (its action is
    ignored, reward 0, not terminated, not truncated). ``reset(seed=s)`` seeds environment i
    with s + i; a list gives each its own seed. Arguments are those of :class:`LearnedCore`.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def __init__(self, model: Any, task: Task | str, num_envs: int = 1, **kwargs: Any) -> None:
        self.core = LearnedCore(model, task, num_envs, **kwargs)
        self.task = self.core.task
        self.num_envs = num_envs
        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)  # on the host: which to reset
        self._hold: torch.Tensor | None = None  # the same on the device: which to hold

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}")
        seeds = _seeds(seed, self.num_envs)
        for i, s in enumerate(seeds):
            if s is not None or seed is not None:
                self.core.seed(i, s)
        self.core.reset_envs(np.arange(self.num_envs))
        self._autoreset[:] = False
        self._hold = None
        return self.core.observe().cpu().numpy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions, dtype=np.float32)
        _check_finite(actions)
        actions = torch.as_tensor(actions).reshape(self.num_envs, -1)
        self.core.reset_envs(np.flatnonzero(self._autoreset))  # NEXT_STEP: they restart now
        step = self.core.step(actions, hold=self._hold)
        self._hold = step.terminated | step.truncated  # stays on the device
        result = step.numpy()  # the one device->host copy
        self._autoreset = result.terminated | result.truncated
        infos = {"model_diverged": result.diverged}
        return result.obs, result.reward, result.terminated, result.truncated, infos


def _check_finite(actions: np.ndarray) -> None:
    """The one rule of every learned env (LearnedEnv, LearnedVecEnv, LearnedVectorEnv): a
    non-finite action is the caller's bug and raises, naming the environments (checked on the
    host, before anything reaches the device)."""
    if not np.isfinite(actions).all():
        rows = np.flatnonzero(~np.isfinite(actions.reshape(len(actions), -1)).all(-1))
        raise ValueError(
            f"actions must be finite; environments {rows[:8].tolist()} got "
            f"{actions[rows[:2]].tolist()}"
        )


def _seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed must be an int or a list of {n} seeds, got {len(seeds)} seeds")
    return seeds
