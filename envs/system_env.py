"""The real environments of hybridgym's own systems share this base class.

Each step integrates the task's true vector field over one control interval (numpy float64,
fixed-step with substeps), then asks the task for reward and termination: the env itself holds
no physics and no reward formula.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from hybridgym.envs.task import Task


class SystemEnv(gym.Env[np.ndarray, np.ndarray]):
    """A real system whose physics, reward and termination come from its :class:`Task`.

    ``reset(options={"state": s})`` starts from a given physical state instead of sampling one.
    The current physical state (float64, shape n) is readable as :attr:`state`.
    Out-of-range actions are clipped to the action space; non-finite actions raise ValueError.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.observation_space = task.observation_space
        self.action_space = task.action_space
        self._state = np.full(task.state_dim, np.nan)
        self._needs_reset = True

    @property
    def state(self) -> np.ndarray:
        """A copy of the current physical state, shape (n,), float64."""
        return self._state.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = self.task.start_state_option(options)
        if start is None:
            self._state = self.task.sample_initial_states(1, self.np_random)[0]
        else:
            self._state = start
        self._needs_reset = False
        return self._observe(self._state[None])[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("call reset() before step()")
        u = np.asarray(action, dtype=np.float64)
        if u.size != self.task.action_dim:
            raise ValueError(
                f"action must have shape {self.action_space.shape} ({self.task.action_names}), "
                f"got shape {np.shape(action)}"
            )
        u = u.reshape(self.action_space.shape)
        if not np.all(np.isfinite(u)):
            raise ValueError(f"action must be finite, got {action!r}")
        x = self._state[None]
        u = self.task.clip_action(u[None])
        x_next = self._transition(x, u)
        reward = float(self.task.reward(x, u, x_next)[0])
        terminated = bool(self.task.terminated(x_next)[0])
        self._state = x_next[0]
        self._needs_reset = terminated
        return self._observe(x_next)[0], reward, terminated, False, {}

    # Hooks for the stochastic parts of a real system (noise the learned models do not see).
    def _transition(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Next state, 1 x n. Default: the task's deterministic true step."""
        return self.task.true_step(x, u)

    def _observe(self, x: np.ndarray) -> np.ndarray:
        """Observation of states (1 x n) as float32 (1 x obs_dim). Default: noise-free."""
        return self.task.state_to_obs(x).astype(np.float32)
