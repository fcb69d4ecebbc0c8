"""Every registered id is a first-class Gymnasium env: API checkers, determinism, registration."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import hybridgym.envs  # noqa: F401  (registers the ids)

# (id, kwargs): every registered id, DataCenter with 1, 4 and 64 zones, noise switched on.
ENV_CASES = [
    ("Pendulum-v1", {}),
    ("hybridgym/LotkaVolterra-v0", {}),
    ("hybridgym/LotkaVolterra-v0", {"obs_noise": 0.05}),
    ("hybridgym/DataCenter-v0", {"num_zones": 1}),
    ("hybridgym/DataCenter-v0", {}),
    ("hybridgym/DataCenter-v0", {"num_zones": 64}),
    ("hybridgym/CartPoleSwingUp-v0", {}),
]
CASE_IDS = [f"{env_id}-{kwargs}" for env_id, kwargs in ENV_CASES]

# Both checkers advise a normalised action space: Gymnasium accepts [-1, 1] or [0, 1], SB3 only
# [-1, 1]. Gymnasium's own Pendulum-v1 ([-2, 2]) cannot follow either, and our harvesting and
# cooling efforts are physically [0, 1]. SB3's algorithms rescale any bounded Box, so this advice
# is the only warning let through, and only where it applies (checked below).
GYM_ACTION_SPACE_ADVICE = ".*we recommend using a symmetric and normalized space"
SB3_ACTION_SPACE_ADVICE = "We recommend you to use a symmetric and normalized Box action space"


def _normalised(space, lows):
    return any(np.all(space.low == low) and np.all(space.high == 1.0) for low in lows)


def test_every_hybridgym_id_is_covered():
    # hybridgym/Learned-v0 needs a model and a task: tests/envs/test_learned.py checks it
    ids = {env_id for env_id in gym.registry if env_id.startswith("hybridgym/")}
    ids.remove("hybridgym/Learned-v0")
    assert ids == {case[0] for case in ENV_CASES if case[0].startswith("hybridgym/")}


@pytest.mark.parametrize(("env_id", "kwargs"), ENV_CASES, ids=CASE_IDS)
def test_gymnasium_check_env_without_warnings(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if not _normalised(env.action_space, lows=(-1.0, 0.0)):
            assert env_id == "Pendulum-v1", "our own envs use [-1, 1] or [0, 1] actions"
            warnings.filterwarnings("ignore", message=GYM_ACTION_SPACE_ADVICE)
        gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize(("env_id", "kwargs"), ENV_CASES, ids=CASE_IDS)
def test_sb3_check_env_without_warnings(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if not _normalised(env.action_space, lows=(-1.0,)):
            warnings.filterwarnings("ignore", message=SB3_ACTION_SPACE_ADVICE)
        sb3_check_env(env.unwrapped, warn=True)


def _rollout(env_id, kwargs, seed, actions):
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return np.array(observations), np.array(rewards)


@pytest.mark.parametrize(("env_id", "kwargs"), ENV_CASES, ids=CASE_IDS)
def test_same_seed_and_actions_give_identical_trajectories(env_id, kwargs):
    space = gym.make(env_id, **kwargs).action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, (150, *space.shape))
    obs_a, rew_a = _rollout(env_id, kwargs, 7, actions)
    obs_b, rew_b = _rollout(env_id, kwargs, 7, actions)
    obs_c, _ = _rollout(env_id, kwargs, 8, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(obs_a, obs_c), "a different seed should give a different start"


@pytest.mark.parametrize(
    ("env_id", "steps"),
    [
        ("hybridgym/LotkaVolterra-v0", 100),
        ("hybridgym/DataCenter-v0", 288),
        ("hybridgym/CartPoleSwingUp-v0", 200),
    ],
)
def test_time_limit_is_set_at_registration(env_id, steps):
    assert gym.spec(env_id).max_episode_steps == steps
    env = gym.make(env_id)
    assert env.unwrapped.task.max_episode_steps == steps


def test_module_prefix_id_works_without_prior_import():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('hybridgym.envs:hybridgym/LotkaVolterra-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape, type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2,) LotkaVolterraEnv"
