"""The command line on systems that are not built-in tasks, end to end through a subprocess:
``loop --env`` (and its resume), ``fit`` without --task, ``compare --env``, ``systems --env``;
bad input (a broken prior file, an unsupported env) is one stderr line and exit 2, with
nothing written."""

import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from hybridgym.envs import GymTask
from hybridgym.models import Ensemble, HybridODE, TrajectoryDataset

EXE = [sys.executable, "-m", "hybridgym.scripts.main"]
#: loop settings that run in seconds (the real runs use the defaults)
TINY = [
    "--set", "initial_steps=20", "--set", "steps_per_iteration=20", "--set", "ensemble=2",
    "--set", "fit.iterations=20", "--set", 'agent_kwargs={"horizon":5,"samples":20,"iterations":2}',
]  # fmt: skip


def _run(*args, cwd=None, pythonpath=None):
    env = {**os.environ, "COLUMNS": "160"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def _metrics(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _one_line_error(out, *fragments):
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_loop_on_a_gymnasium_env_runs_and_resumes(tmp_path):
    run = tmp_path / "run"
    out = _run(
        "loop", "--env", "Pendulum-v1", "--run-dir", run, "--iterations", 2,
        "--eval-episodes", 1, *TINY,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "model-based loop on Pendulum-v1" in out.stdout
    log = out.stderr
    assert "learned reward on 20 steps" in log and "never terminates" in log
    assert log.count("evaluation episode 1/1: return") == 2
    rows = _metrics(run)
    assert [int(r["real_steps"]) for r in rows] == [20, 40]
    config = json.loads((run / "config.json").read_text())
    assert config["env"]["env_id"] == "Pendulum-v1" and config["loop"]["eval_episodes"] == 1
    model = Ensemble.load(run / "models" / "model_002.pt")
    assert model.num_members == 2 and model.members[0].prior is None
    # the same command resumes (here: one iteration more); --run-dir alone does too
    out = _run(
        "loop", "--env", "Pendulum-v1", "--run-dir", run, "--iterations", 3,
        "--eval-episodes", 1, *TINY, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [int(r["real_steps"]) for r in _metrics(run)] == [20, 40, 60]
    out = _run("loop", "--run-dir", run, "--iterations", 4, "--eval-every", 2, "--quiet")
    assert out.returncode == 0, out.stderr
    rows = _metrics(run)
    assert [int(r["real_steps"]) for r in rows] == [20, 40, 60, 80]
    assert math.isfinite(float(rows[-1]["eval_return_mean"]))  # the last one is evaluated
    # another configuration on the same run directory is refused, naming the difference
    out = _run("loop", "--env", "Pendulum-v1", "--run-dir", run, "--quiet")
    _one_line_error(out, "holds a run with another configuration", "loop.ensemble: 2 there")


@pytest.mark.slow
def test_eval_every_leaves_rows_without_evaluation(tmp_path):
    run = tmp_path / "run"
    out = _run(
        "loop", "--env", "Pendulum-v1", "--run-dir", run, "--iterations", 3,
        "--eval-every", 2, "--eval-episodes", 1, *TINY, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cells = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("│")
    ]
    assert cells[0][2] == "-"  # iteration 1: not evaluated
    assert cells[1][2] != "-" and cells[2][2] != "-"  # iteration 2, and the last one
    rows = _metrics(run)
    assert math.isnan(float(rows[0]["eval_return_mean"]))


PRIOR = """
import torch
from hybridgym.models import PhysicsPrior


class Pendulum(PhysicsPrior):
    def __init__(self):
        super().__init__(state_dim=3, action_dim=1)
        self.add_constant("gain", 1.0)

    def forward(self, x, u):
        return torch.zeros_like(x) + self.constants()["gain"] * u
"""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (PRIOR.replace("def forward(self, x, u):", "def forward(self, x, u)"), "SyntaxError"),
        (PRIOR.replace("class Pendulum", "class Pendulm"), "has no 'Pendulum'"),
        (PRIOR.replace("state_dim=3", "state_dim=4"), "has state_dim 4, but the system has 3"),
        (PRIOR.replace('self.add_constant("gain", 1.0)', "raise KeyError('g')"), "KeyError"),
    ],
    ids=["syntax error", "missing class", "wrong dims", "exception in __init__"],
)
def test_a_broken_prior_file_is_one_line_and_exit_2(tmp_path, text, fragment):
    (tmp_path / "prior.py").write_text(textwrap.dedent(text))
    out = _run(
        "loop", "--env", "Pendulum-v1", "--prior", tmp_path / "prior.py:Pendulum",
        "--run-dir", tmp_path / "run",
    )  # fmt: skip
    line = _one_line_error(out, "--prior", str(tmp_path / "prior.py"), fragment)
    if fragment != "has no 'Pendulum'":
        assert " line " in line
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--env", "CartPole-v1"], ["Discrete(2)", "Box action space"]),
        (["--env", "hybridgym_tiny_envs:hybridgym_test/DictObs-v0"], ["Dict", "1-D Box"]),
        (["--env", "hybridgym_tiny_envs:hybridgym_test/Unbounded-v0"], ["unbounded actions"]),
        (["--env", "Pendulum-v1", "--env-kwargs", "{"], ["--env-kwargs must be a JSON object"]),
        (["--env", "Pendulum-v1", "--reward", "nomodule:reward"], ["no module 'nomodule'"]),
        (["pendulum", "--prior", "p.py:P"], ["--prior need --env ID"]),
        (["pendulum", "--env", "Pendulum-v1"], ["not both"]),
        ([], ["no task given", "--env ID"]),
    ],
    ids=["discrete", "dict", "unbounded", "kwargs", "reward", "prior-task", "both", "none"],
)
def test_bad_systems_are_refused_before_anything_is_written(
    tmp_path, tiny_envs_path, args, fragments
):
    out = _run("loop", *args, "--run-dir", tmp_path / "run", pythonpath=tiny_envs_path)
    _one_line_error(out, *fragments)
    assert not (tmp_path / "run").exists()


def test_systems_lists_gymnasium_envs_and_checks_one(tiny_envs_path):
    out = _run("systems")
    assert out.returncode == 0, out.stderr
    assert "Any Gymnasium env with a 1-D Box observation" in out.stdout
    assert "hybridgym systems --env ID" in out.stdout
    out = _run("systems", "--env", "MountainCarContinuous-v0")
    assert out.returncode == 0, out.stderr
    assert "position, velocity" in out.stdout and "999 steps" in out.stdout
    assert "the env states none: 1 step" in out.stdout and "solved at  90" in out.stdout
    out = _run(
        "systems", "--env", "hybridgym_tiny_envs:hybridgym_test/Cart-v0", pythonpath=tiny_envs_path
    )
    assert out.returncode == 0 and "0.1 s" in out.stdout, out.stderr
    _one_line_error(_run("systems", "--env", "CartPole-v1"), "Discrete(2)")


def test_fit_without_a_task_fits_a_black_box_or_a_users_prior(tmp_path):
    task = GymTask("Pendulum-v1")
    data = TrajectoryDataset.collect(task.make_real_env(), task, steps=300, seed=0)
    data.to_csv(tmp_path / "episodes.csv")
    out = _run(
        "fit", "--data", tmp_path / "episodes.csv", "--out", tmp_path / "model.pt",
        "--iterations", 30, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "a black box (MLP vector field), euler steps of dt 0.05" in out.stdout
    assert "cos_theta" in out.stdout  # the validation table names the CSV's states
    model = HybridODE.load(tmp_path / "model.pt")
    assert model.prior is None and model.dt == 0.05 and model.state_dim == 3
    # a user's prior: its constants are fitted and shown
    (tmp_path / "prior.py").write_text(textwrap.dedent(PRIOR))
    out = _run(
        "fit", "--data", tmp_path / "episodes.csv", "--out", tmp_path / "hybrid.pt",
        "--prior", f"{tmp_path / 'prior.py'}:Pendulum", "--iterations", 30, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "physical constants of Pendulum" in out.stdout and "gain" in out.stdout
    # what the fit chose and why: the given iterations, the rest automatic
    assert "how (FitReport.choices" in out.stdout
    assert "  iterations: 30 Adam steps" in out.stdout
    assert "  physics_first: constants fitted alone to the recorded rates" in out.stdout
    assert "HybridODE.load(" in out.stdout
    # a CSV of someone else's: columns named, dt from the evenly spaced times
    rows = (tmp_path / "episodes.csv").read_text().splitlines()[1:]  # no metadata line
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")
    out = _run(
        "fit", "--data", tmp_path / "plain.csv", "--states", "cos_theta,sin_theta,theta_dot",
        "--actions", "torque", "--out", tmp_path / "plain.pt", "--iterations", 10, "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert HybridODE.load(tmp_path / "plain.pt").dt == pytest.approx(0.05)
    out = _run("fit", "--data", tmp_path / "plain.csv", "--out", tmp_path / "x.pt")
    _one_line_error(out, "pass state_columns")


@pytest.mark.slow
def test_compare_on_a_gymnasium_env(tmp_path):
    out = _run(
        "compare", "--env", "Pendulum-v1", "--budget", 40, "--seeds", 1, "--eval-episodes", 1,
        "--threshold", -200, "--loop-set", "initial_steps=20", "--loop-set",
        "steps_per_iteration=20", "--loop-set", "ensemble=2", "--loop-set",
        "fit.iterations=20", "--loop-set",
        'agent_kwargs={"horizon":5,"samples":20,"iterations":2}',
        "--agent-set", "learning_starts=10", "--out", tmp_path / "cmp", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["config"]["task"] == "Pendulum-v1"
    assert results["config"]["real_env_id"] == "Pendulum-v1"
    loop, sac = results["trials"]["loop"]["0"], results["trials"]["sac"]["0"]
    assert loop["final_real_steps"] == 40 and sac["final_real_steps"] == 40
    assert (tmp_path / "cmp" / "loop" / "seed_0" / "models" / "task_002.pt").is_file()
    assert "Pendulum-v1: 1 seeds, budget 40 real steps, threshold -200" in out.stdout
