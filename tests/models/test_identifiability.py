"""Physical constants are identifiable on Pendulum-v1 from one random episode.

The recipe (residual-size penalty + horizon curriculum, explicit Euler, a ReLU residual on both
state derivatives, the prior's speed limit) recovers a = 15 and b = 3 from a prior started 50%
low, while the residual absorbs Gymnasium's discretisation; predictions on a held-out random
episode stay within 0.002 rad after 1 step and 0.02 rad after 10.
benchmarks/pendulum_identifiability.py measures the variants without penalty/curriculum.
"""

import dataclasses

import pytest
import torch

from hybridgym.envs import get_task
from hybridgym.envs.systems.pendulum import IDENTIFIABILITY_FIT, identifiability_model
from hybridgym.models import TrajectoryDataset, fit
from hybridgym.models import prediction_errors as k_step

RECIPE = IDENTIFIABILITY_FIT


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constants_recovered_from_one_random_episode(seed):
    task = get_task("pendulum")
    data = TrajectoryDataset.collect(task.make_real_env(), task, episodes=1, seed=seed)
    assert data.num_steps == 200
    torch.manual_seed(seed)
    model = identifiability_model()  # a = 7.5, b = 1.5: 50% low
    assert model.prior.physical_parameters() == pytest.approx({"a": 7.5, "b": 1.5})
    report = fit(model, data, dataclasses.replace(RECIPE, seed=seed))
    assert report.physical_parameters["a"] == pytest.approx(15.0, rel=0.02)
    assert report.physical_parameters["b"] == pytest.approx(3.0, rel=0.07)
    errors = k_step(model, data, (1, 10))
    assert errors[1]["theta"] <= 0.002
    assert errors[10]["theta"] <= 0.02
    held_out = TrajectoryDataset.collect(task.make_real_env(), task, episodes=1, seed=1000 + seed)
    errors = k_step(model, held_out, (1, 10))
    assert errors[1]["theta"] <= 0.002
    assert errors[10]["theta"] <= 0.02
