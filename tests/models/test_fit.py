"""fit: recovers physics, predicts, warm-starts, validates its config; the seed example."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from hybridgym.envs import get_task
from hybridgym.envs.systems.lotka_volterra import (
    SEED_EXAMPLE_FIT,
    seed_example,
    seed_example_model,
)
from hybridgym.models import (
    Ensemble,
    FitConfig,
    HybridODE,
    MLPResidual,
    TrajectoryDataset,
    distill,
    fit,
    prediction_errors,
)


@pytest.mark.slow
def test_seed_example_recovers_the_missing_interaction_terms():
    data, _ = seed_example(seed=0)
    assert len(data) == 1 and data.num_steps == 20
    torch.manual_seed(0)
    model = seed_example_model()
    fit(model, data, SEED_EXAMPLE_FIT)
    symbolic = distill(model, data, threshold=0.1)
    terms = symbolic.terms()
    assert set(terms["prey"]) == {"prey predators"}
    assert set(terms["predators"]) == {"prey predators"}
    assert terms["prey"]["prey predators"] == pytest.approx(-0.9, rel=0.05)
    assert terms["predators"]["prey predators"] == pytest.approx(0.8, rel=0.05)
    assert "prey predators" in symbolic.equations()[0]
    # the distilled model extrapolates to t in [0, 10]
    _, clean = seed_example(seed=0, t_end=10.0)
    distilled = symbolic.as_hybrid(model)
    with torch.no_grad():
        x0 = torch.as_tensor(clean[:1], dtype=torch.float32)
        pred = distilled.rollout(x0, torch.zeros(1, 40, 2))[0].numpy()
    error = np.abs(pred - clean).max(0) / np.ptp(clean, 0)
    assert np.all(error < 0.05), error


def _pendulum_data(episodes, seed):
    task = get_task("pendulum")
    return TrajectoryDataset.collect(task.make_real_env(), task, episodes=episodes, seed=seed)


def test_prior_only_fit_recovers_constants_of_a_matching_model():
    """With data from the prior's own ODE, fitting recovers the constants exactly."""
    task = get_task("cartpole_swingup")
    truth = HybridODE(task.make_prior(perturbation=0.0), None, dt=task.dt, substeps=2)
    rng = np.random.default_rng(0)
    x0 = torch.as_tensor(task.sample_initial_states(6, rng), dtype=torch.float32)
    actions = torch.as_tensor(rng.uniform(-1, 1, (6, 30, 1)), dtype=torch.float32)
    with torch.no_grad():
        states = truth.rollout(x0, actions).numpy()
    data = TrajectoryDataset.from_arrays(
        list(states), list(actions.numpy()), dt=task.dt, angle_dims=(2,)
    )
    model = HybridODE(task.make_prior(perturbation=0.2), None, dt=task.dt, substeps=2)
    config = FitConfig(
        horizon=5, iterations=300, learning_rate=2e-2, progress=False, validation_fraction=0.0
    )
    report = fit(model, data, config)
    for name, value in truth.prior.physical_parameters().items():
        assert report.physical_parameters[name] == pytest.approx(value, rel=0.02), name
    assert report.history[-1]["loss"] < 1e-2 * report.history[0]["loss"]


def test_fit_report_and_early_stopping():
    data = _pendulum_data(episodes=4, seed=0)
    task = get_task("pendulum")
    torch.manual_seed(0)
    model = HybridODE(
        task.make_prior(), MLPResidual(2, 1, hidden=(16, 16), angle_dims=(0,)), dt=task.dt
    )
    config = FitConfig(
        horizon=3,
        iterations=400,
        eval_every=20,
        patience=2,
        curriculum=0.1,
        learning_rate=5e-2,
        lbfgs_iterations=0,  # a polish would move the weights past the best check
        progress=False,
        validation_horizons=(1, 5),
    )
    report = fit(model, data, config)
    assert set(report.validation_errors) == {1, 5}
    assert set(report.validation_errors[1]) == {"theta", "thetadot"}
    assert report.validation_history and report.wall_time > 0
    if report.stopped_early:
        assert report.iterations < 400
    best = min(v["loss"] for v in report.validation_history)
    assert any(
        v["iteration"] == report.best_iteration and v["loss"] == best
        for v in report.validation_history
    )
    # the constants moved towards the truth (they start 50% low)
    assert report.physical_parameters["a"] > 1.2 * 7.5


def test_fit_is_seeded_and_deterministic():
    data = _pendulum_data(episodes=2, seed=1)
    task = get_task("pendulum")

    def run():
        torch.manual_seed(3)
        model = HybridODE(
            task.make_prior(), MLPResidual(2, 1, hidden=(8,), angle_dims=(0,)), dt=task.dt
        )
        fit(model, data, FitConfig(horizon=2, iterations=30, batch_size=64, progress=False))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_warm_start_keeps_weights_and_normalisation():
    data = _pendulum_data(episodes=2, seed=2)
    task = get_task("pendulum")
    model = HybridODE(
        task.make_prior(), MLPResidual(2, 1, hidden=(8,), angle_dims=(0,)), dt=task.dt
    )
    config = FitConfig(horizon=2, iterations=50, progress=False, validation_fraction=0.0)
    fit(model, data, config)
    shift = model.residual.input_shift.clone()
    before = prediction_errors(model, data, (1,))[1]["theta"]
    more = data + _pendulum_data(episodes=1, seed=50)
    fit(model, more, dataclasses.replace(config, iterations=1))
    assert torch.equal(model.residual.input_shift, shift), "normalisation is set once"
    after = prediction_errors(model, data, (1,))[1]["theta"]
    assert after < 2 * before  # one step from the previous weights, not from scratch


def test_ensemble_members_differ_and_all_improve():
    data = _pendulum_data(episodes=3, seed=4)
    task = get_task("pendulum")
    torch.manual_seed(0)
    members = [HybridODE(task.make_prior(), None, dt=task.dt) for _ in range(3)]
    ens = Ensemble(members)
    report = fit(
        ens,
        data,
        FitConfig(
            horizon=2, iterations=80, learning_rate=5e-2, progress=False, validation_fraction=0.0
        ),
    )
    assert len(report.members) == 3
    a_values = [m.prior.physical_parameters()["a"] for m in ens.members]
    assert len(set(a_values)) == 3, "bootstrap resamples give different members"
    assert all(a > 7.5 * 1.2 for a in a_values)


def test_non_finite_loss_keeps_the_previous_model():
    data = _pendulum_data(episodes=1, seed=5)
    task = get_task("pendulum")
    model = HybridODE(
        task.make_prior(), MLPResidual(2, 1, hidden=(8,), angle_dims=(0,)), dt=task.dt
    )
    fit(model, data, FitConfig(horizon=1, iterations=5, progress=False))
    with torch.no_grad():
        model.residual.net[-1].weight.fill_(math.inf)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    report = fit(model, data, FitConfig(horizon=1, iterations=30, progress=False))
    assert report.non_finite_steps == 20 and report.iterations < 30
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("horizon", 0, "horizon must be an int >= 1"),
        ("iterations", -1, "iterations must be an int >= 0"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("curriculum", 1.5, r"curriculum must be in \[0, 1\]"),
        ("validation_fraction", 1.0, r"validation_fraction must be in \[0, 1\)"),
        ("sensitivity", "backprop", "sensitivity must be one of"),
        ("lr_schedule", "step", "lr_schedule must be"),
        ("batch_size", 0, "batch_size must be an int >= 1"),
        ("validation_horizons", (), "validation_horizons must name at least one horizon"),
        ("seed", 1.5, "seed must be an int"),
        ("residual_penalty", -1.0, "residual_penalty must be a number >= 0"),
        ("huber_delta", 0.0, "huber_delta must be > 0 or None"),
    ],
)
def test_bad_fit_config(field, value, pattern):
    with pytest.raises(ValueError, match=f"FitConfig.{pattern}"):
        FitConfig(**{field: value})


def test_data_that_does_not_match_the_model_is_refused():
    task = get_task("pendulum")
    model = HybridODE(task.make_prior(), None, dt=task.dt)
    lv = seed_example()[0]
    with pytest.raises(ValueError, match=r"episode 0: times are spaced 0.25.*dt is 0.05"):
        fit(model, lv, FitConfig(progress=False))
    cart = TrajectoryDataset.from_arrays(np.zeros((5, 4)), np.zeros((4, 1)), dt=0.05)
    with pytest.raises(ValueError, match=r"the data has 4 state variables .* the model 2"):
        fit(model, cart, FitConfig(progress=False))


def test_huber_loss_resists_a_few_corrupted_transitions():
    task = get_task("cartpole_swingup")
    truth = HybridODE(task.make_prior(perturbation=0.0), None, dt=task.dt, substeps=2)
    rng = np.random.default_rng(1)
    x0 = torch.as_tensor(task.sample_initial_states(4, rng), dtype=torch.float32)
    actions = torch.as_tensor(rng.uniform(-1, 1, (4, 30, 1)), dtype=torch.float32)
    with torch.no_grad():
        states = truth.rollout(x0, actions).numpy().copy()
    states[:, 10, 1] += 3.0  # a glitch in the log: four wild cart velocities
    data = TrajectoryDataset.from_arrays(
        list(states), list(actions.numpy()), dt=task.dt, angle_dims=(2,)
    )

    def fitted_mass(huber_delta):
        model = HybridODE(task.make_prior(perturbation=0.2), None, dt=task.dt, substeps=2)
        config = FitConfig(
            horizon=1,
            iterations=300,
            learning_rate=2e-2,
            progress=False,
            validation_fraction=0.0,
            huber_delta=huber_delta,
        )
        return fit(model, data, config).physical_parameters["cart_mass"]

    squared_error = abs(fitted_mass(None) - 1.0)
    huber_error = abs(fitted_mass(0.05) - 1.0)
    assert huber_error < 0.5 * squared_error
