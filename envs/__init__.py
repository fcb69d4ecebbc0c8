"""hybridgym.envs: real systems, tasks and (later) the learned-model environments.

Importing this package registers the Gymnasium ids ``hybridgym/LotkaVolterra-v0``,
``hybridgym/DataCenter-v0``, ``hybridgym/CartPoleSwingUp-v0`` and ``hybridgym/Learned-v0``
(``gym.make(..., model=..., task=...)`` gives a LearnedEnv, ``gym.make_vec`` a
LearnedVectorEnv);
``gym.make("hybridgym.envs:hybridgym/LotkaVolterra-v0")`` works without a prior import.
"""

from hybridgym.envs.custom_task import CustomTask
from hybridgym.envs.gym_task import GymTask, resolve_task
from hybridgym.envs.learned import LearnedCore, LearnedEnv, load_model
from hybridgym.envs.learned_vec import LearnedVecEnv, LearnedVectorEnv
from hybridgym.envs.registration import SYSTEMS, register_envs
from hybridgym.envs.system_env import SystemEnv
from hybridgym.envs.systems import (
    CartPolePrior,
    CartPoleSwingUpEnv,
    CartPoleSwingUpTask,
    DataCenterEnv,
    DataCenterPrior,
    DataCenterTask,
    LotkaVolterraEnv,
    LotkaVolterraPrior,
    LotkaVolterraTask,
    PendulumPrior,
    PendulumTask,
)
from hybridgym.envs.task import (
    Task,
    get_task,
    model_task,
    register_task,
    task_for_env_id,
    task_names,
)

register_envs()

__all__ = [
    "SYSTEMS",
    "CartPolePrior",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpTask",
    "CustomTask",
    "DataCenterEnv",
    "DataCenterPrior",
    "DataCenterTask",
    "GymTask",
    "LearnedCore",
    "LearnedEnv",
    "LearnedVecEnv",
    "LearnedVectorEnv",
    "LotkaVolterraEnv",
    "LotkaVolterraPrior",
    "LotkaVolterraTask",
    "PendulumPrior",
    "PendulumTask",
    "SystemEnv",
    "Task",
    "get_task",
    "load_model",
    "model_task",
    "register_task",
    "resolve_task",
    "task_for_env_id",
    "task_names",
]
