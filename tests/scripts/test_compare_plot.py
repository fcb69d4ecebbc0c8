"""``hybridgym compare`` and ``hybridgym plot``, end to end through a subprocess, at tiny
scale."""

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hybridgym.agents import LoopConfig, ModelBasedLoop
from hybridgym.agents.diagnostics import HELD_OUT_SEED
from hybridgym.envs import get_task
from hybridgym.models import HybridODE, TrajectoryDataset, prediction_errors

EXE = [sys.executable, "-m", "hybridgym.scripts.main"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a loop small enough for a test: a short fit, a small planner
TINY_LOOP = (
    "--loop-set",
    "fit.iterations=100",
    "--loop-set",
    "fit.lbfgs_iterations=10",
    "--loop-set",
    'agent_kwargs={"samples": 64, "horizon": 15, "iterations": 2}',
)


def _env():
    return {**os.environ, "COLUMNS": "160"}


def _run(*args, cwd=None):
    return subprocess.run([*EXE, *args], capture_output=True, text=True, cwd=cwd, env=_env())


def _check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        width, height = image.size
    assert width > 200 and height > 200


@pytest.mark.slow
def test_compare_writes_results_table_and_plot_and_resumes(tmp_path):
    out = tmp_path / "cmp"
    args = (
        "compare",
        "--task",
        "pendulum",
        "--seeds",
        "2",
        "--budget",
        "100",
        "--out",
        str(out),
        "--eval-episodes",
        "1",
        "--eval-every",
        "50",
        *TINY_LOOP,
        "--agent-set",
        "learning_starts=50",
    )
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["threshold"] == -200.0 and results["config"]["budget"] == 100
    assert results["machine"]["cpus"] >= 1 and results["date"].startswith("20")
    assert set(results["trials"]) == {"loop", "sac"}
    for method, by_seed in results["trials"].items():
        assert set(by_seed) == {"0", "1"}
        for trial in by_seed.values():
            steps = [s for s, _ in trial["curve"]]
            assert steps == sorted(steps) and 0 < steps[-1] == trial["final_real_steps"] <= 100
            assert trial["final_return_mean"] == pytest.approx(trial["curve"][-1][1])
            hit = next((s for s, r in trial["curve"] if r >= -200.0), None)
            assert trial["steps_to_threshold"] == hit
            assert 0 < trial["wall_seconds"] <= trial["total_seconds"]
        if method == "sac":  # evaluated every 50 steps; 100 steps cannot swing it up
            assert all(t["curve"][0][0] == 50 for t in by_seed.values())
    for seed in ("0", "1"):  # the loop keeps a resumable run directory per seed
        assert results["trials"]["loop"][seed]["curve"][0][0] == 50
        assert (out / "loop" / f"seed_{seed}" / "state.json").is_file()

    # the table (printed and results.md) shows the numbers of results.json
    markdown = (out / "results.md").read_text()
    for method, summary in results["summary"].items():
        trials = list(results["trials"][method].values())
        final = [t["final_return_mean"] for t in trials]
        assert summary["final_return_mean"] == pytest.approx(np.mean(final))
        assert summary["final_return_std"] == pytest.approx(np.std(final))
        reached = [t["steps_to_threshold"] for t in trials if t["steps_to_threshold"]]
        assert summary["reached_threshold"] == len(reached)
        cells = [
            f"{np.mean(final):.1f} +- {np.std(final):.1f}",
            f"{len(reached)}/2",
            f"{statistics.fmean(t['wall_seconds'] for t in trials):.1f}",
        ]
        if len(reached) == 2:
            cells.append(f"{statistics.median(reached):.0f}")
        elif not reached:
            cells.append("not reached")
        row = next(
            line for line in markdown.splitlines() if line.startswith(f"| {summary['label']}")
        )
        for cell in cells:
            assert f"| {cell} |" in row
            assert cell in done.stdout
    assert "model-based loop (mpc)" in markdown and "SAC (model-free)" in markdown
    _check_png(out / "return_vs_real_steps.png")
    for name in ("results.json", "results.md", "return_vs_real_steps.png"):
        assert f"wrote {out / name}" in done.stdout

    # the same command again: every trial is on record, nothing runs again
    again = _run(*args)
    assert again.returncode == 0, again.stderr
    assert "running" not in again.stdout
    assert json.loads((out / "results.json").read_text())["trials"] == results["trials"]


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    """A one-iteration pendulum loop run, made by ``hybridgym loop``."""
    run = tmp_path_factory.mktemp("pendulum") / "run"
    made = _run(
        "loop",
        "pendulum",
        "--run-dir",
        str(run),
        "--iterations",
        "1",
        "--set",
        "eval_episodes=0",
        "--set",
        "fit.iterations=200",
        "--quiet",
    )
    assert made.returncode == 0, made.stderr
    return run


@pytest.mark.slow
def test_plot_writes_diagnostics_that_match_a_recomputation(pendulum_run):
    done = _run("plot", str(pendulum_run), "--episodes", "2", "--horizon", "20", "--quiet")
    assert done.returncode == 0, done.stderr
    plots = pendulum_run / "plots"
    names = ("prediction_error", "prediction_episode", "phase_portrait", "residual_vs_truth")
    for name in names:
        _check_png(plots / f"{name}.png")
        assert str(plots / f"{name}.png") in done.stdout
    report = json.loads((plots / "diagnostics.json").read_text())
    assert report["iteration"] == 1 and report["held_out"]["steps"] == 400
    errors = report["prediction_error"]
    assert errors["horizons"] == list(range(1, 21))
    assert errors["training_horizons"] == list(range(1, 21))  # 50-step episode: 31+ windows
    for name in ("theta", "thetadot"):
        curve = np.array(errors["held_out"][name])
        assert np.isfinite(curve).all() and curve.min() > 0
        assert curve[19] > 2 * curve[0] and curve[9] > curve[0]  # errors grow with k
    # the same numbers from the library: the model file and the held-out episodes' seeds
    task = get_task("pendulum")
    model = HybridODE.load(pendulum_run / "models" / "model_001.pt")
    env = task.make_real_env()
    held_out = TrajectoryDataset.collect(env, task, None, episodes=2, seed=HELD_OUT_SEED)
    with torch.no_grad():
        again = prediction_errors(model, held_out, (1, 10, 20))
    for k in (1, 10, 20):
        for name in ("theta", "thetadot"):
            assert errors["held_out"][name][k - 1] == pytest.approx(again[k][name], rel=1e-5)
    # Pendulum-v1 is a map: under Euler steps the residual should learn dt * theta'' for
    # theta' (large, always learned) and what the fitted prior misses of theta'' (small once
    # the constants are identified)
    residual = report["residual"]
    assert residual["kind"] == "euler map"
    theta = residual["held_out"]["theta"]
    assert theta["correlation"] > 0.9 and theta["rmse"] < 0.5 * theta["target_std"]
    assert residual["held_out"]["thetadot"]["rmse"] < 1.0  # rad/s^2; theta'' spans +-20


@pytest.mark.slow
def test_plot_lotka_volterra_phase_portrait_into_another_folder(tmp_path):
    config = LoopConfig.for_task(
        "lotka_volterra", iterations=1, eval_episodes=0, fit={"iterations": 150}
    )
    ModelBasedLoop("lotka_volterra", config, tmp_path / "run", log=None).run()
    done = _run("plot", str(tmp_path / "run"), "--out", str(tmp_path / "diag"), "--episodes", "1")
    assert done.returncode == 0, done.stderr
    for name in ("prediction_error", "prediction_episode", "phase_portrait", "residual_vs_truth"):
        _check_png(tmp_path / "diag" / f"{name}.png")
    report = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert report["residual"]["kind"] == "vector field"  # truth - prior: the interaction terms
    for name in ("prey", "predators"):
        agreement = report["residual"]["training"][name]
        assert agreement["correlation"] > 0.8 and np.isfinite(agreement["rmse"])
    assert not (tmp_path / "run" / "plots" / "diagnostics.json").exists()


BAD_ARGUMENTS = [
    (("compare", "--task", "pendulm", "--budget", "100"), "Did you mean 'pendulum'"),
    (("compare", "--task", "pendulum", "--budget", "-5"), "budget must be an int >= 1"),
    (("compare", "--task", "pendulum", "--budget", "100", "--seeds", "0"), "seeds must be"),
    (("compare", "--task", "pendulum", "--budget", "30"), "below the loop's first iteration"),
    (("plot", "missing"), "no run directory missing"),
    (("plot", "."), "not a loop run directory (no config.json)"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Every bad command line, run side by side (each starts a Python with torch)."""
    folders = [tmp_path_factory.mktemp("bad") for _ in BAD_ARGUMENTS]
    procs = [
        subprocess.Popen(
            [*EXE, *args],
            cwd=folder,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for (args, _), folder in zip(BAD_ARGUMENTS, folders, strict=True)
    ]
    outcomes = []
    for proc, folder in zip(procs, folders, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        outcomes.append((proc.returncode, stdout, stderr, folder))
    return outcomes


@pytest.mark.parametrize(
    "case", range(len(BAD_ARGUMENTS)), ids=[" ".join(a) for a, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_give_one_line_and_exit_2(refused, case):
    _, pattern = BAD_ARGUMENTS[case]
    returncode, stdout, stderr, folder = refused[case]
    assert returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not any(folder.iterdir()), "a refused command writes nothing"
