"""DifferentiablePolicyAgent: a policy trained by backpropagating reward through a model."""

import numpy as np
import pytest
import torch

from hybridgym.agents import (
    DifferentiablePolicyAgent,
    PolicyTrainingConfig,
    RandomController,
    evaluate,
)
from hybridgym.envs import get_task
from hybridgym.models import HybridODE, MLPResidual

TASK = get_task("pendulum")


def small(**kwargs):
    return PolicyTrainingConfig(**{"batch_size": 64, "horizon": 16, **kwargs})


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"iterations": 0}, "iterations"),
        ({"horizon": 2.5}, "horizon"),
        ({"gamma": 1.5}, "gamma"),
        ({"policy_lr": 0}, "policy_lr"),
        ({"hidden": ()}, "hidden"),
        ({"exploration_std": -1}, "exploration_std"),
    ],
)
def test_bad_config_is_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PolicyTrainingConfig(**kwargs)


def test_predict_has_sb3_signature_bounds_and_seeded_exploration():
    agent = DifferentiablePolicyAgent(TASK, small())
    obs = np.array([1.0, 0.0, 0.5], dtype=np.float32)
    action, state = agent.predict(obs)
    assert state is None and action.shape == (1,) and action.dtype == np.float32
    batch, _ = agent.predict(np.stack([obs] * 5))
    assert batch.shape == (5, 1) and np.allclose(batch, action)
    agent.reseed_exploration(3)
    noisy = np.array([agent.predict(obs, deterministic=False)[0] for _ in range(50)])
    assert noisy.std() > 0.05 and np.all(np.abs(noisy) <= 2.0)
    agent.reseed_exploration(3)
    again = np.array([agent.predict(obs, deterministic=False)[0] for _ in range(50)])
    assert np.array_equal(noisy, again)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        agent.predict(np.zeros(4))


def test_training_through_the_exact_model_swings_the_pendulum_up():
    torch.manual_seed(0)
    agent = DifferentiablePolicyAgent(TASK, PolicyTrainingConfig(batch_size=64, horizon=32))
    random_return = evaluate(RandomController(TASK, seed=0), TASK, 3, seed=7).mean
    report = agent.train(TASK.make_oracle(), 300)
    assert report.iterations == 300 and report.skipped == 0
    assert np.mean(report.mean_reward[-20:]) > np.mean(report.mean_reward[:20])
    result = evaluate(agent, TASK, episodes=3, seed=7)
    assert result.mean > -300 > random_return


def test_model_is_left_untouched_and_training_warm_starts():
    model = HybridODE(TASK.make_prior(), MLPResidual(2, 1, hidden=(8,)), dt=TASK.dt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    agent = DifferentiablePolicyAgent(TASK, small())
    agent.train(model, 3)
    first = [p.detach().clone() for p in agent.policy.parameters()]
    agent.train(model, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert any(not torch.equal(a, b) for a, b in zip(first, agent.policy.parameters(), strict=True))


def test_start_states_are_used_and_checked():
    agent = DifferentiablePolicyAgent(TASK, small(batch_size=32))
    pool = np.array([[0.1, 0.0], [0.2, 0.0]])
    agent.train(TASK.make_oracle(), 1, start_states=pool, start_fraction=1.0)
    # deterministic policy and model: rollouts from the two pool states end in two states
    assert len(torch.unique(agent._x, dim=0)) == 2
    with pytest.raises(ValueError, match="start_states must be K x 2"):
        agent.train(TASK.make_oracle(), 1, start_states=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="start_fraction"):
        agent.train(TASK.make_oracle(), 1, start_fraction=2.0)


def test_save_load_round_trip_and_foreign_files(tmp_path):
    agent = DifferentiablePolicyAgent(TASK, small())
    agent.train(TASK.make_oracle(), 2)
    path = agent.save(tmp_path / "agent.pt")
    loaded = DifferentiablePolicyAgent.load(path)
    obs = np.random.default_rng(0).uniform(-1, 1, (10, 3)).astype(np.float32)
    assert np.array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.config == agent.config and loaded.reward_scale == agent.reward_scale
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="hybridgym"):
        DifferentiablePolicyAgent.load(tmp_path / "other.pt")
