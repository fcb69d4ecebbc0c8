"""The built-in systems. Each module is the one source of truth for its system: true dynamics,
constants, reward, termination and its textbook prior."""

from hybridgym.envs.systems.cartpole_swingup import (
    CartPolePrior,
    CartPoleSwingUpEnv,
    CartPoleSwingUpTask,
)
from hybridgym.envs.systems.datacenter import DataCenterEnv, DataCenterPrior, DataCenterTask
from hybridgym.envs.systems.lotka_volterra import (
    LotkaVolterraEnv,
    LotkaVolterraPrior,
    LotkaVolterraTask,
)
from hybridgym.envs.systems.pendulum import PendulumPrior, PendulumTask

__all__ = [
    "CartPolePrior",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpTask",
    "DataCenterEnv",
    "DataCenterPrior",
    "DataCenterTask",
    "LotkaVolterraEnv",
    "LotkaVolterraPrior",
    "LotkaVolterraTask",
    "PendulumPrior",
    "PendulumTask",
]
