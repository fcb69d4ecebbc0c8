"""GymTask: any Gymnasium env with Box spaces as a task (spaces, dt, episode length, start
states from the real env's resets, refusals), its learned reward and termination, and
resolve_task."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from hybridgym.envs import GymTask, PendulumTask, get_task, resolve_task
from hybridgym.models import PhysicsPrior, TrajectoryDataset
from hybridgym.models.reward_model import load_parts, save_parts


def test_pendulum_v1_spaces_dt_episode_length_and_names():
    task = GymTask("Pendulum-v1")
    env = gym.make("Pendulum-v1")
    assert task.name == task.real_env_id == "Pendulum-v1"
    assert task.observation_space == env.observation_space
    assert task.action_space == env.action_space
    assert (task.state_dim, task.action_dim, task.obs_dim) == (3, 1, 3)
    assert task.dt == 0.05 and task.time_unit == "s"
    assert task.max_episode_steps == 200
    assert task.return_threshold is None  # Gymnasium's Pendulum-v1 has no reward_threshold
    assert task.state_names == ("cos_theta", "sin_theta", "theta_dot")
    assert task.action_names == ("torque",)
    assert task.angle_dims == ()
    assert task.make_prior() is None  # no prior: a black-box model
    assert "black box" in task.summary and "learned reward" in task.summary


def test_mountain_car_has_no_dt_so_the_time_unit_is_steps():
    task = GymTask("MountainCarContinuous-v0")
    assert task.dt == 1.0 and task.time_unit == "steps"
    assert task.max_episode_steps == 999
    assert task.return_threshold == 90.0
    assert task.state_names == ("position", "velocity")
    assert task.action_space.low.tolist() == [-1.0] and task.action_space.high.tolist() == [1.0]


def test_an_env_without_known_names_gets_x_and_u_names():
    task = GymTask("hybridgym_test/Cart-v0")
    assert task.state_names == ("x0", "x1") and task.action_names == ("u0",)
    assert task.dt == 0.1 and task.max_episode_steps == 50


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_start_states_are_the_real_envs_resets(env_id):
    task = GymTask(env_id, start_pool=20)
    env = gym.make(env_id)
    resets = np.stack([env.reset(seed=k)[0] for k in range(20)]).astype(np.float64)
    np.testing.assert_array_equal(task.start_states, resets)
    drawn = task.sample_initial_states(50, np.random.default_rng(0))
    assert drawn.dtype == np.float64 and drawn.shape == (50, task.state_dim)
    assert all(any(np.array_equal(row, r) for r in resets) for row in drawn)
    batch = task.sample_initial_states(7, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert batch.shape == (7, task.state_dim) and batch.dtype == torch.float64
    assert all(any(np.allclose(row, r) for r in resets) for row in batch.numpy())


def test_make_real_env_is_the_env_with_its_kwargs():
    task = GymTask("Pendulum-v1", {"g": 9.81})
    env = task.make_real_env()
    assert env.unwrapped.g == 9.81 and env.spec.max_episode_steps == 200
    assert task.real_env_kwargs == {"g": 9.81}
    assert task.record()["env_kwargs"] == {"g": 9.81}


# --- what is refused ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        ("CartPole-v1", r"action space Discrete\(2\) \(Discrete\).*Box action space"),
        ("hybridgym_test/DictObs-v0", r"observation space Dict.*FlattenObservation"),
        ("hybridgym_test/Unbounded-v0", r"unbounded actions \(Box\(-inf, inf.*finite bounds"),
    ],
)
def test_unsupported_spaces_are_refused_naming_the_space(env_id, expected):
    with pytest.raises(ValueError, match=expected):
        GymTask(env_id)


def test_an_env_without_time_limit_needs_one():
    with pytest.raises(ValueError, match=r"has no time limit.*--max-episode-steps"):
        GymTask("hybridgym_test/CartNoLimit-v0")
    task = GymTask("hybridgym_test/CartNoLimit-v0", max_episode_steps=30)
    assert task.max_episode_steps == 30
    env = task.make_real_env()
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        steps, done = steps + 1, terminated or truncated
    assert steps <= 30


def test_an_unknown_id_names_close_ids_and_tasks():
    with pytest.raises(ValueError, match=r"no task or Gymnasium env 'Pendulum-v2'.*'Pendulum-v1'"):
        GymTask("Pendulum-v2")
    with pytest.raises(ValueError, match=r"Did you mean 'pendulum' \(the built-in task"):
        GymTask("Pendulm")


@pytest.mark.parametrize("env_id", [":", ":Pendulum-v1", "gymnasium.envs:", " : "])
def test_a_module_id_with_an_empty_part_is_refused_saying_the_form(env_id):
    with pytest.raises(ValueError, match=r"named 'package.module:Id', with both parts"):
        GymTask(env_id)


# --- given reward and termination ---------------------------------------------------------
def test_a_given_reward_and_termination_are_used_as_they_are():
    def reward(x, u, x_next):
        return -(x_next[:, 0] ** 2)

    def terminated(x_next):
        return x_next[:, 0].abs() > 1

    task = GymTask("hybridgym_test/Cart-v0", reward=reward, terminated=terminated)
    assert task.learned_parts == {} and task.learn(None) == {}
    x = torch.tensor([[0.5, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(task.reward(x, torch.zeros(2, 1), x).numpy(), [-0.25, -4.0])
    assert task.terminated(x).tolist() == [False, True]
    assert task.record()["reward"].endswith(
        ":test_a_given_reward_and_termination_are_used_as_they_are.<locals>.reward"
    )


def test_reward_and_termination_specs_load_from_files(tmp_path):
    (tmp_path / "rewards.py").write_text(
        "def reward(x, u, x_next):\n    return -x_next[:, 0] ** 2\n\n"
        "def ended(x_next):\n    return x_next[:, 0].abs() > 1\n"
    )
    task = GymTask(
        "hybridgym_test/Cart-v0",
        reward=f"{tmp_path}/rewards.py:reward",
        terminated=f"{tmp_path}/rewards.py:ended",
    )
    x = torch.tensor([[2.0, 0.0]])
    assert task.reward(x, torch.zeros(1, 1), x).item() == -4.0
    assert task.terminated(x).tolist() == [True]
    assert task.record()["terminated"] == f"{tmp_path}/rewards.py:ended"
    with pytest.raises(
        ValueError,
        match=r"--reward: .*rewards.py line 1: reward\(state, action, next_state\) "
        r"returned \(8, 2\)",
    ):
        (tmp_path / "rewards.py").write_text("def reward(x, u, x_next):\n    return x\n")
        GymTask("hybridgym_test/Cart-v0", reward=f"{tmp_path}/rewards.py:reward")


# --- learned reward and termination -------------------------------------------------------
def _random_data(task, steps, seed, episode_steps):
    env = task.make_real_env(max_episode_steps=episode_steps)
    return TrajectoryDataset.collect(env, task, steps=steps, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "episode_steps", "bound"),
    # measured (seeds 0, 1, 2): Pendulum-v1 0.016, 0.027, 0.024; MountainCarContinuous-v0
    # 0.011, 0.013, 0.015 (RMSE / std of the true rewards on held-out episodes): 2x margin
    [("Pendulum-v1", 100, 0.055), ("MountainCarContinuous-v0", 100, 0.03)],
)
def test_learned_reward_matches_the_true_reward_on_held_out_transitions(
    env_id, episode_steps, bound
):
    """3,000 random real steps in episodes from the env's start states; a quarter of the
    episodes held out. The learned reward's RMSE on them, divided by the std of the true
    rewards, is at most ``bound``."""
    torch.manual_seed(0)
    task = GymTask(env_id)
    data = _random_data(task, 3_000, seed=0, episode_steps=episode_steps)
    train, held_out = data.split(0.25, seed=0)
    reports = task.learn(train)
    assert reports["termination"].terminal_states == 0
    x, u, x_next = (torch.as_tensor(a, dtype=torch.float32) for a in held_out.transitions())
    truth = held_out.rewards()
    with torch.no_grad():
        predicted = task.reward(x, u, x_next).double().numpy()
    relative = np.sqrt(np.mean((predicted - truth) ** 2)) / truth.std()
    assert relative <= bound, f"RMSE / std = {relative:.4f}"
    # numpy in, numpy out, the same numbers
    np.testing.assert_allclose(
        task.reward(*(a.numpy() for a in (x, u, x_next))), predicted, rtol=1e-5, atol=1e-6
    )
    # an env that never terminated in the data never terminates
    assert not task.terminated(x_next).any()


def _termination_accuracy(task, data):
    """Share of recorded next states whose learned termination matches the recording."""
    states, labels = [], []
    for ep in data.episodes:
        states.append(ep.states[1:])
        flags = np.zeros(ep.num_steps, dtype=bool)
        flags[-1] = ep.terminated
        labels.append(flags)
    said = task.terminated(torch.as_tensor(np.concatenate(states), dtype=torch.float32)).numpy()
    labels = np.concatenate(labels)
    return said[labels].mean(), (~said[~labels]).mean()


def test_learned_termination_on_an_env_that_terminates():
    torch.manual_seed(0)
    task = GymTask("hybridgym_test/Cart-v0")
    data = _random_data(task, 4_000, seed=0, episode_steps=50)
    assert sum(ep.terminated for ep in data.episodes) > 20
    train, held_out = data.split(0.25, seed=0)
    report = task.learn(train)["termination"]
    assert report.terminal_states == sum(ep.terminated for ep in train.episodes)
    recall, specificity = _termination_accuracy(task, held_out)
    assert recall >= 0.9 and specificity >= 0.98, (recall, specificity)
    # the reward of an ending transition (0 here) comes from the terminal head
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    x_next = torch.tensor([[0.0, 0.0], [1.5, 0.0]])
    reward = task.reward(x, torch.zeros(2, 1), x_next)
    np.testing.assert_allclose(reward.numpy(), [1.0, 0.0], atol=0.1)


@pytest.mark.slow
def test_learned_termination_on_inverted_pendulum():
    pytest.importorskip("mujoco", reason="needs MuJoCo: pip install 'hybridgym[mujoco]'")
    torch.manual_seed(0)
    task = GymTask("InvertedPendulum-v5")
    data = _random_data(task, 3_000, seed=0, episode_steps=1000)
    train, held_out = data.split(0.25, seed=0)
    task.learn(train)
    recall, specificity = _termination_accuracy(task, held_out)
    assert recall >= 0.95 and specificity >= 0.98, (recall, specificity)


def test_learned_parts_save_and_load(tmp_path):
    torch.manual_seed(0)
    task = GymTask("hybridgym_test/Cart-v0")
    task.learn(_random_data(task, 500, seed=0, episode_steps=50))
    save_parts(task.learned_parts, tmp_path / "parts.pt")
    other = GymTask("hybridgym_test/Cart-v0")
    x = torch.randn(16, 2)
    assert not torch.equal(other.reward(x, x[:, :1], x), task.reward(x, x[:, :1], x))
    load_parts(other.learned_parts, tmp_path / "parts.pt")
    assert torch.equal(other.reward(x, x[:, :1], x), task.reward(x, x[:, :1], x))
    assert torch.equal(other.terminated(x), task.terminated(x))
    with pytest.raises(ValueError, match="learned parts"):
        load_parts({"reward": other.reward_model}, tmp_path / "parts.pt")


# --- priors and resolve_task --------------------------------------------------------------
class CartPrior(PhysicsPrior):
    def __init__(self):
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("gain", 0.5, positive=True)

    def forward(self, x, u):
        return torch.stack([x[:, 1], self.constants()["gain"] * u[:, 0]], dim=1)


def test_a_prior_class_gives_fresh_instances_and_wrong_sizes_are_refused():
    task = GymTask("hybridgym_test/Cart-v0", prior=CartPrior)
    first, second = task.make_prior(), task.make_prior()
    assert isinstance(first, CartPrior) and first is not second
    with pytest.raises(ValueError, match=r"CartPrior has state_dim 2, but the system has 3"):
        GymTask("Pendulum-v1", prior=CartPrior)


def test_resolve_task():
    assert isinstance(resolve_task("pendulum"), PendulumTask)
    assert isinstance(resolve_task("Pendulum-v1"), GymTask)  # an id: the env as it is
    task = get_task("datacenter", num_zones=2)
    assert resolve_task(task) is task
    assert resolve_task("datacenter", env_kwargs={"num_zones": 2}).num_zones == 2
    with pytest.raises(ValueError, match=r"built-in task with its own reward"):
        resolve_task("pendulum", reward="m:f")


# --- a GymTask serves learned envs like any task ----------------------------------------------
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "hybridgym_test/Cart-v0"])
def test_a_learned_env_of_a_gym_task_passes_the_env_checkers(env_id):
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from hybridgym.envs import LearnedEnv, LearnedVecEnv
    from hybridgym.models import Ensemble, HybridODE, MLPResidual

    torch.manual_seed(0)
    task = GymTask(env_id)
    task.learn(_random_data(task, 300, seed=0, episode_steps=50))
    members = [
        HybridODE(None, MLPResidual(task.state_dim, task.action_dim, (8, 8)), task.dt)
        for _ in range(2)
    ]
    env = LearnedEnv(Ensemble(members), task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    obs, _ = env.reset(seed=3)
    assert any(np.allclose(obs, start) for start in task.start_states)  # a real reset's state
    venv = LearnedVecEnv(Ensemble(members), task, num_envs=4)
    venv.reset()
    _, rewards, _, _ = venv.step(np.zeros((4, task.action_dim), dtype=np.float32))
    assert rewards.shape == (4,) and np.all(np.isfinite(rewards))


def test_the_learned_termination_is_a_box_where_one_variable_explains_it():
    """The cart's episodes end when |position| > 1: the box finds the position's thresholds
    and leaves the velocity free, so a cart beyond them terminates at any velocity, even ones
    never recorded."""
    torch.manual_seed(0)
    task = GymTask("hybridgym_test/Cart-v0")
    task.learn(_random_data(task, 4_000, seed=0, episode_steps=50))
    model = task.termination_model
    assert bool(model.boxed)
    low, high = model.box_low.numpy(), model.box_high.numpy()
    assert np.isinf(low[1]) and np.isinf(high[1])  # velocity: free
    np.testing.assert_allclose([low[0], high[0]], [-1.0, 1.0], atol=0.05)
    states = torch.tensor([[1.2, 40.0], [-1.2, -40.0], [0.9, 40.0], [0.0, -40.0]])
    assert task.terminated(states).tolist() == [True, True, False, False]
    assert task.terminated(states.numpy()).tolist() == [True, True, False, False]
