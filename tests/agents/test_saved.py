"""Agent files: an SB3 zip's algorithm is read from the zip, planners are JSON files that name
their model, and load_controller tells the kinds apart and refuses another task's agent."""

import json

import numpy as np
import pytest
import torch

from hybridgym.agents import (
    DifferentiablePolicyAgent,
    MPCAgent,
    PolicyTrainingConfig,
    RandomController,
    load_controller,
    load_planner,
    make_agent,
    save_agent,
    save_planner,
    saved_algo,
)
from hybridgym.envs import get_task
from hybridgym.models import HybridODE, MLPResidual

OBS = np.array([1.0, 0.0, 0.5], dtype=np.float32)


@pytest.fixture
def model_file(tmp_path):
    task = get_task("pendulum")
    torch.manual_seed(0)
    model = HybridODE(task.make_prior(), MLPResidual(2, 1, hidden=(8,)), dt=task.dt)
    return model.save(tmp_path / "models" / "model.pt")


@pytest.mark.parametrize("algo", ["sac", "td3", "ppo"])
def test_save_agent_writes_the_exact_path_and_saved_algo_reads_it(algo, tmp_path):
    agent = (
        make_agent(algo, "pendulum", n_steps=64) if algo == "ppo" else make_agent(algo, "pendulum")
    )
    path = save_agent(agent, tmp_path / "agent")  # no .zip added
    assert path == tmp_path / "agent" and path.is_file()
    assert saved_algo(path) == algo
    loaded = load_controller(path, "pendulum")
    assert type(loaded) is type(agent)
    expected, _ = agent.predict(OBS, deterministic=True)
    np.testing.assert_allclose(loaded.predict(OBS, deterministic=True)[0], expected)


def test_planner_file_round_trip_and_moves_with_its_model(model_file, tmp_path):
    path = save_planner(tmp_path / "models" / "planner.json", model_file, "pendulum", horizon=4,
                        samples=16, seed=3)  # fmt: skip
    payload = json.loads(path.read_text())
    assert payload["model"] == "model.pt" and payload["planner"]["samples"] == 16
    (tmp_path / "models").rename(tmp_path / "moved")
    planner = load_planner(tmp_path / "moved" / "planner.json")
    assert isinstance(planner, MPCAgent) and planner.horizon == 4
    again = load_controller(tmp_path / "moved" / "planner.json", "pendulum")
    np.testing.assert_array_equal(planner.predict(OBS)[0], again.predict(OBS)[0])  # seeded
    (tmp_path / "moved" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="plans through the model"):
        load_planner(tmp_path / "moved" / "planner.json")


def test_save_planner_checks_its_arguments_first(model_file, tmp_path):
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        save_planner(tmp_path / "p.json", model_file, "pendulum", horizon=0)
    with pytest.raises(ValueError, match="the model's prior is task 'pendulum'"):
        save_planner(tmp_path / "p.json", model_file, "cartpole_swingup")
    assert not (tmp_path / "p.json").exists()


def test_load_controller_kinds_and_errors(model_file, tmp_path):
    assert isinstance(load_controller("random", "pendulum"), RandomController)
    policy = DifferentiablePolicyAgent("pendulum", PolicyTrainingConfig(hidden=(8,)))
    policy.save(tmp_path / "policy.pt")
    loaded = load_controller(tmp_path / "policy.pt", "pendulum")
    assert isinstance(loaded, DifferentiablePolicyAgent)
    np.testing.assert_allclose(loaded.predict(OBS)[0], policy.predict(OBS)[0])
    with pytest.raises(ValueError, match="controller of task 'pendulum', not 'lotka_volterra'"):
        load_controller(tmp_path / "policy.pt", "lotka_volterra")
    with pytest.raises(ValueError, match="is not an agent file"):
        load_controller(model_file, "pendulum")
    with pytest.raises(FileNotFoundError, match="no agent file"):
        load_controller(tmp_path / "nothing.zip", "pendulum")
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r"is not a hybridgym\.MPCAgent file"):
        load_controller(tmp_path / "x.json", "pendulum")
    sac = save_agent(make_agent("sac", "pendulum"), tmp_path / "sac.zip")
    with pytest.raises(ValueError, match="observation space"):
        load_controller(sac, "lotka_volterra")
