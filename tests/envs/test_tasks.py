"""Tasks are the one source of truth: they reproduce the real envs transition by transition."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from hybridgym.envs import get_task, task_names
from hybridgym.envs.systems.cartpole_swingup import TRACK_LIMIT

TASK_CASES = [
    ("pendulum", {}),
    ("lotka_volterra", {}),
    ("datacenter", {}),
    ("datacenter", {"num_zones": 1}),
    ("cartpole_swingup", {}),
]


def _random_transitions(task, n, seed, starts=None):
    """Collect n transitions of the real env under uniform random actions.

    Returns states, actions, next states (float64 numpy, from the env's physical state),
    rewards and terminated flags as the env reported them.
    """
    env = task.make_real_env()
    space = env.action_space
    rng = np.random.default_rng(seed)
    states, actions, next_states, rewards, terms = [], [], [], [], []
    episode = 0
    while len(rewards) < n:
        options = None if starts is None else {"state": starts[episode % len(starts)]}
        env.reset(seed=seed + episode, options=options)
        episode += 1
        done = False
        while not done and len(rewards) < n:
            state = np.array(env.unwrapped.state, dtype=np.float64)
            action = rng.uniform(space.low, space.high).astype(np.float32)
            _, reward, terminated, truncated, _ = env.step(action)
            states.append(state)
            actions.append(action)
            next_states.append(np.array(env.unwrapped.state, dtype=np.float64))
            rewards.append(reward)
            terms.append(terminated)
            done = terminated or truncated
    return (
        torch.as_tensor(np.array(states)),
        torch.as_tensor(np.array(actions), dtype=torch.float64),
        torch.as_tensor(np.array(next_states)),
        np.array(rewards),
        np.array(terms),
    )


@pytest.mark.parametrize(("name", "kwargs"), TASK_CASES)
def test_task_reward_and_termination_equal_the_real_env(name, kwargs):
    task = get_task(name, **kwargs)
    s, a, s_next, rewards, terms = _random_transitions(task, 1000, seed=3)
    reward = task.reward(s, a, s_next)
    assert isinstance(reward, torch.Tensor) and reward.shape == (1000,)
    # Gymnasium squares the float32 torque in float32: agreement to 1e-9, not bitwise
    np.testing.assert_allclose(reward.numpy(), rewards, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(task.terminated(s_next).numpy(), terms)


def test_cartpole_termination_both_ways():
    task = get_task("cartpole_swingup")
    # starts near both track ends, moving outwards: many episodes end by leaving the track
    starts = [np.array([sign * 2.3, sign * 1.5, np.pi, 0.0]) for sign in (-1.0, 1.0)]
    s, a, s_next, rewards, terms = _random_transitions(task, 1000, seed=5, starts=starts)
    assert terms.sum() >= 10 and (~terms).sum() >= 10
    np.testing.assert_array_equal(task.terminated(s_next).numpy(), terms)
    np.testing.assert_array_equal(terms, np.abs(s_next[:, 0].numpy()) > TRACK_LIMIT)
    np.testing.assert_allclose(task.reward(s, a, s_next).numpy(), rewards, rtol=1e-12)


def test_pendulum_true_step_reproduces_gymnasium():
    task = get_task("pendulum")
    s, a, s_next, _, _ = _random_transitions(task, 1000, seed=11)
    # Gymnasium multiplies the float32 torque in float32 (NEP 50), hence 1e-7, not bitwise
    np.testing.assert_allclose(task.true_step(s, a).numpy(), s_next.numpy(), rtol=0, atol=1e-7)
    # Gymnasium clips the torque: so does the task (actions beyond the bounds)
    wide = a * 3.0
    np.testing.assert_allclose(
        task.true_step(s, wide).numpy(), task.true_step(s, task.clip_action(wide)).numpy()
    )


@pytest.mark.parametrize(("name", "kwargs"), TASK_CASES)
def test_observation_state_round_trip(name, kwargs):
    task = get_task(name, **kwargs)
    env = task.make_real_env()
    observations = []
    env.action_space.seed(0)  # repeatable (it failed once unseeded); episodes may end early
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        observations.append(obs)
        for _ in range(40):
            obs, _, terminated, *_ = env.step(env.action_space.sample())
            observations.append(obs)
            if terminated:
                break
    obs = np.array(observations, dtype=np.float32)
    assert len(obs) > 100
    back = task.state_to_obs(task.obs_to_state(obs))
    np.testing.assert_allclose(back, obs, rtol=1e-6, atol=1e-6)
    # torch path gives the same
    back_t = task.state_to_obs(task.obs_to_state(torch.as_tensor(obs)))
    np.testing.assert_allclose(back_t.numpy(), back, rtol=1e-6, atol=1e-6)
    # and the obs of a physical state is what the env reports (noise-free envs)
    state = env.unwrapped.state
    np.testing.assert_allclose(task.state_to_obs(state[None])[0], obs[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["pendulum", "cartpole_swingup"])
def test_state_difference_wraps_angles(name):
    task = get_task(name)
    (dim,) = task.angle_dims
    a = torch.zeros(3, task.state_dim, dtype=torch.float64)
    b = torch.zeros(3, task.state_dim, dtype=torch.float64)
    a[:, dim] = torch.tensor([np.pi - 0.1, 0.3, 4 * np.pi + 0.2], dtype=torch.float64)
    b[:, dim] = torch.tensor([-np.pi + 0.1, 0.1, 0.0], dtype=torch.float64)
    other = next(i for i in range(task.state_dim) if i != dim)
    a[:, other] = 5.0
    diff = task.state_difference(a, b)
    np.testing.assert_allclose(diff[:, dim].numpy(), [-0.2, 0.2, 0.2], atol=1e-12)
    np.testing.assert_allclose(diff[:, other].numpy(), [5.0, 5.0, 5.0])


@pytest.mark.parametrize(("name", "kwargs"), TASK_CASES)
def test_initial_states_numpy_and_torch(name, kwargs):
    task = get_task(name, **kwargs)
    from_numpy = task.sample_initial_states(500, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(0)
    from_torch = task.sample_initial_states(500, gen)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.shape == (500, task.state_dim)
    assert from_torch.dtype == torch.float32 and from_torch.shape == (500, task.state_dim)
    again = task.sample_initial_states(500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(from_torch, again)
    for states in (from_numpy, from_torch.numpy()):
        obs = task.state_to_obs(states).astype(np.float32)
        assert all(task.observation_space.contains(o) for o in obs)
    # same distribution either way: means agree within sampling error
    spread = from_numpy.std(0) + 1e-9
    assert np.all(np.abs(from_numpy.mean(0) - from_torch.numpy().mean(0)) < 0.3 * spread + 1e-6)


def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown task 'pendlum'.*Did you mean 'pendulum'"):
        get_task("pendlum")
    with pytest.raises(ValueError, match="known tasks: cartpole_swingup, datacenter"):
        get_task("nothing-like-it")
    with pytest.raises(TypeError, match="task name"):
        get_task(3)
    assert task_names() == ("cartpole_swingup", "datacenter", "lotka_volterra", "pendulum")


def test_get_task_passes_a_task_through():
    task = get_task("datacenter", num_zones=3)
    assert get_task(task) is task
    assert task == get_task("datacenter", num_zones=3) != get_task("datacenter", num_zones=2)
    assert task.make_real_env().unwrapped.task == task


@pytest.mark.parametrize(
    ("env_id", "kwargs", "error", "pattern"),
    [
        ("hybridgym/DataCenter-v0", {"num_zones": -2}, ValueError, "num_zones must be an int >= 1"),
        ("hybridgym/DataCenter-v0", {"num_zones": 0}, ValueError, "num_zones"),
        ("hybridgym/DataCenter-v0", {"num_zones": 2.5}, TypeError, "num_zones must be an int"),
        ("hybridgym/DataCenter-v0", {"num_zones": True}, TypeError, "num_zones"),
        ("hybridgym/DataCenter-v0", {"load_noise": -0.1}, ValueError, r"load_noise must be in"),
        (
            "hybridgym/DataCenter-v0",
            {"load_noise": "high"},
            TypeError,
            "load_noise must be a float",
        ),
        (
            "hybridgym/LotkaVolterra-v0",
            {"obs_noise": "0.1"},
            TypeError,
            "obs_noise must be a float",
        ),
        ("hybridgym/LotkaVolterra-v0", {"obs_noise": -1.0}, ValueError, r"obs_noise must be in"),
        ("hybridgym/LotkaVolterra-v0", {"obs_noise": None}, TypeError, "obs_noise"),
    ],
)
def test_bad_construction_arguments(env_id, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gym.make(env_id, **kwargs)


def test_bad_prior_perturbation():
    with pytest.raises(ValueError, match=r"perturbation must be a number in \[0, 1\)"):
        get_task("pendulum").make_prior(perturbation=1.5)


def test_bad_actions_and_reset_options():
    env = gym.make("hybridgym/CartPoleSwingUp-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.array([np.nan]))
    with pytest.raises(ValueError, match=r"action must have shape \(1,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"sate": [0, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"options\['state'\] must be a finite array of shape"):
        env.reset(options={"state": [0.0, 0.0]})
    # the env is still usable after refused input, and out-of-range actions are clipped
    env.reset(seed=0)
    s0 = env.state
    env.step(np.array([5.0]))
    clipped = env.state
    env.reset(options={"state": s0})
    env.step(np.array([1.0]))
    np.testing.assert_array_equal(env.state, clipped)


def test_lotka_volterra_observation_noise():
    env = gym.make("hybridgym/LotkaVolterra-v0", obs_noise=0.1).unwrapped
    log_ratios = []
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        log_ratios.append(np.log(obs / env.state))
        for _ in range(20):
            obs, *_ = env.step(env.action_space.sample())
            log_ratios.append(np.log(obs / env.state))
    log_ratios = np.array(log_ratios)
    assert abs(log_ratios.std() - 0.1) < 0.01
    assert abs(log_ratios.mean()) < 0.02
    clean = gym.make("hybridgym/LotkaVolterra-v0").unwrapped
    obs, _ = clean.reset(seed=0)
    np.testing.assert_allclose(obs, clean.state, rtol=1e-7)


def test_datacenter_load_noise_is_stationary_at_the_stated_level():
    sigma = 0.2
    env = gym.make("hybridgym/DataCenter-v0", num_zones=8, load_noise=sigma).unwrapped
    task = env.task
    from hybridgym.envs.systems.datacenter import NOMINAL_LOAD, load_profile

    env.reset(seed=0)
    logs = []
    for _ in range(288):
        env.step(np.full(8, 0.5, dtype=np.float32))
        state = env.state
        nominal = NOMINAL_LOAD * load_profile(state[-1])
        logs.append(np.log(state[8:16] / nominal))
    logs = np.array(logs)
    assert abs(logs.std() - sigma) < 0.05
    # load_noise=0 follows the deterministic profile exactly
    env0 = gym.make("hybridgym/DataCenter-v0", num_zones=2, load_noise=0.0).unwrapped
    env0.reset(seed=0)
    for _ in range(50):
        env0.step(np.zeros(2, dtype=np.float32))
    state = env0.state
    np.testing.assert_allclose(state[2:4], NOMINAL_LOAD * load_profile(state[-1]), rtol=1e-6)
    assert task.num_zones == 8


def test_cached_action_bounds_made_under_inference_mode_work_with_autograd():
    task = get_task("pendulum")
    fresh = type(task)()
    with torch.inference_mode():
        fresh.clip_action(torch.zeros(2, 1))  # fills the cache
    action = torch.full((2, 1), 3.0, requires_grad=True)
    clipped = fresh.clip_action(action * 0.5)
    clipped.sum().backward()
    assert clipped.tolist() == [[1.5], [1.5]] and action.grad.tolist() == [[0.5], [0.5]]


def test_check_dataset_names_the_task_the_data_belongs_to():
    from hybridgym.models import TrajectoryDataset

    pendulum, lotka = get_task("pendulum"), get_task("lotka_volterra")
    data = TrajectoryDataset.collect(pendulum.make_real_env(), pendulum, steps=5)
    assert pendulum.describes(data) and not lotka.describes(data)
    pendulum.check_dataset(data)  # no error
    with pytest.raises(ValueError, match=r"data/ holds data of task 'pendulum'.*'lotka_volterra'"):
        lotka.check_dataset(data, "data/")
    odd = TrajectoryDataset(state_names=("x", "v"), action_names=("u",), dt=0.05)
    with pytest.raises(ValueError, match="holds data of another system"):
        pendulum.check_dataset(odd)
    slower = TrajectoryDataset(state_names=pendulum.state_names, action_names=("torque",), dt=0.1)
    assert not pendulum.describes(slower)


def test_model_task_reads_the_prior_and_learned_envs_refuse_another_task(monkeypatch):
    from hybridgym.envs import LearnedEnv, PendulumTask, model_task
    from hybridgym.envs import task as task_module
    from hybridgym.models import Ensemble, HybridODE

    pendulum = get_task("pendulum")
    model = HybridODE(pendulum.make_prior(), None, dt=pendulum.dt)
    assert model_task(model) == pendulum and model_task(Ensemble([model, model])) == pendulum
    assert model_task(pendulum.make_oracle()) is None
    with pytest.raises(ValueError, match=r"task 'cartpole_swingup' has 4 .*prior is task 'pendu"):
        LearnedEnv(model, "cartpole_swingup")

    class Twin(PendulumTask):  # the same variables as the pendulum: only the prior tells
        name = "pendulum_twin"

    monkeypatch.setitem(task_module._TASKS, "pendulum_twin", Twin)
    with pytest.raises(ValueError, match="prior is that of task 'pendulum', but the task is 'pen"):
        LearnedEnv(model, "pendulum_twin")
    assert LearnedEnv(HybridODE(Twin().make_prior(), None, dt=0.05), "pendulum_twin").task.name


def test_make_residual_is_structured_where_the_system_has_units():
    from hybridgym.models import MLPResidual, UnitResidual

    dc = get_task("datacenter", num_zones=3)
    residual = dc.make_residual(hidden=(16,))
    assert isinstance(residual, UnitResidual) and residual.num_units == 3
    assert residual.unit_states == [[0, 3], [1, 4], [2, 5]]
    assert residual.shared_states == [6, 7] and residual.hidden == (16,)
    assert isinstance(dc.make_residual(structured=False), MLPResidual)
    pendulum = get_task("pendulum").make_residual(activation="relu")
    assert isinstance(pendulum, MLPResidual) and pendulum.angle_dims == (0,)
    assert pendulum.input_dims is None
