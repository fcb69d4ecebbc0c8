"""make_agent: the defaults table reaches the built SB3 agent, overrides win, the task is inferred
from every kind of env, bad input fails with a helpful ValueError, and seeds reproduce."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from hybridgym.agents.sb3 import (
    AGENT_DEFAULTS,
    AGENT_DEFAULTS_BY_ENV,
    ALGOS,
    BASE_DEFAULTS,
    default_hyperparameters,
    make_agent,
)
from hybridgym.envs import CustomTask, GymTask, LearnedVecEnv, get_task, task_names
from hybridgym.models import HybridODE, MLPResidual

SB3_CLASSES = {"sac": SAC, "td3": TD3, "ppo": PPO}
#: keys checked through their optimiser or networks, not as plain attributes
INDIRECT = {"learning_rate", "policy_kwargs", "action_noise"}


def hidden_sizes(agent) -> list[int]:
    """Widths of the actor's hidden layers, read from the built networks."""
    if isinstance(agent, SAC):
        layers = agent.actor.latent_pi
    elif isinstance(agent, TD3):
        layers = list(agent.actor.mu)[:-2]  # drop the output layer and its tanh
    else:
        layers = agent.policy.mlp_extractor.policy_net
    return [m.out_features for m in layers if isinstance(m, torch.nn.Linear)]


def optimizer_lr(agent) -> float:
    optimizer = agent.policy.optimizer if isinstance(agent, PPO) else agent.actor.optimizer
    return optimizer.param_groups[0]["lr"]


def assert_built_with(agent, expected: dict) -> None:
    """Every value of ``expected`` (SB3 kwargs) is what the agent uses."""
    assert optimizer_lr(agent) == pytest.approx(expected.get("learning_rate", 3e-4))
    assert hidden_sizes(agent) == expected["policy_kwargs"]["net_arch"]
    for key, value in expected.items():
        if key == "train_freq":  # SB3 keeps a TrainFreq(frequency, unit)
            assert agent.train_freq.frequency == value, key
        elif key not in INDIRECT:
            assert getattr(agent, key) == value, key
    if "action_noise" in expected:
        assert isinstance(agent.action_noise, NormalActionNoise)
        assert np.all(agent.action_noise._sigma == expected["action_noise"])


def learned_vec_env(num_envs: int = 4) -> LearnedVecEnv:
    task = get_task("pendulum")
    torch.manual_seed(0)
    model = HybridODE(
        task.make_prior(perturbation=0.0), MLPResidual(2, 1, angle_dims=(0,)), dt=task.dt
    )
    return LearnedVecEnv(model, task, num_envs)


# --- the table ------------------------------------------------------------------------------
def test_the_table_covers_every_builtin_task_and_algo():
    assert set(AGENT_DEFAULTS) == set(task_names())
    assert set(BASE_DEFAULTS) == set(ALGOS) == {"sac", "td3", "ppo"}
    for task, rows in AGENT_DEFAULTS.items():
        assert set(rows) == set(ALGOS), task


@pytest.mark.parametrize("algo", sorted(ALGOS))
@pytest.mark.parametrize("task", sorted(AGENT_DEFAULTS))
def test_table_values_reach_the_agent(task, algo):
    expected = default_hyperparameters(task, algo)
    # the row really is on top of the base: its own values survive the merge
    for key, value in AGENT_DEFAULTS[task][algo].items():
        if key != "policy_kwargs":
            assert expected[key] == value
    agent = make_agent(algo, task)
    assert isinstance(agent, SB3_CLASSES[algo])
    assert agent.device == torch.device("cpu")
    assert_built_with(agent, expected)


def test_an_env_of_no_known_task_gets_the_base_defaults():
    agent = make_agent("sac", "hybridgym_test/Cart-v0")  # tests/conftest.py registers it
    assert default_hyperparameters(None, "sac") == BASE_DEFAULTS["sac"]
    assert agent.gamma == 0.99  # SB3's default, no task row applied
    assert_built_with(agent, BASE_DEFAULTS["sac"])


@pytest.mark.parametrize("env_id", sorted(AGENT_DEFAULTS_BY_ENV))
def test_an_env_with_a_row_by_id_gets_it(env_id):
    """rl-baselines3-zoo's values for Gymnasium envs run as such (a GymTask, or the id)."""
    if env_id.startswith("InvertedPendulum"):
        pytest.importorskip("mujoco", reason="needs MuJoCo: pip install 'hybridgym[mujoco]'")
    row = AGENT_DEFAULTS_BY_ENV[env_id]["sac"]
    expected = default_hyperparameters(env_id, "sac")
    assert expected == default_hyperparameters(GymTask(env_id), "sac")
    for key, value in row.items():
        assert expected[key] == value
    agent = make_agent("sac", env_id, task=GymTask(env_id))
    assert_built_with(agent, expected)
    assert agent.learning_starts == row.get("learning_starts", 100)
    if env_id == "Pendulum-v1":  # the id alone: the built-in task's real env, its row
        assert make_agent("sac", env_id).gamma == AGENT_DEFAULTS["pendulum"]["sac"]["gamma"]
    else:  # the id alone: inferred from the env's spec
        assert_built_with(make_agent("sac", env_id), expected)


@pytest.mark.parametrize("explicit", [False, True], ids=["inferred", "task="])
def test_a_custom_task_gets_the_base_defaults(explicit):
    """A CustomTask (no row in the table, not known to get_task by name) is inferred from its
    learned VecEnv or given as task=, and gets the algorithm's base defaults."""
    task = CustomTask(
        "my_pendulum",
        state_names=("theta", "thetadot"),
        action_names=("torque",),
        dt=0.05,
        reward=lambda x, u, x_next: -(x_next[:, 0] ** 2),
        action_low=-2.0,
        action_high=2.0,
        start_low=-1.0,
        start_high=1.0,
        max_episode_steps=20,
    )
    venv = LearnedVecEnv(HybridODE(None, MLPResidual(2, 1), dt=0.05), task, 4)  # a neural ODE
    agent = make_agent("sac", venv, **({"task": task} if explicit else {}))
    assert agent.gamma == 0.99  # SB3's default, no task row applied
    assert_built_with(agent, default_hyperparameters(task, "sac"))
    assert default_hyperparameters(task, "sac") == BASE_DEFAULTS["sac"]


def test_default_hyperparameters_returns_a_copy():
    params = default_hyperparameters("pendulum", "SAC")
    assert params == default_hyperparameters(get_task("pendulum"), "sac")
    params["policy_kwargs"]["net_arch"].append(7)
    params["gamma"] = 0.5
    assert BASE_DEFAULTS["sac"]["policy_kwargs"]["net_arch"] == [64, 64]
    assert default_hyperparameters("pendulum", "sac")["gamma"] == 0.98


# --- overrides ------------------------------------------------------------------------------
def test_overrides_replace_table_values_and_policy_kwargs_merge():
    user_policy_kwargs = {"activation_fn": torch.nn.Tanh}
    agent = make_agent(
        "sac", "pendulum", learning_rate=5e-4, gamma=0.9, policy_kwargs=user_policy_kwargs
    )
    assert optimizer_lr(agent) == pytest.approx(5e-4)
    assert agent.gamma == 0.9
    assert hidden_sizes(agent) == [64, 64]  # the table's net_arch survives the merge
    assert any(isinstance(m, torch.nn.Tanh) for m in agent.actor.latent_pi)
    assert not any(isinstance(m, torch.nn.ReLU) for m in agent.actor.latent_pi)
    assert user_policy_kwargs == {"activation_fn": torch.nn.Tanh}  # not mutated

    agent = make_agent("ppo", "cartpole_swingup", policy_kwargs={"net_arch": [16]})
    assert hidden_sizes(agent) == [16]
    assert AGENT_DEFAULTS["cartpole_swingup"]["ppo"]["policy_kwargs"] == {"net_arch": [128, 128]}


def test_action_noise_shorthand_none_and_objects():
    agent = make_agent("td3", "pendulum", action_noise=0.3)
    assert np.all(agent.action_noise._sigma == 0.3)
    assert make_agent("td3", "pendulum", action_noise=None).action_noise is None
    noise = NormalActionNoise(np.zeros(1), np.full(1, 0.2))
    assert make_agent("sac", "pendulum", action_noise=noise).action_noise is noise
    with pytest.raises(ValueError, match=r"action_noise .* std > 0, got -0.1"):
        make_agent("td3", "pendulum", action_noise=-0.1)


# --- which task -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make_env", "task"),
    [
        (lambda: gym.make("Pendulum-v1"), "pendulum"),  # Gymnasium's env: through its id
        (lambda: get_task("lotka_volterra").make_real_env(), "lotka_volterra"),
        (lambda: gym.make("hybridgym/DataCenter-v0", num_zones=2), "datacenter"),
    ],
    ids=["gymnasium-id", "hybridgym-env", "env-with-kwargs"],
)
def test_task_is_inferred_from_a_real_env(make_env, task):
    env = make_env()
    agent = make_agent("sac", env)
    assert agent.observation_space == env.observation_space
    assert_built_with(agent, default_hyperparameters(task, "sac"))


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "VecNormalize(VecMonitor)"])
def test_task_is_inferred_from_a_learned_vec_env(wrap):
    venv = learned_vec_env()
    if wrap:
        venv = VecNormalize(VecMonitor(venv), gamma=0.98)
    agent = make_agent("td3", venv, learning_starts=100, batch_size=32)
    assert_built_with(agent, {**default_hyperparameters("pendulum", "td3"), "learning_starts": 100})
    agent.learn(total_timesteps=200)
    assert agent.num_timesteps >= 200
    # the float noise shorthand became one noise process per environment
    assert isinstance(agent.action_noise, VectorizedActionNoise)
    assert agent.action_noise.n_envs == 4


def test_an_explicit_task_wins_over_the_inferred_one():
    agent = make_agent("sac", gym.make("Pendulum-v1"), task="cartpole_swingup")
    assert hidden_sizes(agent) == [128, 128]
    assert agent.gamma == AGENT_DEFAULTS["cartpole_swingup"]["sac"]["gamma"]
    with pytest.raises(ValueError, match="Did you mean 'pendulum'"):
        make_agent("sac", "Pendulum-v1", task="pendulm")


@pytest.mark.parametrize(
    ("env", "task"),
    [
        ("pendulum", "pendulum"),
        ("Pendulum-v1", "pendulum"),
        ("cartpole_swingup", "cartpole_swingup"),
        ("hybridgym/CartPoleSwingUp-v0", "cartpole_swingup"),
        ("hybridgym.envs:hybridgym/LotkaVolterra-v0", "lotka_volterra"),
    ],
)
def test_string_envs_are_ids_or_task_names(env, task):
    agent = make_agent("ppo", env)
    expected = get_task(task)
    assert agent.env.get_attr("spec")[0].id == expected.real_env_id
    assert agent.observation_space == expected.observation_space
    assert_built_with(agent, default_hyperparameters(task, "ppo"))


# --- bad input ------------------------------------------------------------------------------
def test_algo_names_are_case_insensitive_and_unknown_ones_are_errors():
    assert isinstance(make_agent("SAC", "pendulum"), SAC)
    assert isinstance(make_agent("Td3", "pendulum"), TD3)
    with pytest.raises(ValueError, match=r"unknown algo 'sacc'; known: ppo, sac, td3\. .*'sac'"):
        make_agent("sacc", "pendulum")
    with pytest.raises(ValueError, match="unknown algo 'ddpg'"):
        default_hyperparameters("pendulum", "ddpg")


def test_unknown_env_strings_are_errors_with_suggestions():
    with pytest.raises(ValueError, match=r"'pendulm' is neither .* Did you mean 'pendulum'"):
        make_agent("sac", "pendulm")
    with pytest.raises(TypeError, match="env must be"):
        make_agent("sac", 3)


def test_unknown_keyword_arguments_are_errors_naming_algo_and_key():
    with pytest.raises(ValueError, match=r"SAC .*'learning_rat'\. Did you mean 'learning_rate'"):
        make_agent("sac", "pendulum", learning_rat=1e-3)
    with pytest.raises(ValueError, match=r"PPO .*'action_noise'"):
        make_agent("ppo", "pendulum", action_noise=0.1)
    with pytest.raises(ValueError, match=r"policy_kwargs of TD3Policy .*'net_archh'"):
        make_agent("td3", "pendulum", policy_kwargs={"net_archh": [8]})
    with pytest.raises(ValueError, match=r"unknown policy 'MlpPolicyy' for SAC"):
        make_agent("sac", "pendulum", policy="MlpPolicyy")


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_off_policy_algos_on_discrete_actions_point_to_ppo(algo):
    with pytest.raises(ValueError, match=r"Box.* Discrete\(2\); use make_agent\('ppo'"):
        make_agent(algo, "CartPole-v1")
    agent = make_agent("ppo", "CartPole-v1")
    assert isinstance(agent.action_space, spaces.Discrete)
    assert_built_with(agent, BASE_DEFAULTS["ppo"])


# --- seeds and logging ----------------------------------------------------------------------
TINY = {
    "sac": {"learning_starts": 100, "batch_size": 64},
    "td3": {"learning_starts": 100, "batch_size": 64},
    "ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
}
OBS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [-1.0, 0.0, -2.0]], dtype=np.float32)


def first_actions(algo: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions taken during a 300-step ``learn`` and the greedy actions after it."""
    agent = make_agent(algo, "pendulum", seed=seed, **TINY[algo])
    agent.learn(total_timesteps=300)
    buffer = agent.rollout_buffer if algo == "ppo" else agent.replay_buffer
    taken = buffer.actions[: 128 if algo == "ppo" else 300].copy()
    greedy, _ = agent.predict(OBS, deterministic=True)
    return taken, greedy


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_same_seed_same_actions_other_seed_other_actions(algo):
    taken, greedy = first_actions(algo, seed=1)
    taken_again, greedy_again = first_actions(algo, seed=1)
    taken_other, greedy_other = first_actions(algo, seed=2)
    np.testing.assert_array_equal(taken, taken_again)
    np.testing.assert_array_equal(greedy, greedy_again)
    assert not np.allclose(taken, taken_other)
    assert not np.allclose(greedy, greedy_other)


def test_tensorboard_missing_is_an_import_error_saying_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        make_agent("sac", "pendulum", tensorboard_log=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_log_gets_an_events_file(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    agent = make_agent("ppo", "pendulum", tensorboard_log=tmp_path, **TINY["ppo"])
    agent.learn(total_timesteps=128)
    assert list(tmp_path.glob("**/events.out.tfevents.*"))


def test_learning_curve_evaluates_on_schedule_and_stops_at_the_target():
    from hybridgym.agents import learning_curve

    agent = make_agent("sac", "Pendulum-v1", seed=0, learning_starts=50, buffer_size=1000)
    curve = learning_curve(agent, "pendulum", 150, 50, episodes=1, seed=3)
    assert [steps for steps, _ in curve.points] == [50, 100, 150]
    assert all(-2000 < value < 0 for _, value in curve.points)
    assert curve.steps_to_target is None and curve.train_seconds > 0
    agent = make_agent("sac", "Pendulum-v1", seed=0, learning_starts=50, buffer_size=1000)
    early = learning_curve(agent, "pendulum", 150, 50, episodes=1, seed=3, target=-1e9)
    assert early.points == early.points[:1] and early.steps_to_target == 50
    assert agent.num_timesteps == 50
    with pytest.raises(ValueError, match="every"):
        learning_curve(agent, "pendulum", 150, 0)
