"""The numbers behind ``hybridgym plot``: k-step errors, phase coordinates and the missing
physics a residual should learn, against closed forms and the task's own functions."""

import numpy as np
import pytest
import torch

from hybridgym.agents.diagnostics import (
    error_vs_horizon,
    held_out_episodes,
    learned_residual,
    load_run,
    missing_physics_target,
    phase_coordinates,
)
from hybridgym.envs import get_task
from hybridgym.envs.systems.pendulum import GRAVITY_TERM, TORQUE_GAIN
from hybridgym.models import HybridODE, MLPResidual, TrajectoryDataset


def test_phase_coordinates_wrap_angles_and_break_the_line_there():
    states = np.array([[3.0, 1.0], [3.2, 2.0], [3.4, 3.0]])
    out = phase_coordinates(states, (0,))
    assert out.shape == (4, 2)
    assert out[0, 0] == pytest.approx(3.0) and np.isnan(out[1]).all()
    assert out[2, 0] == pytest.approx(3.2 - 2 * np.pi) and out[3, 1] == 3.0
    assert np.array_equal(phase_coordinates(states, ()), states)


def test_the_exact_model_has_no_prediction_error_and_the_curve_stops_for_lack_of_windows():
    task = get_task("lotka_volterra")
    env = task.make_real_env()  # noise-free observations (float32)
    data = TrajectoryDataset.collect(env, task, None, steps=30, seed=5)
    horizons, errors = error_vs_horizon(task.make_oracle().double(), data, max_horizon=50)
    # one 30-step episode holds 31 - k windows of k steps: at least 10 up to k = 21
    assert horizons == list(range(1, 22))
    for name in task.state_names:
        assert max(errors[name]) < 1e-4
    assert error_vs_horizon(task.make_oracle(), data, max_horizon=5)[0] == [1, 2, 3, 4, 5]
    # a model 10% off: the error grows with the horizon
    prior = task.make_prior(perturbation=0.1)
    model = HybridODE(prior, None, dt=task.dt, substeps=10)
    _, errors = error_vs_horizon(model, data, max_horizon=20)
    assert errors["prey"][19] > 5 * errors["prey"][0] > 0


def test_lotka_volterra_target_is_the_interaction_term_at_the_true_constants():
    task = get_task("lotka_volterra")
    model = HybridODE(task.make_prior(perturbation=0.0), MLPResidual(2, 2), dt=task.dt)
    rng = np.random.default_rng(0)
    x, u = rng.uniform(0.5, 4, (20, 2)), rng.uniform(0, 1, (20, 2))
    target, kind = missing_physics_target(task, model, x, u)
    assert kind == "vector field"
    np.testing.assert_allclose(target, task.missing_physics(x, u), rtol=1e-5, atol=1e-5)
    # -beta x1 x2 and +gamma x1 x2: the seed example's missing physics
    np.testing.assert_allclose(target[:, 0], -0.9 * x[:, 0] * x[:, 1], rtol=1e-5)
    np.testing.assert_allclose(target[:, 1], 0.8 * x[:, 0] * x[:, 1], rtol=1e-5)
    # a prior whose constants are 30% low: the target takes up the difference as well
    low = HybridODE(task.make_prior(), MLPResidual(2, 2), dt=task.dt)
    target_low, _ = missing_physics_target(task, low, x, u)
    np.testing.assert_allclose(target_low[:, 0] - target[:, 0], 0.3 * 1.3 * x[:, 0], rtol=1e-4)
    residual = learned_residual(model, x, u)
    with torch.no_grad():
        expected = model.residual(torch.tensor(x, dtype=torch.float32), torch.tensor(u).float())
    np.testing.assert_allclose(residual, expected.numpy(), rtol=1e-6)


def test_pendulum_target_is_the_semi_implicit_euler_term_under_euler_steps():
    task = get_task("pendulum")
    prior = task.make_prior(perturbation=0.0)
    model = HybridODE(prior, MLPResidual(2, 1), dt=task.dt, method="euler")
    x = np.array([[0.3, 1.0], [-2.0, -0.5]])  # speeds far from the 8 rad/s clip
    u = np.array([[1.5], [-0.7]])
    target, kind = missing_physics_target(task, model, x, u)
    accel = GRAVITY_TERM * np.sin(x[:, 0]) + TORQUE_GAIN * u[:, 0]
    assert kind == "euler map"
    np.testing.assert_allclose(target[:, 0], accel * task.dt, rtol=1e-5)  # theta' gains dt theta''
    np.testing.assert_allclose(target[:, 1], 0.0, atol=1e-5)  # the prior has the acceleration
    rk4 = HybridODE(prior, MLPResidual(2, 1), dt=task.dt, method="rk4")
    assert missing_physics_target(task, rk4, x, u) is None  # no vector field to compare with


def test_load_run_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text('{"task": "pendulum", "loop": {}}')
    with pytest.raises(FileNotFoundError, match="no fitted model yet"):
        load_run(tmp_path)


def test_held_out_episodes_are_full_seeded_random_episodes():
    task = get_task("lotka_volterra")
    data = held_out_episodes(task, episodes=2, seed=11)
    assert [episode.num_steps for episode in data.episodes] == [100, 100]
    again = held_out_episodes(task, episodes=2, seed=11)
    assert data == again
    assert held_out_episodes(task, episodes=1, seed=12).episodes[0] != data.episodes[0]
    with pytest.raises(ValueError, match="episodes must be an int >= 1"):
        held_out_episodes(task, episodes=0)
