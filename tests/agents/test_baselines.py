"""Hand-made baselines act sensibly and evaluate() measures what it says."""

import gymnasium as gym
import numpy as np
import pytest

from hybridgym.agents import (
    ConstantController,
    HarvestThresholdController,
    RandomController,
    ThermostatController,
    evaluate,
    hand_made_baseline,
    rollout,
)
from hybridgym.envs import get_task


def test_harvest_threshold_beats_no_harvesting_and_reaches_the_target():
    task = get_task("lotka_volterra")
    controller = HarvestThresholdController(task)
    ours = evaluate(controller, task, episodes=5, seed=0)
    none = evaluate(ConstantController(task, 0.0), task, episodes=5, seed=0)
    assert ours.mean > none.mean + 10
    episode = rollout(controller, task.make_real_env(), task, seed=0)
    from hybridgym.envs.systems.lotka_volterra import TARGET

    np.testing.assert_allclose(episode.states[-1], TARGET, rtol=0.05)


def test_thermostat_beats_random_and_no_cooling():
    task = get_task("datacenter", num_zones=2)
    thermostat = evaluate(ThermostatController(task), task, episodes=2, seed=0)
    random = evaluate(RandomController(task, seed=0), task, episodes=2, seed=0)
    nothing = evaluate(ConstantController(task, 0.0), task, episodes=1, seed=0)
    assert thermostat.mean > random.mean > nothing.mean


def test_predict_single_and_batched_agree():
    task = get_task("datacenter", num_zones=3)
    controller = ThermostatController(task)
    obs = task.state_to_obs(task.sample_initial_states(5, np.random.default_rng(0)))
    obs[:, :3] += 4.0  # warm enough to need cooling
    batch, state = controller.predict(obs)
    assert state is None and batch.shape == (5, 3) and batch.dtype == np.float32
    single, _ = controller.predict(obs[2])
    np.testing.assert_array_equal(single, batch[2])
    assert np.all((batch >= 0) & (batch <= 1)) and batch.max() > 0
    with pytest.raises(ValueError, match=r"observation must have shape \(8,\)"):
        controller.predict(np.zeros(5))


def test_evaluate_counts_episodes_and_is_seeded():
    task = get_task("cartpole_swingup")
    agent = RandomController(task, seed=1)
    result = evaluate(agent, "cartpole_swingup", episodes=3, seed=4)
    assert result.returns.shape == (3,) and np.all(result.lengths <= 200)
    assert result.mean == pytest.approx(result.returns.mean())
    zero = ConstantController(task, 0.0)
    a = evaluate(zero, gym.make("hybridgym/CartPoleSwingUp-v0"), episodes=2, seed=3)
    b = evaluate(zero, task, episodes=2, seed=3)
    np.testing.assert_array_equal(a.returns, b.returns)
    pendulum = evaluate(ConstantController(get_task("pendulum")), gym.make("Pendulum-v1"), 2)
    assert pendulum.lengths.tolist() == [200, 200]
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        evaluate(zero, task, episodes=0)


def test_hand_made_baseline_per_task():
    assert isinstance(hand_made_baseline(get_task("lotka_volterra")), HarvestThresholdController)
    assert isinstance(hand_made_baseline(get_task("datacenter")), ThermostatController)
    assert isinstance(hand_made_baseline(get_task("pendulum")), ConstantController)
