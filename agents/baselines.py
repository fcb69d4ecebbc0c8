"""Hand-made controllers: the baselines a learned controller has to beat.

Each has SB3's ``predict(obs, state=None, episode_start=None, deterministic=True)`` signature
and accepts one observation (obs_dim,) or a batch (B x obs_dim).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from hybridgym.envs import DataCenterTask, LotkaVolterraTask, Task
from hybridgym.envs.systems.datacenter import MAX_INLET
from hybridgym.envs.systems.lotka_volterra import TARGET


class _Controller:
    """Shared predict(): batch the observation, call ``_act``, unbatch."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.observation_space = task.observation_space
        self.action_space = task.action_space

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        batch, single = self.task.observation_batch(observation)
        actions = self.task.clip_action(self._act(batch.astype(np.float64))).astype(np.float32)
        return (actions[0] if single else actions), None

    def _act(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ConstantController(_Controller):
    """Always the same action, e.g. zeros: no harvesting, no cooling."""

    def __init__(self, task: Task, action: float | np.ndarray = 0.0) -> None:
        super().__init__(task)
        self.action = np.broadcast_to(np.asarray(action, dtype=np.float64), (task.action_dim,))

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.action, (obs.shape[0], self.task.action_dim)).copy()


class RandomController(_Controller):
    """Uniform random actions from the task's action space (seeded)."""

    def __init__(self, task: Task, seed: int | None = None) -> None:
        super().__init__(task)
        self.rng = np.random.default_rng(seed)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        space: spaces.Box = self.action_space
        return self.rng.uniform(space.low, space.high, (obs.shape[0], *space.shape))


class HarvestThresholdController(_Controller):
    """Lotka-Volterra: harvest a species in proportion to how far it is above the target.

    u_i = clip(gain (x_i - x_i*) / x_i*, 0, 1). Harvesting prey above delta/gamma or predators
    above alpha/beta lowers the Lotka-Volterra energy, so the cycle shrinks towards the target.
    """

    def __init__(self, task: LotkaVolterraTask, gain: float = 2.0) -> None:
        super().__init__(task)
        self.gain = gain

    def _act(self, obs: np.ndarray) -> np.ndarray:
        x = self.task.obs_to_state(obs)
        target = np.asarray(TARGET)
        return self.gain * (x - target) / target


class ThermostatController(_Controller):
    """Data center: proportional thermostat per zone, u_i = clip(gain (T_i - setpoint), 0, 1)."""

    def __init__(
        self, task: DataCenterTask, setpoint: float = MAX_INLET - 2.5, gain: float = 0.1
    ) -> None:
        super().__init__(task)
        self.setpoint = setpoint
        self.gain = gain

    def _act(self, obs: np.ndarray) -> np.ndarray:
        temps = self.task.obs_to_state(obs)[:, : self.task.num_zones]
        return self.gain * (temps - self.setpoint)


def hand_made_baseline(task: Task) -> _Controller:
    """The task's sensible hand-made controller (zero action where there is none)."""
    if isinstance(task, LotkaVolterraTask):
        return HarvestThresholdController(task)
    if isinstance(task, DataCenterTask):
        return ThermostatController(task)
    return ConstantController(task, 0.0)
