"""Learned-model environments: API checks, oracle equivalence, batching, safety."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hybridgym.envs import LearnedEnv, LearnedVecEnv, LearnedVectorEnv, get_task, task_names
from hybridgym.models import Ensemble, HybridODE, MLPResidual, TrajectoryDataset

ACTION_ADVICE = ".*symmetric and normalized"


def _model(task, seed=0, scale=0.1):
    torch.manual_seed(seed)
    residual = MLPResidual(
        task.state_dim, task.action_dim, hidden=(16, 16), angle_dims=task.angle_dims
    )
    for p in residual.net[-1].parameters():
        torch.nn.init.normal_(p, std=scale)
    return HybridODE(
        task.make_prior(perturbation=0.0),
        residual,
        dt=task.dt,
        substeps=task.substeps if task.name != "pendulum" else 1,
    )


@pytest.mark.parametrize("name", task_names())
def test_check_env_passes_for_every_task(name):
    task = get_task(name, **({"num_zones": 3} if name == "datacenter" else {}))
    env = LearnedEnv(_model(task), task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=ACTION_ADVICE)
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


ORACLE_CASES = [
    ("lotka_volterra", {}),
    ("datacenter", {"load_noise": 0.0}),
    ("cartpole_swingup", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), ORACLE_CASES)
def test_oracle_model_reproduces_the_real_env(name, kwargs):
    """The true vector field with the real env's integrator: the same observations, rewards,
    terminated and truncated flags for 200 steps (episodes restart from the same states)."""
    task = get_task(name, **kwargs)
    real = task.make_real_env()
    learned = LearnedEnv(task.make_oracle(), task, dtype=torch.float64)
    rng = np.random.default_rng(0)
    steps, episode = 0, 0
    while steps < 200:
        obs_real, _ = real.reset(seed=episode)
        obs_learned, _ = learned.reset(options={"state": real.unwrapped.state})
        np.testing.assert_allclose(obs_learned, obs_real, atol=1e-5)
        done = False
        while not done and steps < 200:
            action = rng.uniform(real.action_space.low, real.action_space.high).astype(np.float32)
            o1, r1, term1, trunc1, _ = real.step(action)
            o2, r2, term2, trunc2, _ = learned.step(action)
            np.testing.assert_allclose(o2, o1, rtol=1e-5, atol=1e-5)
            assert r2 == pytest.approx(r1, rel=1e-5, abs=1e-5)
            assert (term2, trunc2) == (term1, trunc1), steps
            done = term1 or trunc1
            steps += 1
        episode += 1


def _drive_separately(model, task, n, seeds, actions, **kwargs):
    """N separate LearnedEnvs with SB3's same-step autoreset, by hand."""
    envs = [LearnedEnv(model, task, **kwargs) for _ in range(n)]
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)])
    out = [obs]
    for a in actions:
        step_obs, rewards, dones, terminal = [], [], [], []
        for env, ai in zip(envs, a, strict=True):
            o, r, term, trunc, _ = env.step(ai)
            terminal.append(o if term or trunc else None)
            if term or trunc:
                o, _ = env.reset()
            step_obs.append(o)
            rewards.append(r)
            dones.append(term or trunc)
        out.append((np.stack(step_obs), np.array(rewards), np.array(dones), terminal))
    return out


@pytest.mark.parametrize("name", ["pendulum", "cartpole_swingup"])
def test_vec_env_equals_separate_envs_across_autoresets(name):
    task = get_task(name)
    model = _model(task)
    n, steps = 5, 40
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, n, task.action_dim))
    expected = _drive_separately(
        model, task, n, [10 + i for i in range(n)], actions, max_episode_steps=15
    )
    vec = LearnedVecEnv(model, task, n, max_episode_steps=15)
    vec.seed(10)
    np.testing.assert_allclose(vec.reset(), expected[0], rtol=1e-6)
    resets = 0
    for a, (obs, rewards, dones, terminal) in zip(actions, expected[1:], strict=True):
        o, r, d, infos = vec.step(a.astype(np.float32))
        np.testing.assert_allclose(o, obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r, rewards, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(d, dones)
        for i in np.flatnonzero(d):
            np.testing.assert_allclose(
                infos[i]["terminal_observation"], terminal[i], rtol=1e-5, atol=1e-6
            )
            assert infos[i]["TimeLimit.truncated"] is True
            resets += 1
    assert resets >= n * 2


def test_gymnasium_vector_env_obeys_next_step_autoreset():
    task = get_task("pendulum")
    model = _model(task)
    vec = gym.make_vec(
        "hybridgym/Learned-v0", num_envs=3, model=model, task="pendulum", max_episode_steps=4
    )
    assert isinstance(vec.unwrapped, LearnedVectorEnv)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    single = LearnedEnv(model, task, max_episode_steps=4)
    obs, _ = vec.reset(seed=7)
    first, _ = single.reset(seed=8)  # env 1 of the vector env is seeded 7 + 1
    np.testing.assert_allclose(obs[1], first, rtol=1e-6)
    actions = np.full((3, 1), 0.5, dtype=np.float32)
    for _ in range(4):
        obs, rewards, term, trunc, _ = vec.step(actions)
        o, _r, _, t, _ = single.step(actions[1])
        np.testing.assert_allclose(obs[1], o, rtol=1e-5, atol=1e-6)
    assert trunc.all() and t
    # the next step resets: reset observation, zero reward, no flags; the action is ignored
    obs, rewards, term, trunc, _ = vec.step(actions)
    assert not term.any() and not trunc.any() and np.all(rewards == 0)
    restart, _ = single.reset()
    np.testing.assert_allclose(obs[1], restart, rtol=1e-6)
    obs, rewards, *_ = vec.step(actions)
    assert np.all(rewards != 0)


def test_gym_make_takes_a_checkpoint_and_a_task_name(tmp_path):
    task = get_task("lotka_volterra")
    path = _model(task).save(tmp_path / "lv.pt")
    env = gym.make("hybridgym/Learned-v0", model=str(path), task="lotka_volterra")
    assert isinstance(env.unwrapped, LearnedEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and env.unwrapped.task == task
    ens_path = Ensemble([_model(task, seed=s) for s in range(2)]).save(tmp_path / "ens.pt")
    env = gym.make("hybridgym/Learned-v0", model=ens_path, task=task)
    assert isinstance(env.unwrapped.model, Ensemble)
    with pytest.raises(ValueError, match="the model has 2 states and 2 actions, task 'pendulum'"):
        LearnedEnv(path, "pendulum")


def test_an_exploding_model_never_yields_nan():
    task = get_task("cartpole_swingup")
    model = _model(task)
    with torch.no_grad():
        model.residual.net[-1].weight.fill_(1e8)
    vec = LearnedVecEnv(model, task, 8)
    vec.seed(0)
    obs = vec.reset()
    diverged = 0
    for _ in range(30):
        obs, rewards, _dones, infos = vec.step(np.ones((8, 1), dtype=np.float32))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rewards))
        diverged += sum(info.get("model_diverged", False) for info in infos)
        for info in infos:
            if "terminal_observation" in info:
                assert np.all(np.isfinite(info["terminal_observation"]))
    assert diverged >= 8
    env = LearnedEnv(model, task)
    env.reset(seed=0)
    _, reward, term, trunc, info = env.step(np.ones(1, dtype=np.float32))
    assert info["model_diverged"] and trunc and not term and np.isfinite(reward)


def test_ensemble_modes_penalty_and_cutoff():
    task = get_task("pendulum")
    members = [_model(task, seed=s, scale=0.5) for s in range(3)]
    ens = Ensemble(members)
    x = torch.as_tensor(task.sample_initial_states(1, np.random.default_rng(0)))
    env = LearnedEnv(ens, task, ensemble_mode="random")
    chosen = set()
    for seed in range(20):
        env.reset(seed=seed)
        chosen.add(int(env.core.members[0]))
    assert chosen == {0, 1, 2}
    mean_env = LearnedEnv(ens, task, ensemble_mode="mean")
    mean_env.reset(options={"state": x[0].numpy()})
    obs, _, _, _, info = mean_env.step(np.zeros(1, dtype=np.float32))
    expected = ens.step(x.float(), torch.zeros(1, 1))
    np.testing.assert_allclose(obs, task.state_to_obs(expected)[0].detach().numpy(), rtol=1e-5)
    assert info["disagreement"] > 0
    plain = LearnedEnv(ens, task, ensemble_mode="mean")
    penalised = LearnedEnv(ens, task, ensemble_mode="mean", uncertainty_penalty=2.0)
    for e in (plain, penalised):
        e.reset(options={"state": x[0].numpy()})
    _, r_plain, *_ = plain.step(np.zeros(1, dtype=np.float32))
    _, r_pen, _, _, info = penalised.step(np.zeros(1, dtype=np.float32))
    assert r_pen == pytest.approx(r_plain - 2.0 * info["disagreement"], rel=1e-5)
    cut = LearnedEnv(ens, task, uncertainty_cutoff=1e-9)
    cut.reset(seed=0)
    _, _, term, trunc, info = cut.step(np.zeros(1, dtype=np.float32))
    assert trunc and not term and info["uncertainty_cutoff"]


def test_start_states_from_a_dataset():
    task = get_task("pendulum")
    data = TrajectoryDataset.collect(task.make_real_env(), task, episodes=1, seed=0)
    env = LearnedEnv(_model(task), task, start="dataset", dataset=data)
    pool = data.states()
    for seed in range(5):
        env.reset(seed=seed)
        assert np.min(np.abs(pool - env.state).max(1)) < 1e-5
    with pytest.raises(ValueError, match='start="dataset" needs dataset='):
        LearnedEnv(_model(task), task, start="dataset")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"start": "random"}, "start must be one of"),
        ({"ensemble_mode": "vote"}, "ensemble_mode must be one of"),
        ({"uncertainty_penalty": -1.0}, "uncertainty_penalty must be >= 0"),
        ({"max_episode_steps": 0}, "max_episode_steps must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    task = get_task("pendulum")
    with pytest.raises(ValueError, match=pattern):
        LearnedEnv(_model(task), task, **kwargs)
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        LearnedVecEnv(_model(task), task, 0)


def test_vec_env_attributes_and_methods_are_shared():
    task = get_task("pendulum")
    vec = LearnedVecEnv(_model(task), task, 3)
    assert vec.get_attr("task") == [task, task, task]
    assert vec.get_attr("render_mode", indices=[1]) == [None]
    vec.set_attr("custom", 5)
    assert vec.get_attr("custom") == [5, 5, 5]
    with pytest.raises(ValueError, match="share their attributes"):
        vec.set_attr("custom", 6, indices=[0])
    assert vec.env_is_wrapped(gym.Wrapper) == [False, False, False]
    vec.seed(3)
    first = vec.env_method("reset", indices=[0])[0]
    assert first.shape == (3, 3)
    with pytest.raises(AttributeError):
        vec.get_attr("no_such_attribute")
