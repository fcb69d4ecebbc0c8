"""CustomTask: a task for your own system from plain arguments, served by the learned envs."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hybridgym.envs import CustomTask, LearnedEnv, LearnedVecEnv, get_task
from hybridgym.models import HybridODE, TrajectoryDataset

TARGET = 0.25


def oscillator_reward(state, action, next_state):
    return (
        -((next_state[:, 0] - TARGET) ** 2) - 0.1 * next_state[:, 1] ** 2 - 0.01 * action[:, 0] ** 2
    )


def oscillator_task(**overrides):
    arguments = {
        "state_names": ("position", "velocity"),
        "action_names": ("force",),
        "dt": 0.1,
        "reward": oscillator_reward,
        "action_low": -1.0,
        "action_high": 1.0,
        "start_low": (-1.0, -0.5),
        "start_high": (1.0, 0.5),
        "max_episode_steps": 20,
        **overrides,
    }
    return CustomTask("oscillator", **arguments)


class Spring(torch.nn.Module):
    """x'' = -4 x + 2 u, the exact model of the oscillator in these tests."""

    state_dim, action_dim = 2, 1

    def forward(self, x, u):
        return torch.stack([x[:, 1], -4.0 * x[:, 0] + 2.0 * u[:, 0]], 1)


def spring_model(dt=0.1):
    return HybridODE(Spring(), None, dt=dt, substeps=5)


def test_a_learned_env_of_a_custom_task_passes_the_env_checkers():
    env = LearnedEnv(spring_model(), oscillator_task(state_low=-10.0, state_high=10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_rewards_termination_and_starts_come_from_the_arguments():
    task = oscillator_task(terminated=lambda x: x[:, 0] > 0.5, start_low=0.0, start_high=0.2)
    env = LearnedEnv(spring_model(), task)
    obs, _ = env.reset(seed=3)
    assert np.all((obs >= 0.0) & (obs <= 0.2))
    model = spring_model()
    terminated, steps = False, 0
    while not terminated:
        before = torch.as_tensor(env.state[None], dtype=torch.float32)
        obs, reward, terminated, truncated, _ = env.step(np.array([1.0], dtype=np.float32))
        steps += 1
        expected = model.step(before, torch.ones(1, 1))
        np.testing.assert_allclose(obs, expected[0].numpy(), rtol=1e-5, atol=1e-6)
        assert reward == pytest.approx(float(oscillator_reward(before, torch.ones(1, 1), expected)))
        assert terminated == (obs[0] > 0.5) and not truncated
    assert steps < task.max_episode_steps  # pushed with full force, it passes 0.5 early


def test_episodes_are_truncated_at_max_episode_steps():
    env = LearnedEnv(spring_model(), oscillator_task(max_episode_steps=7))
    env.reset(seed=0)
    flags = [env.step(np.zeros(1, dtype=np.float32))[2:4] for _ in range(7)]
    assert flags[-1] == (False, True) and not any(any(f) for f in flags[:-1])


def test_start_states_are_uniform_in_the_box_for_numpy_and_torch_generators():
    task = oscillator_task()
    states = task.sample_initial_states(2000, np.random.default_rng(0))
    assert isinstance(states, np.ndarray) and states.dtype == np.float64
    assert states.shape == (2000, 2)
    assert np.all(states.min(0) >= [-1.0, -0.5]) and np.all(states.max(0) <= [1.0, 0.5])
    np.testing.assert_allclose(states.mean(0), [0.0, 0.0], atol=0.05)
    tensor = task.sample_initial_states(5, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64
    assert tensor.shape == (5, 2)


def test_a_vec_env_steps_the_batch_and_observations_are_states():
    task = oscillator_task()
    venv = LearnedVecEnv(spring_model(), task, num_envs=8)
    venv.seed(0)
    obs = venv.reset()
    np.testing.assert_allclose(task.obs_to_state(obs), obs)
    actions = np.full((8, 1), 0.5, dtype=np.float32)
    next_obs, rewards, dones, _ = venv.step(actions)
    expected = spring_model().step(torch.as_tensor(obs), torch.as_tensor(actions))
    np.testing.assert_allclose(next_obs, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        rewards,
        oscillator_reward(torch.as_tensor(obs), torch.as_tensor(actions), expected).numpy(),
        rtol=1e-5,
    )
    assert not dones.any()


def test_a_custom_task_with_the_real_env_id_reproduces_a_built_in_system():
    """Lotka-Volterra written as a CustomTask (its reward and id): the real env and the
    learned env of the exact model agree with the built-in task's, step for step."""
    lv = get_task("lotka_volterra")
    task = CustomTask(
        "my_lotka_volterra",
        state_names=lv.state_names,
        action_names=lv.action_names,
        dt=lv.dt,
        reward=lv.reward,
        action_low=0.0,
        action_high=1.0,
        start_low=(1.0, 0.5),
        start_high=(5.0, 3.0),
        max_episode_steps=lv.max_episode_steps,
        state_low=0.0,
        real_env_id=lv.real_env_id,
    )
    real = task.make_real_env()
    learned = LearnedEnv(lv.make_oracle(), task, dtype=torch.float64)
    obs, _ = real.reset(seed=0)
    learned.reset(options={"state": obs.astype(np.float64)})
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.uniform(0, 1, 2).astype(np.float32)
        obs, reward, *_ = real.step(action)
        model_obs, model_reward, *_ = learned.step(action)
        np.testing.assert_allclose(model_obs, obs, rtol=1e-5)
        assert model_reward == pytest.approx(reward, rel=1e-5)


def test_a_real_env_of_other_shapes_is_refused():
    task = oscillator_task(real_env_id="Pendulum-v1")  # observations (cos, sin, speed)
    with pytest.raises(ValueError, match=r"Pendulum-v1 has observation and action shapes"):
        task.make_real_env()


def test_without_a_real_env_or_prior_the_errors_say_what_to_do():
    task = oscillator_task()
    with pytest.raises(ValueError, match=r"has no real system .* LearnedEnv"):
        task.make_real_env()
    with pytest.raises(NotImplementedError, match="write your physics as a PhysicsPrior"):
        task.make_prior()


def test_a_custom_task_is_only_equal_to_itself_and_is_returned_by_get_task():
    task, twin = oscillator_task(), oscillator_task()
    assert task == task and task != twin
    assert len({task, twin}) == 2
    assert get_task(task) is task
    assert "CustomTask('oscillator'" in repr(task)


def test_datasets_of_the_task_are_accepted_and_others_refused():
    task = oscillator_task()
    states, actions = [np.zeros((4, 2))], [np.zeros((3, 1))]
    mine = TrajectoryDataset.from_arrays(
        states, actions, dt=0.1, state_names=("position", "velocity"), action_names=("force",)
    )
    task.check_dataset(mine)
    other = TrajectoryDataset.from_arrays(
        states, actions, dt=0.2, state_names=("position", "velocity"), action_names=("force",)
    )
    with pytest.raises(ValueError, match=r"dt 0\.2"):
        task.check_dataset(other)


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"state_names": "position"}, TypeError, "state_names must be a sequence"),
        ({"state_names": ("x", "x")}, ValueError, "distinct names"),
        ({"action_names": ()}, ValueError, "one or more"),
        ({"dt": 0.0}, ValueError, "dt must be a positive number"),
        ({"reward": None}, TypeError, "reward must be a function"),
        ({"terminated": 1}, TypeError, "terminated must be a function or None"),
        ({"action_low": (-1.0, -1.0)}, ValueError, "action_low must be one number or 1"),
        ({"action_high": np.inf}, ValueError, "action_high must be finite numbers"),
        ({"start_low": 2.0}, ValueError, "start_low must be <= start_high"),
        ({"state_low": -0.5}, ValueError, "start box must lie inside"),
        ({"max_episode_steps": 0}, ValueError, "max_episode_steps must be >= 1"),
        ({"max_episode_steps": 5.0}, TypeError, "max_episode_steps must be an int"),
        ({"angle_dims": (2,)}, ValueError, "angle_dims must be state dimensions 0 ... 1"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_naming_them(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        oscillator_task(**overrides)


def test_gym_spaces_are_float32_boxes():
    task = oscillator_task(state_low=(-2.0, -3.0), state_high=(2.0, 3.0))
    for space in (task.observation_space, task.action_space):
        assert isinstance(space, gym.spaces.Box) and space.dtype == np.float32
    np.testing.assert_array_equal(task.observation_space.low, [-2.0, -3.0])
    np.testing.assert_array_equal(task.action_space.high, [1.0])
