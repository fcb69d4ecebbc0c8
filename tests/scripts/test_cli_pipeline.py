"""collect -> fit -> distill -> train -> evaluate (and loop's option aliases) end to end through
a subprocess, at tiny scale; every test checks the files and the numbers printed, not only the
exit code. Bad arguments run in-process through ``main`` (a subprocess costs seconds of
imports), plus one through a subprocess."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from hybridgym.agents import (
    DifferentiablePolicyAgent,
    MPCAgent,
    evaluate,
    load_agent,
    load_controller,
    load_planner,
    saved_algo,
)
from hybridgym.envs import get_task
from hybridgym.models import HybridODE, TrajectoryDataset, distill, prediction_errors
from hybridgym.scripts.main import main

EXE = [sys.executable, "-m", "hybridgym.scripts.main"]


def _run(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def _table_row(stdout: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``first_cell``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{stdout}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def collected(work):
    out = _run(
        "collect", "--task", "pendulum", "--episodes", 3, "--steps-per-episode", 40,
        "--seed", 3, "--out", work / "data", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out, work / "data"


@pytest.fixture(scope="module")
def fitted(work, collected):
    out = _run(
        "fit", "--task", "pendulum", "--data", collected[1], "--out", work / "model.pt",
        "--iterations", 40, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out, work / "model.pt"


@pytest.fixture(scope="module")
def planner(work, fitted):
    out = _run(
        "train", "--task", "pendulum", "--model", fitted[1], "--algo", "mpc",
        "--out", work / "planner.json", "--set", "samples=20", "--set", "horizon=5",
        "--set", "iterations=2", "--seed", 2,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out, work / "planner.json"


@pytest.fixture(scope="module")
def sac_agent(work, fitted):
    out = _run(
        "train", "--task", "pendulum", "--model", fitted[1], "--algo", "sac", "--steps", 64,
        "--envs", 8, "--out", work / "sac_agent", "--set", "learning_starts=32", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out, work / "sac_agent"


def test_collect_writes_a_dataset_of_the_asked_size(collected):
    out, folder = collected
    task = get_task("pendulum")
    data = TrajectoryDataset.load(folder)
    assert [ep.num_steps for ep in data] == [40, 40, 40]
    assert task.describes(data)
    returns = [float(ep.rewards.sum()) for ep in data]
    assert "collected 3 episodes, 120 steps of Pendulum-v1 (random actions)" in out.stdout
    assert f"{np.mean(returns):.2f} +- {np.std(returns):.2f}" in out.stdout
    assert f"dataset: {folder}" in out.stdout
    # episode i is a seeded random episode from reset(seed=3+i): the same as in-process
    again = TrajectoryDataset.collect(
        task.make_real_env(max_episode_steps=40), task, episodes=1, seed=4
    )
    assert again.episodes[0] == data.episodes[1]


def test_fit_saves_a_model_whose_constants_are_printed(collected, fitted):
    out, path = fitted
    task = get_task("pendulum")
    model = HybridODE.load(path)
    fitted_constants = model.prior.physical_parameters()
    start = task.make_prior().physical_parameters()
    truth = task.make_prior(perturbation=0.0).physical_parameters()
    for name, value in fitted_constants.items():
        cells = _table_row(out.stdout, name)
        assert float(cells[1]) == pytest.approx(start[name], rel=1e-5)
        assert float(cells[2]) == pytest.approx(value, rel=1e-5)
        assert float(cells[3]) == pytest.approx(truth[name], rel=1e-5)
    # 40 iterations already move gravity's constant most of the way from 50% low
    assert abs(fitted_constants["a"] - truth["a"]) < 0.2 * abs(start["a"] - truth["a"])
    # the validation table is the model's error on the held-out episode (split seeded 0)
    data = TrajectoryDataset.load(collected[1])
    _, validation = data.split(0.2, seed=0)
    assert len(validation) == 1 and "validation error (1 held-out episode)" in out.stdout
    errors = prediction_errors(model, validation, (1, 10))
    for k in (1, 10):
        cells = _table_row(out.stdout, str(k))
        printed = [float(c) for c in cells[1:]]
        assert printed == pytest.approx(list(errors[k].values()), rel=1e-3)
    assert "fit: 2 training episodes (80 steps), 40 Adam steps" in out.stdout


def test_distill_prints_the_equations_and_constants(work, collected, fitted):
    out = _run("distill", fitted[1], "--data", collected[1], "--json", work / "distill.json")
    assert out.returncode == 0, out.stderr
    model = HybridODE.load(fitted[1])
    symbolic = distill(model, TrajectoryDataset.load(collected[1]))
    assert len(symbolic.equations()) == 2
    for line in symbolic.equations():
        assert f"  {line}\n" in out.stdout
    assert re.search(r"dthetadot/dt = prior [+-]\d", out.stdout)
    saved = json.loads((work / "distill.json").read_text())
    for state, terms in symbolic.terms().items():
        assert saved["members"][0]["terms"][state] == pytest.approx(terms)
    for name, value in model.prior.physical_parameters().items():
        assert float(_table_row(out.stdout, name)[1]) == pytest.approx(value, rel=1e-5)


def test_train_mpc_writes_a_planner_file(work, fitted, planner):
    out, path = planner
    payload = json.loads(path.read_text())
    assert payload["model"] == "model.pt"  # relative to the JSON file: they move together
    assert payload["planner"] == {"horizon": 5, "samples": 20, "iterations": 2, "seed": 2}
    agent = load_planner(path)
    assert isinstance(agent, MPCAgent) and (agent.horizon, agent.samples) == (5, 20)
    action, _ = agent.predict(np.array([1.0, 0.0, 0.5], dtype=np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
    assert f"agent: {path}" in out.stdout


def test_train_sac_writes_an_agent_that_loads(sac_agent):
    out, path = sac_agent
    assert saved_algo(path) == "sac"
    agent = load_agent("sac", path)
    assert agent.num_timesteps >= 64 and agent.learning_starts == 32
    assert f"trained sac for {agent.num_timesteps} model steps (8 learned envs" in out.stdout
    assert load_controller(path, "pendulum").num_timesteps == agent.num_timesteps


def test_evaluate_prints_the_returns_it_writes(work, planner):
    out = _run(
        "evaluate", "--task", "pendulum", "--agent", planner[1], "--episodes", 2,
        "--seed", 7, "--json", work / "eval.json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads((work / "eval.json").read_text())
    assert result["seed"] == 7 and len(result["returns"]) == 2
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))
    assert f"return: {result['mean']:.4f} +- {result['std']:.4f} over 2" in out.stdout
    for i, value in enumerate(result["returns"]):
        assert _table_row(out.stdout, str(i))[1:] == ["7" if i == 0 else "8", "200", f"{value:.4f}"]
    # the planner is seeded: the same returns in-process
    again = evaluate(load_planner(planner[1]), "pendulum", episodes=2, seed=7)
    assert again.returns.tolist() == pytest.approx(result["returns"], rel=1e-6)


def test_collect_with_a_saved_agent_records_its_actions(work, sac_agent):
    out = _run(
        "collect", "--task", "pendulum", "--episodes", 2, "--policy", sac_agent[1],
        "--steps-per-episode", 10, "--deterministic", "--out", work / "agent_data", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"collected 2 episodes, 20 steps of Pendulum-v1 (agent {sac_agent[1]})" in out.stdout
    data = TrajectoryDataset.load(work / "agent_data")
    agent = load_agent("sac", sac_agent[1])
    task = get_task("pendulum")
    obs = task.state_to_obs(data.episodes[0].states[:-1])
    actions, _ = agent.predict(obs.astype(np.float32), deterministic=True)
    np.testing.assert_allclose(data.episodes[0].actions, actions, rtol=1e-5, atol=1e-6)


def test_loop_accepts_task_and_run_options(tmp_path):
    run = tmp_path / "run"
    settings = [
        "--iterations", "1", "--quiet", "--set", "initial_steps=20", "--set", "eval_episodes=1",
        "--set", "fit.iterations=5", "--set", "fit.lbfgs_iterations=0",
        "--set", 'agent_kwargs={"samples": 20, "horizon": 5, "iterations": 2}',
    ]  # fmt: skip
    out = _run("loop", "--task", "pendulum", "--run", run, *settings)
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "config.json").read_text())["task"] == "pendulum"
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] and state["real_steps"] == 20
    # the positional form resumes the same (finished) run and prints the same row
    code = main(["loop", "pendulum", "--run-dir", str(run), *settings])
    assert code == 0
    assert TrajectoryDataset.load(run / "data").num_steps == 20


def test_fit_refuses_the_data_of_another_task_in_one_line(collected, tmp_path):
    out = _run(
        "fit", "--task", "lotka_volterra", "--data", collected[1], "--out", tmp_path / "m.pt"
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "data of task 'pendulum'" in lines[0] and "task 'lotka_volterra'" in lines[0]
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("command", "pattern"),
    [
        ("collect --task pendullum --episodes 1 --out x", "Did you mean 'pendulum'"),
        ("collect --task pendulum --episodes -1 --out x", "argument --episodes: must be"),
        ("collect --task pendulum --episodes 1 --out {data}", "is not an empty folder"),
        ("collect --task pendulum --episodes 1 --out x --policy a.zip", "no agent file at a.zip"),
        (
            "collect --task datacenter --episodes 1 --out x --policy {planner}",
            "controller of task 'pendulum', not 'datacenter'",
        ),
        ("collect --task pendulum --episodes 2 --out x --steps-per-episode 0", "--steps-per"),
        ("fit --task pendulum --data nowhere --out m.pt", "nowhere/dataset.json does not exist"),
        ("fit --task cartpole_swingup --data {data} --out m.pt", "data of task 'pendulum'"),
        ("fit --task pendulum --data {data} --out m.pt --iterations -3", "--iterations"),
        ("fit --task pendulum --data {data} --out m.pt --set horizn=3", "not a FitConfig field"),
        ("fit --task pendulum --data {data} --out m.pt --ensemble 0", "--ensemble"),
        ("distill nowhere.pt --data {data}", "nowhere.pt does not exist"),
        (
            "train --task cartpole_swingup --model {model} --algo sac --steps 9 --out a",
            "the model's prior is task 'pendulum'",
        ),
        ("train --task pendulum --model {model} --algo sac --steps -9 --out a", "--steps"),
        ("train --task pendulum --model {model} --algo sac --out a", "needs --steps"),
        ("train --task pendulum --model {model} --algo mpc --steps 5 --out a", "does not apply"),
        ("train --task pendulum --model nowhere.pt --algo mpc --out a", "does not exist"),
        ("evaluate --task pendulum --agent random --episodes 0", "--episodes"),
        ("evaluate --task pendulum --agent {model}", "is not an agent file"),
        ("evaluate --task lotka_volterra --agent {sac}", "observation space"),
        ("evaluate --task pendulum --agent random --device gpu0", "not a torch device"),
        ("loop --run r", "no task given"),
        ("loop pendulum --task datacenter --run r", "two tasks given"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    command, pattern, collected, fitted, planner, sac_agent, tmp_path, monkeypatch, capsys
):
    files = {
        "data": collected[1],
        "model": fitted[1],
        "planner": planner[1],
        "sac": sac_agent[1],
    }
    monkeypatch.chdir(tmp_path)
    try:
        code = main(command.format(**files).split())
    except SystemExit as stop:  # argparse's errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"hybridgym {command.split()[0]}: error: "), lines[0]
    assert pattern in lines[0], lines[0]
    assert not any(tmp_path.iterdir()), "a refused command writes nothing"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "ppo", "differentiable"])
def test_train_other_agents_and_evaluate_them(algo, work, fitted):
    path = work / f"{algo}_agent"
    extra = ("--set", "batch_size=16", "--set", "horizon=8") if algo == "differentiable" else ()
    out = _run(
        "train", "--task", "pendulum", "--model", fitted[1], "--algo", algo, "--steps", 4,
        "--envs", 1, "--out", path, "--quiet", *extra,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    agent = load_controller(path, "pendulum")
    if algo == "differentiable":
        assert isinstance(agent, DifferentiablePolicyAgent) and agent.config.batch_size == 16
    else:
        assert saved_algo(path) == algo and agent.num_timesteps >= 4
    out = _run("evaluate", "--task", "pendulum", "--agent", path, "--episodes", 1)
    assert out.returncode == 0, out.stderr
    expected = evaluate(agent, "pendulum", episodes=1, seed=0).mean
    assert f"return: {expected:.4f} +- 0.0000 over 1 episodes" in out.stdout


@pytest.mark.slow
def test_pipeline_planner_on_a_fitted_model_swings_the_pendulum_up(tmp_path):
    """The real thing at the loop's scale: 50 random real steps, the task's fit, the planner."""
    data, model = tmp_path / "data", tmp_path / "model.pt"
    steps = [
        ("collect", "--task", "pendulum", "--episodes", 1, "--steps-per-episode", 50,
         "--out", data, "--quiet"),
        ("fit", "--task", "pendulum", "--data", data, "--out", model, "--quiet"),
        ("train", "--task", "pendulum", "--model", model, "--algo", "mpc",
         "--out", tmp_path / "planner.json"),
        ("evaluate", "--task", "pendulum", "--agent", tmp_path / "planner.json",
         "--episodes", 3, "--seed", 100, "--json", tmp_path / "eval.json"),
    ]  # fmt: skip
    for args in steps:
        out = _run(*args)
        assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["mean"] > -400  # random actions score about -1200


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("collect", ("--task", "--episodes", "--policy", "--steps-per-episode", "--out", "--seed")),
        ("fit", ("--data", "--residual", "--ensemble", "--iterations", "--method", "--device")),
        ("distill", ("MODEL.pt", "--data", "--threshold", "--json")),
        ("train", ("--model", "--algo", "--steps", "--envs", "--quiet", "--device")),
        ("evaluate", ("--agent", "--episodes", "--json", "--seed")),
        ("loop", ("--task", "--run", "--run-dir", "--threads")),
        ("demo", ("--out", "--sac-steps", "--threads")),
    ],
)
def test_every_subcommand_has_help(command, options, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hybridgym {command}")
    for option in options:
        assert option in text
