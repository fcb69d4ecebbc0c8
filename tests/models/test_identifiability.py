"""Physical constants are identifiable on Pendulum-v1 from one random episode.

The recipe (residual-size penalty + horizon curriculum) recovers a = 15 and b = 3 from a prior
started 50% low, while the residual absorbs Gymnasium's discretisation. One-step predictions
on a held-out random episode are checked here; 10-step held-out errors are measured by
benchmarks/pendulum_identifiability.py: they are limited by Gymnasium's speed clipping at 8
rad/s, which no smooth vector field reproduces (even the exact first-order discretisation
correction has a 10-step RMSE of 0.02-0.05 rad on episodes that hit the limit).
"""

import dataclasses

import pytest
import torch

from hybridgym.envs import get_task
from hybridgym.envs.systems.pendulum import IDENTIFIABILITY_FIT
from hybridgym.models import HybridODE, MLPResidual, TrajectoryDataset, fit
from hybridgym.models import prediction_errors as k_step

RECIPE = IDENTIFIABILITY_FIT


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constants_recovered_from_one_random_episode(seed):
    task = get_task("pendulum")
    data = TrajectoryDataset.collect(task.make_real_env(), task, episodes=1, seed=seed)
    assert data.num_steps == 200
    torch.manual_seed(seed)
    prior = task.make_prior()  # a = 7.5, b = 1.5: 50% low
    model = HybridODE(prior, MLPResidual(2, 1, hidden=(32, 32), angle_dims=(0,)), dt=task.dt)
    report = fit(model, data, dataclasses.replace(RECIPE, seed=seed))
    assert report.physical_parameters["a"] == pytest.approx(15.0, rel=0.02)
    assert report.physical_parameters["b"] == pytest.approx(3.0, rel=0.07)
    errors = k_step(model, data, (1, 10))
    assert errors[1]["theta"] <= 0.002
    assert errors[10]["theta"] <= 0.02
    held_out = TrajectoryDataset.collect(task.make_real_env(), task, episodes=1, seed=1000 + seed)
    assert k_step(model, held_out, (1,))[1]["theta"] <= 0.002
