"""Gymnasium's ``Pendulum-v1``: its task (reward, maps, start states) and its textbook prior.

The real system is Gymnasium's own environment; this module reproduces its formulas in batched
form, and a test proves the two agree transition by transition.

Pendulum-v1 is a discrete map, not an ODE: semi-implicit Euler with dt = 0.05 s,
``thdot' = clip(thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, -8, 8)``, ``th' = th + thdot' dt``,
with g = 10, m = l = 1 and the torque clipped to [-2, 2]. The angle is 0 upright.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.task import Task, get_task, register_task
from hybridgym.models import FitConfig, HybridODE, MLPResidual, PhysicsPrior
from hybridgym.models.arrays import Array, array_namespace, uniform, wrap_angle

# Gymnasium's constants (gymnasium/envs/classic_control/pendulum.py).
GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
#: theta'' = A sin(theta) + B u, the continuous-time textbook model behind the map
GRAVITY_TERM = 3.0 * GRAVITY / (2.0 * LENGTH)  # 15.0
TORQUE_GAIN = 3.0 / (MASS * LENGTH**2)  # 3.0


def pendulum_vector_field(x: Array, u: Array, a: Array | float, b: Array | float) -> Array:
    """Textbook pendulum, x = (theta, thetadot), theta'' = a sin(theta) + b u; B x 2."""
    xp = array_namespace(x)
    return xp.stack([x[..., 1], a * xp.sin(x[..., 0]) + b * u[..., 0]], -1)


#: the fit that identifies a and b from one random 200-step episode, with the model of
#: :func:`identifiability_model`: benchmarks/pendulum_identifiability.py
IDENTIFIABILITY_FIT = FitConfig(
    horizon=10,
    iterations=2_000,
    learning_rate=3e-3,
    curriculum=0.3,
    residual_penalty=0.1,
    lbfgs_iterations=100,
    batch_size=None,
    physics_first=False,
    progress=False,
)


class PendulumPrior(PhysicsPrior):
    """theta'' = a sin(theta) + b u with learnable a (true 15.0) and b (true 3.0), both > 0,
    and Gymnasium's documented speed limit |thetadot| <= 8 rad/s (a hard limit, enforced by
    :class:`~hybridgym.models.HybridODE` at the end of every step).

    This is the textbook ODE; it does not know Gymnasium's discretisation (semi-implicit
    Euler), which is what a residual on both state derivatives absorbs.
    """

    def __init__(self, a: float = GRAVITY_TERM, b: float = TORQUE_GAIN) -> None:
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("a", a, positive=True)
        self.add_constant("b", b, positive=True)
        self.limit_state(1, -MAX_SPEED, MAX_SPEED)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        return pendulum_vector_field(x, u, c["a"], c["b"])


def identifiability_model(prior: PhysicsPrior | None = None) -> HybridODE:
    """The hybrid model that identifies a and b with :data:`IDENTIFIABILITY_FIT`.

    ``prior`` (default: the task's prior, 50% low) plus a 32x32 ReLU residual on both state
    derivatives (angle fed as sin/cos), stepped with explicit Euler at the env's dt. Pendulum-v1
    is itself an explicit one-step map, so under Euler the residual it needs is simple
    (dtheta/dt gains dt * theta'', the semi-implicit part); with rk4 the residual has to undo
    the extra stages, and from one episode it extrapolates worse (held-out 10-step RMSE
    0.018-0.029 rad against 0.005-0.011 with Euler). ReLU extrapolates linearly where tanh
    saturates.
    """
    if prior is None:
        prior = get_task("pendulum").make_prior()
    residual = MLPResidual(2, 1, hidden=(32, 32), activation="relu", angle_dims=(0,))
    return HybridODE(prior, residual, dt=DT, method="euler")


class PendulumTask(Task):
    """Swing up and balance Gymnasium's ``Pendulum-v1``.

    | state | name     | unit  |     | observation | name     |
    |-------|----------|-------|-----|-------------|----------|
    | 0     | theta    | rad (0 upright, unwrapped) | | 0 | cos(theta) |
    | 1     | thetadot | rad/s |     | 1 / 2       | sin(theta), thetadot |

    Action: torque in [-2, 2] N m. Reward: ``-(angle_normalize(theta)^2 + 0.1 thetadot^2 +
    0.001 u^2)`` on the state before the step. Start: theta ~ U(-pi, pi), thetadot ~ U(-1, 1).
    200 steps, never terminates. Time unit: seconds. Prior default perturbation: 0.5
    (a and b start 50% low).
    """

    name: ClassVar[str] = "pendulum"
    real_env_id: ClassVar[str] = "Pendulum-v1"
    dt: ClassVar[float] = DT
    max_episode_steps: ClassVar[int] = 200
    time_unit: ClassVar[str] = "s"
    angle_dims: ClassVar[tuple[int, ...]] = (0,)
    return_threshold: ClassVar[float | None] = -200.0
    summary: ClassVar[str] = (
        "theta'' = 15 sin(theta) + 3 u (semi-implicit Euler map, speed clipped to 8)"
    )
    default_perturbation: ClassVar[float] = 0.5

    state_names = ("theta", "thetadot")
    action_names = ("torque",)

    @property
    def observation_space(self) -> spaces.Box:
        high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32)

    @property
    def action_space(self) -> spaces.Box:
        return spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32)

    def obs_to_state(self, obs: Array) -> Array:
        xp = array_namespace(obs)
        return xp.stack([xp.arctan2(obs[..., 1], obs[..., 0]), obs[..., 2]], -1)

    def state_to_obs(self, state: Array) -> Array:
        xp = array_namespace(state)
        theta = state[..., 0]
        return xp.stack([xp.cos(theta), xp.sin(theta), state[..., 1]], -1)

    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        u = self.clip_action(action)[..., 0]
        theta, thetadot = state[..., 0], state[..., 1]
        return -(wrap_angle(theta) ** 2 + 0.1 * thetadot**2 + 0.001 * u**2)

    def true_step(self, state: Array, action: Array) -> Array:
        """Gymnasium's semi-implicit Euler map, batched."""
        xp = array_namespace(state)
        u = self.clip_action(action)[..., 0]
        theta, thetadot = state[..., 0], state[..., 1]
        accel = GRAVITY_TERM * xp.sin(theta) + TORQUE_GAIN * u
        new_thetadot = xp.clip(thetadot + accel * DT, -MAX_SPEED, MAX_SPEED)
        return xp.stack([theta + new_thetadot * DT, new_thetadot], -1)

    def sample_initial_states(self, n, generator=None, *, dtype=torch.float32, device=None):
        high = np.array([np.pi, 1.0])
        return uniform(n, -high, high, generator, dtype=dtype, device=device)

    def _make_prior(self, scale: float) -> PendulumPrior:
        return PendulumPrior(a=GRAVITY_TERM * scale, b=TORQUE_GAIN * scale)


register_task(PendulumTask.name, PendulumTask)
