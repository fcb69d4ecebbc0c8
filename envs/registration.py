"""Gymnasium ids of the built-in systems, registered when ``hybridgym.envs`` is imported."""

from __future__ import annotations

import gymnasium as gym

from hybridgym.envs.systems import CartPoleSwingUpTask, DataCenterTask, LotkaVolterraTask

#: id -> (entry point, task class)
SYSTEMS = {
    LotkaVolterraTask.real_env_id: (
        "hybridgym.envs.systems.lotka_volterra:LotkaVolterraEnv",
        LotkaVolterraTask,
    ),
    DataCenterTask.real_env_id: ("hybridgym.envs.systems.datacenter:DataCenterEnv", DataCenterTask),
    CartPoleSwingUpTask.real_env_id: (
        "hybridgym.envs.systems.cartpole_swingup:CartPoleSwingUpEnv",
        CartPoleSwingUpTask,
    ),
}


LEARNED_ENV_ID = "hybridgym/Learned-v0"


def register_envs() -> None:
    """Register every built-in system id and the learned-model id (idempotent)."""
    if LEARNED_ENV_ID not in gym.registry:
        gym.register(
            id=LEARNED_ENV_ID,
            entry_point="hybridgym.envs.learned:LearnedEnv",
            vector_entry_point="hybridgym.envs.learned_vec:LearnedVectorEnv",
        )
    for env_id, (entry_point, task_cls) in SYSTEMS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point=entry_point, max_episode_steps=task_cls.max_episode_steps
            )
