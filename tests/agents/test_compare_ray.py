"""The comparison's backends: every trial a Ray task gives the results.json of the local
backend (up to measured times), each trial in its own run directory, through the library and
``hybridgym compare --backend ray``; and the errors of a missing Ray or a bad address."""

import csv
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from hybridgym.agents.backends import RAY_INSTALL, check_backend, run_pending
from hybridgym.agents.compare import CompareConfig, Comparison
from hybridgym.agents.loop import TIMING_COLUMNS
from hybridgym.agents.trials import TIMING_FIELDS
from hybridgym.scripts.main import main

EXE = [sys.executable, "-m", "hybridgym.scripts.main"]
#: what differs between two runs of the same comparison: when and where it ran
VARYING = ("started", "date", "machine", "backend")
#: a tiny pendulum grid: 2 seeds; the loop one iteration (50 random steps, a short fit, a small
#: planner), SAC 50 real steps evaluated every 25; one evaluation episode
CONFIG = CompareConfig(
    "pendulum",
    budget=50,
    seeds=2,
    methods=("loop", "sac"),
    eval_episodes=1,
    eval_every=25,
    loop={
        "fit": {"iterations": 100, "lbfgs_iterations": 10},
        "agent_kwargs": {"samples": 32, "horizon": 10, "iterations": 2},
    },
    model_free={"learning_starts": 25, "policy_kwargs": {"net_arch": [8]}},
)
#: the same comparison on the command line
CLI_ARGS = (
    "compare",
    "--task",
    "pendulum",
    "--seeds",
    "2",
    "--budget",
    "50",
    "--methods",
    "loop,sac",
    "--eval-episodes",
    "1",
    "--eval-every",
    "25",
    "--loop-set",
    "fit.iterations=100",
    "--loop-set",
    "fit.lbfgs_iterations=10",
    "--loop-set",
    'agent_kwargs={"samples": 32, "horizon": 10, "iterations": 2}',
    "--agent-set",
    "learning_starts=25",
    "--agent-set",
    'policy_kwargs={"net_arch": [8]}',
)


def resumable_copy(source, out, method, seed):
    """A copy of the comparison in ``source`` as if interrupted before (method, seed)."""
    shutil.copytree(source, out)
    results = json.loads((out / "results.json").read_text())
    del results["trials"][method][str(seed)]
    (out / "results.json").write_text(json.dumps(results))
    return out


def run_cli(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [*EXE, *CLI_ARGS, *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "160"},
        timeout=timeout,
    )


def comparable(path):
    """``results.json`` without what differs between identical runs (kept in file order)."""
    results = json.loads((path / "results.json").read_text())
    for key in VARYING:
        del results[key]
    for by_seed in results["trials"].values():
        for trial in by_seed.values():
            for key in TIMING_FIELDS:
                del trial[key]
    for summary in results["summary"].values():
        del summary["wall_seconds_mean"], summary["total_seconds_mean"]
    return results


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def ray_module():
    """Ray, started in this process with two CPUs (workers: ~3 s to start)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def grids(ray_module, tmp_path_factory):
    """The tiny grid run with the local backend into ``local/`` and with Ray into ``ray/``."""
    root = tmp_path_factory.mktemp("grids")
    Comparison(CONFIG, root / "local").run()
    Comparison(CONFIG, root / "ray").run(backend="ray")
    return root


@pytest.mark.slow
def test_ray_gives_the_results_json_of_the_local_backend(grids, ray_module):
    local, ray = grids / "local", grids / "ray"
    assert comparable(ray) == comparable(local)
    # the same file, key for key in the same order, whatever order the trials finished in
    assert json.dumps(comparable(ray)) == json.dumps(comparable(local))
    assert list(comparable(ray)["trials"]) == ["loop", "sac"]
    assert all(list(s) == ["0", "1"] for s in comparable(ray)["trials"].values())
    stored = json.loads((ray / "results.json").read_text())
    address = ray_module.get_runtime_context().gcs_address
    assert stored["backend"] == {"name": "ray", "address": address, "nodes": 1, "cpus": 2.0}
    assert json.loads((local / "results.json").read_text())["backend"] == {"name": "local"}
    # the seeds differ from each other: equal files are not equally empty ones
    sac = stored["trials"]["sac"]
    assert sac["0"]["curve"] != sac["1"]["curve"] and len(sac["0"]["curve"]) == 2
    assert "on Ray (1 node(s), 2 CPUs" in (ray / "results.md").read_text()
    assert (ray / "return_vs_real_steps.png").stat().st_size > 0


@pytest.mark.slow
def test_each_ray_trial_writes_its_own_run_directory(grids):
    local, ray = grids / "local", grids / "ray"
    trials = json.loads((ray / "results.json").read_text())["trials"]
    for seed in ("0", "1"):
        run_dir = ray / trials["loop"][seed]["run_dir"]
        assert run_dir == ray / "loop" / f"seed_{seed}"
        assert json.loads((run_dir / "state.json").read_text())["completed_iterations"] == 1
        assert json.loads((run_dir / "config.json").read_text())["loop"]["seed"] == int(seed)
        # the workers' loops are the local ones, iteration for iteration
        assert metrics(run_dir) == metrics(local / "loop" / f"seed_{seed}")
        assert not (run_dir / ".lock").exists()
    # model-free trials write nothing: the folder holds the loop's runs and the reports
    assert sorted(p.name for p in ray.iterdir()) == sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in (ray / "loop").iterdir()) == ["seed_0", "seed_1"]


@pytest.mark.slow
def test_cli_resumes_a_comparison_on_a_local_ray_instance(grids, tmp_path):
    """``hybridgym compare --backend ray`` starts its own Ray instance (no address, none in the
    environment) and runs only the trial missing from the results."""
    out = resumable_copy(grids / "local", tmp_path / "cmp", "sac", 1)
    done = run_cli("--out", str(out), "--backend", "ray")
    assert done.returncode == 0, done.stderr
    assert "Ray at " in done.stdout and "sac, seed 1: submitted to Ray" in done.stdout
    assert done.stdout.count("submitted to Ray") == 1  # the recorded trials do not run again
    assert comparable(out) == comparable(grids / "local")
    backend = json.loads((out / "results.json").read_text())["backend"]
    assert backend["name"] == "ray" and backend["nodes"] == 1 and backend["cpus"] >= 1
    assert f"wrote {out / 'results.md'}" in done.stdout


@pytest.mark.slow
def test_cli_joins_the_ray_cluster_at_an_address(grids, ray_module, tmp_path):
    address = ray_module.get_runtime_context().gcs_address  # this process's local instance
    out = resumable_copy(grids / "local", tmp_path / "cmp", "sac", 0)
    done = run_cli("--out", str(out), "--backend", "ray", "--address", address, "--quiet")
    assert done.returncode == 0, done.stderr
    assert comparable(out) == comparable(grids / "local")
    backend = json.loads((out / "results.json").read_text())["backend"]
    assert backend == {"name": "ray", "address": address, "nodes": 1, "cpus": 2.0}


@pytest.mark.slow
def test_a_failed_ray_trial_leaves_the_others_recorded(ray_module, tmp_path):
    config = dataclasses.replace(CONFIG, seeds=1)
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "seed_0").write_text("a file where the loop's run directory goes")
    comparison = Comparison(config, tmp_path)
    with pytest.raises(RuntimeError, match=r"1 of 2 trials failed on Ray \(loop seed 0;") as err:
        run_pending(comparison, backend="ray")
    assert not isinstance(err.value.__cause__, ray_module.exceptions.RayError)  # the trial's own
    stored = json.loads((tmp_path / "results.json").read_text())
    assert list(stored["trials"]) == ["sac"] and list(stored["trials"]["sac"]) == ["0"]
    assert Comparison(config, tmp_path).pending() == [("loop", 0)]


@pytest.mark.slow  # starts Ray
def test_an_address_is_refused_where_ray_is_already_initialised(ray_module, tmp_path):
    comparison = Comparison(
        CompareConfig("pendulum", budget=50, methods=("sac",), seeds=1), tmp_path
    )
    with pytest.raises(ValueError, match="already initialised in this process"):
        run_pending(comparison, backend="ray", address="127.0.0.1:6379")
    assert not any(tmp_path.iterdir())


def test_unknown_backends_and_stray_addresses_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'rya'; known: local, ray; did you"):
        check_backend("rya")
    with pytest.raises(ValueError, match="for the ray backend only"):
        check_backend("local", "127.0.0.1:6379")


def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hybridgym\[ray\]'"):
        check_backend("ray")
    check_backend("local")  # the default needs nothing
    out = tmp_path / "cmp"
    assert main([*CLI_ARGS, "--out", str(out), "--backend", "ray"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"hybridgym compare: error: {_ray_missing()}\n"
    assert captured.out == "" and not out.exists()


def _ray_missing():
    return f"the ray backend needs Ray, which is not installed: {RAY_INSTALL}"


def test_cli_refuses_an_address_without_the_ray_backend(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([*CLI_ARGS, "--out", str(out), "--address", "127.0.0.1:6379"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "hybridgym compare: error: --address is for --backend ray; add --backend ray or drop "
        "--address\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("nonsense", "(ValueError: Invalid address format: nonsense)"),
        ("127.0.0.1:1", "(ConnectionError: nothing answers at 127.0.0.1:1"),  # at once
    ],
)
def test_cli_refuses_an_address_without_a_cluster(tmp_path, address, why):
    pytest.importorskip("ray")
    out = tmp_path / "cmp"
    done = subprocess.run(
        [*EXE, *CLI_ARGS, "--out", str(out), "--backend", "ray", "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"hybridgym compare: error: could not connect to Ray at {address!r}")
    assert why in lines[0] and "ray start --head" in lines[0]
    assert done.stdout == "" and not out.exists()
