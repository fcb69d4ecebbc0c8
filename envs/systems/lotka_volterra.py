"""``hybridgym/LotkaVolterra-v0``: predator-prey populations under harvesting.

The seed example of universal differential equations (Rackauckas et al. 2020): the textbook
prior knows prey growth and predator death, a neural network learns the interaction terms.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.system_env import SystemEnv
from hybridgym.envs.task import Task, register_task
from hybridgym.models import (
    FitConfig,
    HybridODE,
    MLPResidual,
    PhysicsPrior,
    TrajectoryDataset,
    fixed_step,
)
from hybridgym.models.arrays import Array, array_namespace, uniform

# The seed example's constants.
ALPHA = 1.3  # prey growth rate
BETA = 0.9  # predation rate (missing physics)
GAMMA = 0.8  # predator growth per prey eaten (missing physics)
DELTA = 1.8  # predator death rate
#: harvesting rate at full effort (fraction of the population removed per time unit)
HARVEST_RATE = (1.0, 1.0)
#: the coexistence equilibrium without harvesting, (delta/gamma, alpha/beta): the target
TARGET = (DELTA / GAMMA, ALPHA / BETA)
EFFORT_COST = 0.1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def lotka_volterra_vector_field(
    x: Array,
    u: Array,
    alpha: Array | float = ALPHA,
    beta: Array | float = BETA,
    gamma: Array | float = GAMMA,
    delta: Array | float = DELTA,
    harvest_rate: tuple[Array | float, Array | float] = HARVEST_RATE,
) -> Array:
    """Harvested Lotka-Volterra, B x 2.

    dx1/dt = alpha x1 - beta x1 x2 - h1 u1 x1
    dx2/dt = gamma x1 x2 - delta x2 - h2 u2 x2
    """
    xp = array_namespace(x)
    prey, predators = x[..., 0], x[..., 1]
    interaction = prey * predators
    d_prey = alpha * prey - beta * interaction - harvest_rate[0] * u[..., 0] * prey
    d_predators = gamma * interaction - delta * predators - harvest_rate[1] * u[..., 1] * predators
    return xp.stack([d_prey, d_predators], -1)


class LotkaVolterraPrior(PhysicsPrior):
    """Textbook prior: dx1/dt = alpha x1 - h1 u1 x1, dx2/dt = -delta x2 - h2 u2 x2.

    alpha and delta are learnable and positive; the harvesting rates are known (fixed). The
    interaction terms -beta x1 x2 and +gamma x1 x2 are the missing physics.
    """

    def __init__(self, alpha: float = ALPHA, delta: float = DELTA) -> None:
        super().__init__(state_dim=2, action_dim=2)
        self.add_constant("alpha", alpha, positive=True)
        self.add_constant("delta", delta, positive=True)
        self.add_constant("harvest_prey", HARVEST_RATE[0], learnable=False)
        self.add_constant("harvest_predators", HARVEST_RATE[1], learnable=False)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        return lotka_volterra_vector_field(
            x,
            u,
            alpha=c["alpha"],
            beta=0.0,
            gamma=0.0,
            delta=c["delta"],
            harvest_rate=(c["harvest_prey"], c["harvest_predators"]),
        )


def _check_obs_noise(obs_noise: Any) -> float:
    if isinstance(obs_noise, bool) or not isinstance(obs_noise, int | float):
        raise TypeError(
            f"obs_noise must be a float >= 0 (std of log-normal noise), "
            f"got {type(obs_noise).__name__} {obs_noise!r}"
        )
    if not 0 <= obs_noise <= 1:
        raise ValueError(f"obs_noise must be in [0, 1] (0.05 = about 5%), got {obs_noise!r}")
    return float(obs_noise)


class LotkaVolterraTask(Task):
    """Steer prey and predator populations to the coexistence point and hold them there.

    See :class:`LotkaVolterraEnv` for the full description. Time unit: the model's (arbitrary)
    time; dt = 0.25. Prior default perturbation: 0.3 (alpha and delta start 30% low).
    """

    name: ClassVar[str] = "lotka_volterra"
    real_env_id: ClassVar[str] = "hybridgym/LotkaVolterra-v0"
    dt: ClassVar[float] = 0.25
    max_episode_steps: ClassVar[int] = 100
    substeps: ClassVar[int] = 10
    summary: ClassVar[str] = "x1' = 1.3 x1 - 0.9 x1 x2 - u1 x1,  x2' = 0.8 x1 x2 - 1.8 x2 - u2 x2"
    state_names = ("prey", "predators")
    action_names = ("harvest_prey", "harvest_predators")

    def __init__(self, obs_noise: float = 0.0) -> None:
        self.obs_noise = _check_obs_noise(obs_noise)

    @property
    def real_env_kwargs(self) -> dict[str, Any]:
        return {"obs_noise": self.obs_noise}

    @property
    def observation_space(self) -> spaces.Box:
        return spaces.Box(0.0, FLOAT32_MAX, shape=(2,), dtype=np.float32)

    @property
    def action_space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)

    def obs_to_state(self, obs: Array) -> Array:
        return obs[..., :2] * 1  # a copy, of the same kind

    def state_to_obs(self, state: Array) -> Array:
        return state[..., :2] * 1

    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        """-(sum of squared relative errors to TARGET) - 0.1 |u|^2, on the next state."""
        u = self.clip_action(action)
        error = ((next_state[..., 0] - TARGET[0]) / TARGET[0]) ** 2 + (
            (next_state[..., 1] - TARGET[1]) / TARGET[1]
        ) ** 2
        return -error - EFFORT_COST * (u**2).sum(-1)

    def sample_initial_states(self, n, generator=None, *, dtype=torch.float32, device=None):
        return uniform(
            n, np.array([1.0, 0.5]), np.array([5.0, 3.0]), generator, dtype=dtype, device=device
        )

    def true_vector_field(self, state: Array, action: Array) -> Array:
        return lotka_volterra_vector_field(state, action)

    def missing_physics(self, state: Array, action: Array) -> Array:
        """True vector field minus the prior at the true constants, B x 2."""
        prior_at_truth = lotka_volterra_vector_field(state, action, beta=0.0, gamma=0.0)
        return self.true_vector_field(state, action) - prior_at_truth

    def _make_prior(self, scale: float) -> LotkaVolterraPrior:
        return LotkaVolterraPrior(alpha=ALPHA * scale, delta=DELTA * scale)


def seed_example(
    seed: int = 0,
    t_end: float = 5.0,
    dt: float = 0.25,
    noise: float = 5e-3,
) -> tuple[TrajectoryDataset, np.ndarray]:
    """The data of the UDE paper's "missing physics" example (Rackauckas et al. 2020).

    One uncontrolled trajectory on t in [0, t_end] sampled every ``dt`` (21 points by default),
    from x0 = 5 U(0, 1)^2 drawn with ``seed``, with Gaussian noise of ``noise`` times the mean
    of each state. Integrated with RK4 at 200 substeps per sample (error far below the noise).

    Returns:
        (the noisy dataset, with zero harvesting actions; the noise-free states, (T+1) x 2).
    """
    rng = np.random.default_rng(seed)
    x0 = 5.0 * rng.uniform(size=2) ** 2
    steps = round(t_end / dt)
    actions = np.zeros((steps, 2))
    states = [x0[None]]
    for k in range(steps):
        states.append(
            fixed_step(
                lotka_volterra_vector_field, states[-1], actions[k : k + 1], dt, substeps=200
            )
        )
    clean = np.concatenate(states)
    noisy = clean + noise * clean.mean(0) * rng.standard_normal(clean.shape)
    data = TrajectoryDataset.from_arrays(
        noisy,
        actions,
        dt=dt,
        state_names=LotkaVolterraTask.state_names,
        action_names=LotkaVolterraTask.action_names,
    )
    return data, clean


#: the fit that recovers the seed example's missing terms in a few seconds: windows of 1 to 4
#: steps, Adam then an L-BFGS polish (benchmarks/seed_example.py measures it)
SEED_EXAMPLE_FIT = FitConfig(
    horizon=4,
    iterations=600,
    learning_rate=1e-2,
    lbfgs_iterations=100,
    batch_size=None,
    residual_penalty=0.0,
    progress=False,
    validation_horizons=(1,),
)


def seed_example_model(hidden: tuple[int, ...] = (32, 32)) -> HybridODE:
    """The seed example's hybrid model: the prior knows alpha x1 and -delta x2 exactly (its
    constants are frozen at the truth) and a tanh MLP learns the rest."""
    prior = LotkaVolterraTask().make_prior(perturbation=0.0)
    prior.requires_grad_(False)
    return HybridODE(prior, MLPResidual(2, 2, hidden=hidden, activation="tanh"), dt=0.25)


class LotkaVolterraEnv(SystemEnv):
    """Predator-prey populations (Lotka-Volterra) under harvesting.

    The seed example of universal differential equations: alpha = 1.3, beta = 0.9, gamma = 0.8,
    delta = 1.8. Without control the populations cycle forever around the coexistence point
    (delta/gamma, alpha/beta) = (2.25, 1.444); harvesting can damp the cycle.

    ## Dynamics
    ```
    dx1/dt = alpha x1 - beta x1 x2 - u1 x1        (prey)
    dx2/dt = gamma x1 x2 - delta x2 - u2 x2       (predators)
    ```
    integrated with RK4, 10 substeps per control interval dt = 0.25.

    ## Action space
    | index | action | range |
    |-------|--------|-------|
    | 0 | harvesting effort on prey (removes u1 x1 per time unit) | [0, 1] |
    | 1 | harvesting effort on predators (removes u2 x2 per time unit) | [0, 1] |

    ## Observation space
    | index | observation | range |
    |-------|-------------|-------|
    | 0 | prey x1 | [0, inf) |
    | 1 | predators x2 | [0, inf) |

    With ``obs_noise=s > 0`` each observation is multiplied by exp(s N(0, 1)) (log-normal,
    about s x 100 % relative noise); the state itself is noise-free.

    ## Reward
    ``-((x1 - 2.25)/2.25)^2 - ((x2 - 1.444)/1.444)^2 - 0.1 (u1^2 + u2^2)`` on the next state:
    reach and hold the coexistence point with little harvesting. Holding it costs no effort
    (it is the unharvested equilibrium), but the cycle around it must be damped first.
    A hand-made controller that harvests prey when x1 > 2.25 and predators when x2 > 1.444
    lowers the Lotka-Volterra energy monotonically; no harvesting keeps the cycle going.

    ## Starting state
    x1 ~ U(1, 5), x2 ~ U(0.5, 3).

    ## Episode end
    Never terminates; truncated after 100 steps (25 time units, about 6 cycles).

    ## The missing physics
    The textbook prior knows growth alpha x1, death -delta x2 and the harvesting terms; the
    interaction terms -beta x1 x2 and +gamma x1 x2 are unknown (a neural network learns them,
    sparse regression reads them back).

    ## Arguments
    ``obs_noise`` (float in [0, 1], default 0): std of the log-normal observation noise.

    ## Version history
    * v0: initial version.
    """

    def __init__(self, obs_noise: float = 0.0) -> None:
        super().__init__(LotkaVolterraTask(obs_noise=obs_noise))

    def _observe(self, x: np.ndarray) -> np.ndarray:
        obs = self.task.state_to_obs(x)
        if self.task.obs_noise > 0:
            obs = obs * np.exp(self.task.obs_noise * self.np_random.standard_normal(obs.shape))
        return obs.astype(np.float32)


register_task(LotkaVolterraTask.name, LotkaVolterraTask)
