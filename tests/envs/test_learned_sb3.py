"""SB3 algorithms train on LearnedVecEnv, also wrapped in VecNormalize and VecMonitor, without
warnings (the suite treats warnings as errors)."""

import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from hybridgym.envs import LearnedVecEnv, get_task
from hybridgym.models import HybridODE, MLPResidual


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "kwargs"),
    [
        (SAC, {"learning_starts": 200, "batch_size": 64}),
        (TD3, {"learning_starts": 200, "batch_size": 64}),
        (PPO, {"n_steps": 256, "batch_size": 256, "n_epochs": 2}),
    ],
)
def test_sb3_trains_on_the_learned_vec_env(algo, kwargs):
    task = get_task("pendulum")
    torch.manual_seed(0)
    model = HybridODE(
        task.make_prior(perturbation=0.0), MLPResidual(2, 1, angle_dims=(0,)), dt=task.dt
    )
    venv = VecNormalize(VecMonitor(LearnedVecEnv(model, task, 8)), gamma=0.98)
    venv.seed(0)
    agent = algo("MlpPolicy", venv, seed=0, device="cpu", **kwargs)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=2_048)
    assert agent.num_timesteps >= 2_048
    # VecMonitor saw whole 200-step episodes (8 envs x 256 steps)
    assert len(agent.ep_info_buffer) >= 8
    assert all(info["l"] == 200 for info in agent.ep_info_buffer)
    after = list(agent.policy.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed), "the policy learned nothing"
