"""MPCAgent plans through batched models: swing-up with an exact model, batching, ensembles."""

import numpy as np
import pytest
import torch

from hybridgym.agents import MPCAgent, evaluate, rollout
from hybridgym.envs import get_task
from hybridgym.models import Ensemble, HybridODE, MLPResidual
from hybridgym.models.arrays import wrap_angle


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_swings_the_pendulum_up_with_the_exact_model(method):
    task = get_task("pendulum")
    agent = MPCAgent(task.make_oracle(), task, horizon=30, samples=300, iterations=4, method=method)
    episode = rollout(agent, task.make_real_env(), task, seed=1000)
    upright = np.abs(wrap_angle(episode.states[-50:, 0]))
    assert upright.max() < 0.1, upright.max()
    assert episode.total_return > -200
    assert agent.last_plan_seconds > 0


def test_batched_predict_plans_each_row_and_is_seeded():
    task = get_task("pendulum")
    obs = task.state_to_obs(np.array([[0.1, 0.0], [np.pi - 0.1, 0.0], [-2.0, 1.0]]))
    obs = obs.astype(np.float32)
    a = MPCAgent(task.make_oracle(), task, horizon=10, samples=64, iterations=2, seed=3)
    b = MPCAgent(task.make_oracle(), task, horizon=10, samples=64, iterations=2, seed=3)
    actions, state = a.predict(obs)
    assert state is None and actions.shape == (3, 1) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions, b.predict(obs)[0])
    assert np.all(np.abs(actions) <= 2.0)
    single, _ = MPCAgent(
        task.make_oracle(), task, horizon=10, samples=64, iterations=2, seed=3
    ).predict(obs[0])
    assert single.shape == (1,)


def test_returns_stop_at_termination():
    """A candidate that leaves the track earns nothing after the step that ended it."""
    task = get_task("cartpole_swingup")
    oracle = task.make_oracle().double()
    agent = MPCAgent(oracle, task, horizon=12, samples=4, iterations=1)
    x0 = torch.tensor([[2.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    push_out = torch.ones(1, 1, 12, 1, dtype=torch.float64)
    expected, x, alive = 0.0, x0, True
    for _ in range(12):
        x_next = oracle.step(x, push_out[0, :, 0])
        if alive:
            expected += float(task.reward(x, push_out[0, :, 0], x_next)[0])
        alive = alive and not bool(task.terminated(x_next)[0])
        x = x_next
    assert not alive, "the scenario must leave the track within the horizon"
    got = agent._returns(x0, push_out)
    assert float(got[0, 0]) == pytest.approx(expected, rel=1e-9)


def test_ensemble_returns_average_the_members():
    task = get_task("pendulum")
    torch.manual_seed(0)
    members = []
    for _ in range(3):
        residual = MLPResidual(2, 1, hidden=(8,), angle_dims=(0,))
        torch.nn.init.normal_(residual.net[-1].weight, std=0.5)
        members.append(HybridODE(task.make_prior(perturbation=0.0), residual, dt=task.dt))
    ens = Ensemble(members)
    x0 = torch.tensor([[0.5, 0.0], [2.0, -1.0]])
    candidates = torch.rand(2, 5, 6, 1) * 4 - 2
    together = MPCAgent(ens, task, horizon=6, samples=5, iterations=1)._returns(x0, candidates)
    alone = torch.stack(
        [
            MPCAgent(m, task, horizon=6, samples=5, iterations=1)._returns(x0, candidates)
            for m in members
        ]
    ).mean(0)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_planning_keeps_a_warm_start_and_resets():
    task = get_task("pendulum")
    agent = MPCAgent(task.make_oracle(), task, horizon=10, samples=32, iterations=1)
    obs = task.state_to_obs(np.array([[1.0, 0.0]])).astype(np.float32)[0]
    agent.predict(obs)
    assert agent._plan is not None
    agent.predict(obs, episode_start=np.array([True]))
    result = evaluate(agent, task, episodes=1, seed=0)
    assert result.lengths.tolist() == [200]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"method": "ilqr"}, "method must be one of"),
        ({"horizon": 0}, "horizon must be a positive int"),
        ({"samples": 10, "elites": 20}, r"elites \(20\) must not exceed samples \(10\)"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    task = get_task("pendulum")
    with pytest.raises(ValueError, match=pattern):
        MPCAgent(task.make_oracle(), task, **kwargs)
