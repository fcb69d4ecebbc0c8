"""The real systems are integrated accurately: RK4 with substeps against a tight reference."""

import gymnasium as gym
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import hybridgym.envs  # noqa: F401
from hybridgym.envs.systems.cartpole_swingup import cartpole_vector_field
from hybridgym.models import fixed_step

SYSTEMS = [
    ("hybridgym/LotkaVolterra-v0", {}),
    ("hybridgym/DataCenter-v0", {"load_noise": 0.0}),
    ("hybridgym/DataCenter-v0", {"load_noise": 0.0, "num_zones": 16}),
    ("hybridgym/CartPoleSwingUp-v0", {}),
]


def _random_trajectory(env, seed, steps):
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    states, actions = [env.state], []
    for _ in range(steps):
        action = rng.uniform(env.action_space.low, env.action_space.high)
        _, _, terminated, _, _ = env.step(action)
        states.append(env.state)
        actions.append(action)
        if terminated:
            break
    return np.array(states), np.array(actions)


@pytest.mark.parametrize(("env_id", "kwargs"), SYSTEMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fifty_steps_agree_with_solve_ivp(env_id, kwargs, seed):
    env = gym.make(env_id, **kwargs).unwrapped
    task = env.task
    states, actions = _random_trajectory(env, seed, 50)
    assert len(actions) == 50
    reference = [states[0]]
    for action in actions:  # an independent trajectory: each interval starts from the reference
        sol = solve_ivp(
            lambda t, y, a=action: task.true_vector_field(y[None], a[None])[0],
            (0.0, task.dt),
            reference[-1],
            method="DOP853",
            rtol=1e-10,
            atol=1e-12,
        )
        assert sol.success
        reference.append(sol.y[:, -1])
    reference = np.array(reference)
    scale = np.abs(reference).max(axis=0)  # relative to each variable's size on this trajectory
    relative_error = np.abs(states - reference).max(axis=0) / scale
    assert relative_error.max() < 1e-6, relative_error


def test_frictionless_cartpole_is_measurably_wrong_over_ten_steps():
    """The missing physics matters: the true masses and length without friction mispredict."""
    env = gym.make("hybridgym/CartPoleSwingUp-v0").unwrapped
    task = env.task

    def frictionless(x, u):
        return cartpole_vector_field(x, u, cart_viscous=0.0, cart_coulomb=0.0, joint_viscous=0.0)

    errors, truth_errors = [], []
    for seed in range(4):
        states, actions = _random_trajectory(env, seed, 100)
        for start in range(0, len(actions) - 10, 5):
            x_wrong = x_true = states[start : start + 1]
            for k in range(10):
                u = actions[start + k][None]
                x_wrong = fixed_step(frictionless, x_wrong, u, task.dt, substeps=task.substeps)
                x_true = task.true_step(x_true, u)
            target = states[start + 10 : start + 11]
            errors.append(np.abs(task.state_difference(x_wrong, target))[0])
            truth_errors.append(np.abs(task.state_difference(x_true, target))[0])
    median = np.median(np.array(errors), axis=0)
    # 10 steps = 0.5 s: centimetres of cart position and several degrees of pole angle
    assert median[0] > 0.03, median  # cart position, m
    assert median[2] > 0.03, median  # pole angle, rad
    assert np.max(truth_errors) < 1e-12
