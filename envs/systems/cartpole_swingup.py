"""``hybridgym/CartPoleSwingUp-v0``: swing a pole up from hanging and balance it, with friction
the textbook model does not know."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.system_env import SystemEnv
from hybridgym.envs.task import Task, register_task
from hybridgym.models import MLPResidual, PhysicsPrior, register_residual
from hybridgym.models.arrays import Array, array_namespace, uniform, wrap_angle

GRAVITY = 9.81  # m/s^2
CART_MASS = 1.0  # kg
POLE_MASS = 0.1  # kg
HALF_LENGTH = 0.5  # m (the pole is 1 m long; uniform rod)
FORCE_MAG = 10.0  # N at |u| = 1
# Friction (truth only, the missing physics).
CART_VISCOUS = 1.0  # N s/m
CART_COULOMB = 0.5  # N, smoothed with tanh(xdot / COULOMB_SPEED)
COULOMB_SPEED = 0.05  # m/s
JOINT_VISCOUS = 0.02  # N m s
TRACK_LIMIT = 2.4  # m
VELOCITIES = (1, 3)  # state dimensions xdot, thetadot
#: m, width of the Gaussian reward on the tip distance: 2 sigma^2 = (pole length)^2, PETS's
#: exp(-d^2 / l^2) (a width of 0.5 m left a 1.5 s planning horizon no signal from hanging)
REWARD_WIDTH = 2.0**-0.5
ACTION_COST = 0.01
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_zero(value: Array | float) -> bool:
    return isinstance(value, int | float) and value == 0


def cartpole_vector_field(
    x: Array,
    u: Array,
    cart_mass: Array | float = CART_MASS,
    pole_mass: Array | float = POLE_MASS,
    half_length: Array | float = HALF_LENGTH,
    force_mag: Array | float = FORCE_MAG,
    cart_viscous: Array | float = CART_VISCOUS,
    cart_coulomb: Array | float = CART_COULOMB,
    joint_viscous: Array | float = JOINT_VISCOUS,
) -> Array:
    """Cart-pole (uniform rod, theta = 0 upright) with cart and joint friction; B x 4.

    State x = (x, xdot, theta, thetadot), action u in [-1, 1] (force = force_mag u). From the
    Lagrangian, with F_f = -(b_c xdot + f_c tanh(xdot / 0.05)) and joint torque -b_p thetadot:
    ```
    (M + m) xdd + m l cos(th) thdd = F + F_f + m l thd^2 sin(th)
    m l cos(th) xdd + (4/3) m l^2 thdd = m g l sin(th) - b_p thd
    ```
    """
    xp = array_namespace(x)
    xdot, theta, thetadot = x[..., 1], x[..., 2], x[..., 3]
    sin, cos = xp.sin(theta), xp.cos(theta)
    ml = pole_mass * half_length
    b_cart = force_mag * u[..., 0] + ml * thetadot**2 * sin
    b_pole = ml * GRAVITY * sin
    # friction terms; skipped when exactly zero (the prior), which saves ops in planning loops
    if not _is_zero(cart_viscous):
        b_cart = b_cart - cart_viscous * xdot
    if not _is_zero(cart_coulomb):
        b_cart = b_cart - cart_coulomb * xp.tanh(xdot / COULOMB_SPEED)
    if not _is_zero(joint_viscous):
        b_pole = b_pole - joint_viscous * thetadot
    xdd, thdd = cartpole_accelerations(cos, b_cart, b_pole, cart_mass, pole_mass, half_length)
    return xp.stack([xdot, xdd, thetadot, thdd], -1)


def cartpole_accelerations(
    cos: Array,
    cart_force: Array,
    pole_torque: Array,
    cart_mass: Array | float = CART_MASS,
    pole_mass: Array | float = POLE_MASS,
    half_length: Array | float = HALF_LENGTH,
) -> tuple[Array, Array]:
    """(xdd, thdd) from the generalised forces on the cart (N) and the pole (N m): the
    cart-pole's 2 x 2 mass matrix at cos(theta) = ``cos``, solved in closed form."""
    ml = pole_mass * half_length
    inertia = (4.0 / 3.0) * ml * half_length
    ml_cos = ml * cos
    det = (cart_mass + pole_mass) * inertia - ml_cos**2
    xdd = (inertia * cart_force - ml_cos * pole_torque) / det
    thdd = ((cart_mass + pole_mass) * pole_torque - ml_cos * cart_force) / det
    return xdd, thdd


class CartPolePrior(PhysicsPrior):
    """Frictionless textbook cart-pole with learnable masses and half-length (all > 0).

    Missing physics: viscous and Coulomb friction on the cart and viscous joint friction.
    """

    def __init__(
        self,
        cart_mass: float = CART_MASS,
        pole_mass: float = POLE_MASS,
        half_length: float = HALF_LENGTH,
    ) -> None:
        super().__init__(state_dim=4, action_dim=1)
        self.add_constant("cart_mass", cart_mass, positive=True)
        self.add_constant("pole_mass", pole_mass, positive=True)
        self.add_constant("half_length", half_length, positive=True)
        self.add_constant("force_mag", FORCE_MAG, learnable=False)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        return cartpole_vector_field(
            x,
            u,
            cart_mass=c["cart_mass"],
            pole_mass=c["pole_mass"],
            half_length=c["half_length"],
            force_mag=c["force_mag"],
            cart_viscous=0.0,
            cart_coulomb=0.0,
            joint_viscous=0.0,
        )


class CartPoleForceResidual(MLPResidual):
    """The missing physics as generalised forces: a network of the velocities gives a force
    on the cart and a torque on the pole, and the cart-pole's mass matrix turns them into
    accelerations (B x 4 out, zero on the kinematic rows x and theta).

    Friction of any kind enters a mechanical system this way: as forces that depend on the
    velocities, whose effect on the accelerations depends on the pose through the mass matrix
    (a cart force tips the pole one way when it hangs and the other way when it stands). A
    whole-state network must learn that coupling from data and extrapolates it badly to poses
    it has seen little of, such as upright right after the first swing-up; here it is given.
    The mass matrix uses the constants passed in (the prior's starting values: its learned
    constants move during fits, the network's output scale absorbs the difference).

    Args:
        hidden, activation: the network, as :class:`~hybridgym.models.MLPResidual`.
        cart_mass, pole_mass, half_length: the mass matrix's constants (kg, kg, m; > 0).
    """

    network_outputs = 2  # (xdot, thetadot) in, (cart force, pole torque) out

    def __init__(
        self,
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
        cart_mass: float = CART_MASS,
        pole_mass: float = POLE_MASS,
        half_length: float = HALF_LENGTH,
    ) -> None:
        super().__init__(4, 0, hidden=hidden, activation=activation, input_dims=VELOCITIES)
        for name, value in (
            ("cart_mass", cart_mass),
            ("pole_mass", pole_mass),
            ("half_length", half_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        self.cart_mass, self.pole_mass, self.half_length = (
            float(cart_mass),
            float(pole_mass),
            float(half_length),
        )
        self.register_buffer("dxdt_scale", torch.ones(4))
        # the mass matrix [[M + m, ml cos], [ml cos, I]] has determinant (M + m) I - (ml cos)^2
        # and inverse [[I, -ml cos], [-ml cos, M + m]] / det: precomputed parts of it
        ml = self.pole_mass * self.half_length
        inertia = (4.0 / 3.0) * ml * self.half_length
        self._ml = ml
        self.register_buffer("_det_at_zero", torch.tensor((cart_mass + pole_mass) * inertia))
        self.register_buffer("_diagonal", torch.tensor([inertia, cart_mass + pole_mass]))
        self._det_at_zero: torch.Tensor
        self._diagonal: torch.Tensor
        self.action_dim = 1  # takes the force like any residual; friction does not depend on it

    def features(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Network inputs before normalisation: (xdot, thetadot), B x 2."""
        return x[..., 1::2]

    @torch.no_grad()
    def set_statistics(
        self, x: torch.Tensor, u: torch.Tensor, dxdt: torch.Tensor | None = None
    ) -> None:
        """Input normalisation from the states; output scales (a typical force and torque)
        from the typical accelerations times the matching diagonal of the mass matrix."""
        super().set_statistics(x, u, None)
        if dxdt is not None and len(dxdt) > 1:
            scale = dxdt.std(0).clamp_min(1e-6)
            self.dxdt_scale.copy_(scale)
            # (xdd, thdd) scales times (M + m, I)
            self.output_scale.copy_(scale[1::2] * self._diagonal.flip(0))

    def forces(self, x: torch.Tensor) -> torch.Tensor:
        """The network's (cart force N, pole torque N m) at states x, B x 2."""
        return self.network(self.features(x, x))

    def from_forces(self, x: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """dx/dt (B x 4) that generalised forces (B x 2: cart N, pole N m) add at states x:
        (xdd, thdd) = M(theta)^-1 forces on the velocity rows, zero on x and theta.

        As :func:`cartpole_accelerations`, in fewer tensor operations (this runs in every
        planning step)."""
        ml_cos = torch.cos(x[..., 2:3]).mul_(self._ml)
        inverse_det = torch.addcmul(self._det_at_zero, ml_cos, ml_cos, value=-1.0).reciprocal_()
        accelerations = torch.addcmul(forces * self._diagonal, ml_cos, forces.flip(-1), value=-1.0)
        out = x.new_zeros(x.shape)
        out[..., 1::2] = accelerations.mul_(inverse_det)
        return out

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.from_forces(x, self.forces(x))

    def state_scale(self) -> torch.Tensor:
        return self.dxdt_scale

    def config(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "cart_mass": self.cart_mass,
            "pole_mass": self.pole_mass,
            "half_length": self.half_length,
        }


register_residual("CartPoleForceResidual", CartPoleForceResidual)


class CartPoleSwingUpTask(Task):
    """Swing the pole up from hanging and balance it with the cart near the centre.

    See :class:`CartPoleSwingUpEnv`. Time unit: seconds; dt = 0.05. Prior default perturbation:
    0.3 (masses and half-length start 30% low).
    """

    name: ClassVar[str] = "cartpole_swingup"
    real_env_id: ClassVar[str] = "hybridgym/CartPoleSwingUp-v0"
    dt: ClassVar[float] = 0.05
    max_episode_steps: ClassVar[int] = 200
    time_unit: ClassVar[str] = "s"
    substeps: ClassVar[int] = 20
    summary: ClassVar[str] = (
        "classic cart-pole (Lagrangian), force 10 u N, plus cart and joint friction"
    )
    angle_dims: ClassVar[tuple[int, ...]] = (2,)
    state_names = ("x", "xdot", "theta", "thetadot")
    action_names = ("force",)
    #: "solved" (see :meth:`is_solved`) over the second half of an episode
    solved_angle = 0.2
    solved_position = 1.0

    @property
    def observation_space(self) -> spaces.Box:
        high = np.array([2 * TRACK_LIMIT, FLOAT32_MAX, 1.0, 1.0, FLOAT32_MAX], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32)

    @property
    def action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def obs_to_state(self, obs: Array) -> Array:
        xp = array_namespace(obs)
        theta = xp.arctan2(obs[..., 3], obs[..., 2])
        return xp.stack([obs[..., 0], obs[..., 1], theta, obs[..., 4]], -1)

    def state_to_obs(self, state: Array) -> Array:
        xp = array_namespace(state)
        theta = state[..., 2]
        return xp.stack(
            [state[..., 0], state[..., 1], xp.cos(theta), xp.sin(theta), state[..., 3]], -1
        )

    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        """exp(-d^2 / 1 m^2) - 0.01 u^2, d = distance of the pole tip from upright-centred."""
        xp = array_namespace(next_state)
        u = self.clip_action(action)[..., 0]
        length = 2.0 * HALF_LENGTH
        theta = next_state[..., 2]
        tip_x = next_state[..., 0] + length * xp.sin(theta)
        tip_y = length * xp.cos(theta)
        dist2 = tip_x**2 + (tip_y - length) ** 2
        return xp.exp(-dist2 / (2.0 * REWARD_WIDTH**2)) - ACTION_COST * u**2

    def terminated(self, next_state: Array) -> Array:
        """The cart left the track, |x| > 2.4 m."""
        return abs(next_state[..., 0]) > TRACK_LIMIT

    def is_solved(self, states: Array) -> bool:
        """Whether an episode's states (T+1 x 4, a full 200-step episode) count as solved:
        |angle from upright| < 0.2 rad and |x| < 1 m at every step of its second half."""
        if states.shape[0] < self.max_episode_steps + 1:
            return False
        second_half = states[self.max_episode_steps // 2 :]
        angle_ok = abs(wrap_angle(second_half[:, 2])) < self.solved_angle
        position_ok = abs(second_half[:, 0]) < self.solved_position
        return bool((angle_ok & position_ok).all())

    def sample_initial_states(self, n, generator=None, *, dtype=torch.float32, device=None):
        spread = np.array([0.05, 0.05, 0.05, 0.05])
        centre = np.array([0.0, 0.0, np.pi, 0.0])  # hanging down, at rest
        return uniform(n, centre - spread, centre + spread, generator, dtype=dtype, device=device)

    def true_vector_field(self, state: Array, action: Array) -> Array:
        return cartpole_vector_field(state, action)

    def missing_physics(self, state: Array, action: Array) -> Array:
        frictionless = cartpole_vector_field(
            state, action, cart_viscous=0.0, cart_coulomb=0.0, joint_viscous=0.0
        )
        return self.true_vector_field(state, action) - frictionless

    def make_residual(
        self,
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
        structured: bool = True,
        prior: torch.nn.Module | None = None,
    ) -> torch.nn.Module:
        """A :class:`CartPoleForceResidual` (friction as generalised forces of the velocities)
        with the mass matrix at ``prior``'s constants (None: the textbook values);
        ``structured=False``: the whole-state MLP of :meth:`Task.make_residual`."""
        if not structured:
            return super().make_residual(hidden, activation, structured=False)
        constants = {} if prior is None else prior.constants()
        masses = {
            name: float(constants[name].detach()) if name in constants else default
            for name, default in (
                ("cart_mass", CART_MASS),
                ("pole_mass", POLE_MASS),
                ("half_length", HALF_LENGTH),
            )
        }
        return CartPoleForceResidual(hidden, activation, **masses)

    def _make_prior(self, scale: float) -> CartPolePrior:
        return CartPolePrior(
            cart_mass=CART_MASS * scale,
            pole_mass=POLE_MASS * scale,
            half_length=HALF_LENGTH * scale,
        )


class CartPoleSwingUpEnv(SystemEnv):
    """Cart-pole swing-up with friction: swing the pole up from hanging and balance it.

    Classic cart-pole (cart 1 kg, pole 0.1 kg uniform rod of half-length 0.5 m, g = 9.81) with
    a continuous force of 10 N x u, dt = 0.05 s, integrated with RK4 (20 substeps).

    ## Action space
    | index | action | range |
    |-------|--------|-------|
    | 0 | force on the cart, in units of 10 N | [-1, 1] |

    ## Observation space
    | index | observation | range |
    |-------|-------------|-------|
    | 0 | cart position x, m | [-4.8, 4.8] |
    | 1 | cart velocity, m/s | unbounded |
    | 2, 3 | cos(theta), sin(theta); theta = 0 upright | [-1, 1] |
    | 4 | pole angular velocity, rad/s | unbounded |

    ## Reward
    ``exp(-d^2 / (1 m)^2) - 0.01 u^2`` where d is the distance of the pole tip from its
    upright position above the track centre (PILCO/PETS style); at most 1 per step.

    ## Starting state
    Hanging down at rest near the centre: (x, xdot, theta - pi, thetadot) ~ U(-0.05, 0.05)^4.

    ## Episode end
    Terminates when the cart leaves the track (|x| > 2.4 m); truncated after 200 steps (10 s).

    ## Solved
    An episode is solved when, over its whole second half (steps 100-200),
    |angle from upright| < 0.2 rad and |x| < 1 m (``task.is_solved(states)``).

    ## The missing physics
    The textbook prior is frictionless. The truth has viscous cart friction 1.0 N s/m x xdot,
    Coulomb cart friction 0.5 N x tanh(xdot / 0.05 m/s) and joint friction 0.02 N m s x
    thetadot: enough that a frictionless model with the true masses is measurably wrong
    over 10 steps.

    ## Version history
    * v0: initial version.
    """

    def __init__(self) -> None:
        super().__init__(CartPoleSwingUpTask())


register_task(CartPoleSwingUpTask.name, CartPoleSwingUpTask)
