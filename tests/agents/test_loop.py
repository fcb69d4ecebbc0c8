"""ModelBasedLoop: run directory, resume after SIGKILL, lock, reproducibility, sample efficiency."""

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hybridgym.agents import LOOP_DEFAULTS, LoopConfig, ModelBasedLoop
from hybridgym.agents.loop import TIMING_COLUMNS
from hybridgym.models import Ensemble, HybridODE, TrajectoryDataset

# a loop small enough for a unit test: 2 iterations of 50 + 50 real pendulum steps, the
# task's default fit, a few policy updates
TINY = {
    "agent": "differentiable",
    "iterations": 2,
    "initial_steps": 50,
    "steps_per_iteration": 50,
    "episode_steps": 25,
    "agent_updates": 5,
    "eval_episodes": 2,
    "agent_kwargs": {"batch_size": 32, "horizon": 8},
}


def tiny(**kwargs):
    return LoopConfig.for_task("pendulum", **{**TINY, **kwargs})


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_config_defaults_merge_and_bad_fields():
    config = LoopConfig.for_task("pendulum", fit={"iterations": 7})
    assert config.fit["iterations"] == 7
    assert config.fit["residual_penalty"] == LOOP_DEFAULTS["pendulum"]["fit"]["residual_penalty"]
    assert config.method == "euler"
    assert config.agent_kwargs == LOOP_DEFAULTS["pendulum"]["agent_kwargs"]["mpc"]
    other = LoopConfig.for_task("pendulum", agent="differentiable", agent_kwargs={"horizon": 8})
    assert other.agent_kwargs == {"batch_size": 128, "horizon": 8}
    # the cart-pole's in-episode refits belong to its planner, not to a trained agent
    assert LoopConfig.for_task("cartpole_swingup").refit_every == 40
    assert LoopConfig.for_task("cartpole_swingup", agent="sac").refit_every is None
    config.fit["iterations"] = -1  # a config's dicts are its own, not the table's
    assert LOOP_DEFAULTS["pendulum"]["fit"]["iterations"] == 500
    with pytest.raises(ValueError, match="unknown LoopConfig fields"):
        LoopConfig.for_task("pendulum", iteratons=3)
    with pytest.raises(ValueError, match="did you mean 'mpc'"):
        LoopConfig(agent="mcp")
    with pytest.raises(ValueError, match="unknown FitConfig fields"):
        LoopConfig(fit={"horizn": 3})
    with pytest.raises(ValueError, match="initial_steps"):
        LoopConfig(initial_steps=0)
    with pytest.raises(ValueError, match="prior, the residual or both"):
        LoopConfig(prior=False, residual=False)
    with pytest.raises(ValueError, match="collect_schedule"):
        LoopConfig(collect_schedule=[50, 0])
    with pytest.raises(ValueError, match="refit_every works with the mpc agent only"):
        LoopConfig(agent="differentiable", refit_every=10)


def test_collect_schedule_sets_the_real_steps_of_each_iteration():
    plain = LoopConfig(initial_steps=20, steps_per_iteration=100)
    assert [plain.target_steps(k) for k in (1, 2, 3)] == [20, 120, 220]
    trials = LoopConfig(initial_steps=20, collect_schedule=[50, 50, 200])
    assert [trials.target_steps(k) for k in (1, 2, 3, 4, 5)] == [20, 70, 120, 320, 520]
    assert trials.to_dict()["collect_schedule"] == [50, 50, 200]


def test_the_planner_refits_during_an_episode(tmp_path):
    lines = []
    config = tiny(
        agent="mpc",
        iterations=2,
        initial_steps=20,
        steps_per_iteration=20,
        episode_steps=None,
        refit_every=8,
        eval_episodes=0,
        agent_kwargs={"horizon": 5, "samples": 20, "iterations": 1},
        fit={"iterations": 20, "lbfgs_iterations": 0},
    )
    loop = ModelBasedLoop("pendulum", config, tmp_path / "run", log=lines.append)
    loop.run()
    refits = [line for line in lines if "refitting during" in line]
    assert refits == [
        "refitting during episode 1 after 8 steps (28 steps in all)",
        "refitting during episode 1 after 16 steps (36 steps in all)",
    ]
    assert TrajectoryDataset.load(tmp_path / "run" / "data").num_steps == 40


def test_residual_mask_and_no_evaluation(tmp_path):
    config = tiny(iterations=1, residual_mask=[1], eval_episodes=0)
    loop = ModelBasedLoop("pendulum", config, tmp_path / "run", log=None)
    (row,) = loop.run()
    assert loop.model.residual_mask.tolist() == [0.0, 1.0]
    assert row["eval_return_mean"] != row["eval_return_mean"]  # NaN: not evaluated
    assert metrics(tmp_path / "run")[0]["eval_return_mean"] == "nan"


@pytest.mark.parametrize("agent", ["sac", "ppo"])
def test_sb3_agents_train_in_learned_envs_and_resume(tmp_path, agent):
    """SB3 agents train in a seeded LearnedVecEnv, are saved each round and reloaded."""
    kwargs = {"sac": {"learning_starts": 50}, "ppo": {"n_steps": 32, "batch_size": 32}}[agent]
    config = tiny(
        agent=agent, agent_updates=128, learned_envs=2, agent_kwargs=kwargs, eval_episodes=1
    )
    run = tmp_path / "run"
    history = ModelBasedLoop("pendulum", config, run, log=None).run()
    assert [row["real_steps"] for row in history] == [50, 100]
    assert (run / "agents" / "agent_001.zip").is_file()
    assert (run / "agents" / "agent_002.zip").is_file()
    assert all(row["eval_return_mean"] < 0 for row in history)
    again = ModelBasedLoop("pendulum", dataclasses.replace(config, iterations=3), run, log=None)
    assert [row["real_steps"] for row in again.run()] == [50, 100, 150]


def test_run_directory_layout_and_rows(tmp_path):
    run = tmp_path / "run"
    history = ModelBasedLoop("pendulum", tiny(), run, log=None).run()
    assert [row["real_steps"] for row in history] == [50, 100]
    assert [row["real_episodes"] for row in history] == [2, 4]
    for name in ("config.json", "metrics.csv", "state.json"):
        assert (run / name).is_file()
    for name in ("model_001.pt", "model_002.pt"):
        assert (run / "models" / name).is_file()
    assert (run / "agents" / "agent_002.pt").is_file()
    assert (run / "plots" / "return_vs_real_steps.png").stat().st_size > 1000
    assert (run / "plots" / "model_error.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    assert not (run / ".lock").exists()
    state = json.loads((run / "state.json").read_text())
    assert state["completed_iterations"] == 2 and state["finished"] is True
    data = TrajectoryDataset.load(run / "data")
    assert data.num_steps == 100 and len(data) == 4
    rows = metrics(run)
    assert [int(r["real_steps"]) for r in rows] == [50, 100]
    # the model error of iteration 2 is measured on the 50 new steps, before the refit,
    # and the fitted model predicts them better than the 50%-off prior predicted the first 50
    assert float(rows[1]["model_error"]) < float(rows[0]["model_error"])
    assert json.loads((run / "config.json").read_text())["loop"]["initial_steps"] == 50
    # a finished run does nothing more when run again
    again = ModelBasedLoop("pendulum", tiny(), run, log=None).run()
    assert again == [pytest.approx(row) for row in history] or len(again) == 2
    assert TrajectoryDataset.load(run / "data").num_steps == 100


def test_same_seed_same_metrics(tmp_path):
    a = ModelBasedLoop("pendulum", tiny(iterations=1), tmp_path / "a", log=None).run()
    b = ModelBasedLoop("pendulum", tiny(iterations=1), tmp_path / "b", log=None).run()
    c = ModelBasedLoop("pendulum", tiny(iterations=1, seed=1), tmp_path / "c", log=None).run()
    strip = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in b]
    assert strip != [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in c]
    ra, rb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    for column in ("eval_return_mean", "model_error", "fit_loss"):
        assert [r[column] for r in ra] == [r[column] for r in rb]


def test_another_config_or_a_live_lock_is_refused(tmp_path):
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    with pytest.raises(ValueError, match=r"loop\.seed: 0 there, 5 now"):
        ModelBasedLoop("pendulum", tiny(iterations=1, seed=5), run, log=None).run()
    hold = (
        "import sys, time\nfrom hybridgym.models.files import DirectoryLock\n"
        "DirectoryLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FileExistsError, match=f"in use by process {holder.pid}"):
            ModelBasedLoop("pendulum", tiny(iterations=2), run, log=None).run()
        assert TrajectoryDataset.load(run / "data").num_steps == 50  # nothing touched
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # the lock of a process that is gone is taken over; more iterations extend the run
    history = ModelBasedLoop("pendulum", tiny(iterations=2), run, log=None).run()
    assert [row["real_steps"] for row in history] == [50, 100]
    assert json.loads((run / "config.json").read_text())["loop"]["iterations"] == 2


def _episode_files(run):
    folder = run / "data" / "episodes"
    if not folder.exists():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("episode_*.npz"))
    }


def _sigkill_command(run):
    """`hybridgym loop` on the cart-pole at a size that takes a few tens of seconds: 5 random
    episodes of 20 steps, then 20 more collected by the differentiable policy."""
    return [
        sys.executable,
        "-m",
        "hybridgym.scripts.main",
        "loop",
        "cartpole_swingup",
        "--run-dir",
        str(run),
        "--agent",
        "differentiable",
        "--set",
        "iterations=2",
        "--set",
        "initial_steps=100",
        "--set",
        "steps_per_iteration=400",
        "--set",
        "collect_schedule=[]",
        "--set",
        "episode_steps=20",
        "--set",
        "agent_updates=30",
        "--set",
        "eval_episodes=2",
        "--set",
        'fit={"iterations": 150, "horizon": 5, "batch_size": 128}',
        "--set",
        'agent_kwargs={"batch_size": 64, "horizon": 16}',
    ]


@pytest.mark.slow
def test_resume_after_sigkill_in_fit_training_and_collection(tmp_path):
    run = tmp_path / "run"
    command = _sigkill_command(run)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def kill_when(predicate):
        """Start the command, SIGKILL it on the first stderr line matching predicate."""
        seen = []
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as proc:
            for line in proc.stderr:
                seen.append(line.strip())
                if predicate(line, seen):
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, seen
        time.sleep(0.05)
        return seen

    # 1: while the agent trains in iteration 1
    kill_when(lambda line, _: "iteration 1: training" in line)
    before = _episode_files(run)
    assert len(before) == 5  # the 100 random steps, 20 per episode
    assert not (run / "state.json").exists()

    # 2: in iteration 2's collection, after its first episodes are recorded
    def in_collection(line, seen):
        return "recorded episode 7 " in line

    kill_when(in_collection)
    state = json.loads((run / "state.json").read_text())
    assert state["completed_iterations"] == 1
    middle = _episode_files(run)
    assert 8 <= len(middle) < 25, "the kill should land while iteration 2 collects"
    assert all(middle[name] == digest for name, digest in before.items())

    # 3: while fitting in iteration 2 (the resumed run first finishes the collection)
    kill_when(lambda line, _: "iteration 2: fitting" in line)
    late = _episode_files(run)
    assert len(late) == 25
    assert all(late[name] == digest for name, digest in middle.items())

    # the same command completes the run
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    final = _episode_files(run)
    assert final == late  # every recorded episode exactly once, unchanged
    data = TrajectoryDataset.load(run / "data")
    assert data.num_steps == 500 and len(data) == 25
    rows = metrics(run)
    assert [int(r["real_steps"]) for r in rows] == [100, 500]
    assert json.loads((run / "state.json").read_text())["finished"] is True
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_pendulum_solved_with_at_most_100_real_steps(tmp_path):
    """The reduced sample-efficiency check (benchmarks/loop_pendulum.py runs 5 seeds)."""
    config = LoopConfig.for_task("pendulum", seed=0, stop_return=-200.0)
    assert config.agent == "mpc" and config.iterations == 2
    history = ModelBasedLoop("pendulum", config, tmp_path / "run", log=None).run()
    assert history[-1]["real_steps"] <= 100
    assert max(row["eval_return_mean"] for row in history) >= -200


def _poisoning_fit(monkeypatch, poison_calls):
    """Wrap the loop's fit: on the listed calls (1-based) the fitted weights turn to NaN."""
    import hybridgym.agents.loop as loop_module

    real_fit, configs = loop_module.fit, []

    def fake_fit(model, data, config):
        configs.append(config)
        report = real_fit(model, data, config)
        if len(configs) in poison_calls:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return report

    monkeypatch.setattr(loop_module, "fit", fake_fit)
    return configs


def test_a_fit_that_turns_nan_is_retried_with_a_smaller_step(tmp_path, monkeypatch, capsys):
    configs = _poisoning_fit(monkeypatch, poison_calls={2})  # iteration 2's first fit
    said = []
    loop = ModelBasedLoop("pendulum", tiny(), tmp_path / "run", log=said.append)
    history = loop.run()
    assert [row["real_steps"] for row in history] == [50, 100]
    assert len(configs) == 3
    assert configs[2].learning_rate == pytest.approx(configs[1].learning_rate / 10)
    assert configs[2].iterations == configs[1].iterations // 2
    assert any("fit failed (non-finite weights); retrying" in line for line in said)
    assert "fit failed" in capsys.readouterr().err
    saved = torch.load(tmp_path / "run" / "models" / "model_002.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_fit_that_fails_twice_keeps_the_previous_model(tmp_path, monkeypatch):
    _poisoning_fit(monkeypatch, poison_calls={2, 3})
    said = []
    run = tmp_path / "run"
    history = ModelBasedLoop("pendulum", tiny(), run, log=said.append).run()
    assert len(history) == 2 and all(row["eval_return_mean"] < 0 for row in history)
    assert any("keeping the previous model" in line for line in said)
    first = torch.load(run / "models" / "model_001.pt", weights_only=True)["state_dict"]
    second = torch.load(run / "models" / "model_002.pt", weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_random_sigkills_lose_and_duplicate_nothing(tmp_path):
    """Six SIGKILLs at random moments across a run (seeded: at random lines of an uninterrupted
    run's log, plus a random delay), each followed by the same command: the run completes with
    the step count of the uninterrupted run, and every episode recorded before a kill is on
    disk once and unchanged afterwards."""
    import numpy as np

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    done = subprocess.run(
        _sigkill_command(reference), capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    expected = TrajectoryDataset.load(reference / "data")
    logged = [line.strip() for line in done.stderr.splitlines() if "[hybridgym loop]" in line]
    order = {line: k for k, line in enumerate(logged)}
    rng = np.random.default_rng(2026)
    # six moments spread over the run: a random log line in each sixth, plus a random delay
    bounds = np.linspace(0, len(logged), 7).astype(int)
    targets = [int(rng.integers(lo, hi)) for lo, hi in itertools.pairwise(bounds)]

    run, seen, killed = tmp_path / "run", {}, []
    for target in targets:
        with subprocess.Popen(
            _sigkill_command(run), stderr=subprocess.PIPE, text=True, env=env
        ) as proc:
            for line in proc.stderr:  # the resumed run skips what is done: the first line at
                if order.get(line.strip(), -1) >= target:  # or past the target counts
                    time.sleep(float(rng.uniform(0.0, 0.3)))
                    proc.send_signal(signal.SIGKILL)
                    killed.append(logged[target])
                    break
            proc.stderr.close()
            proc.wait(timeout=300)
        now = _episode_files(run)
        assert all(now[name] == digest for name, digest in seen.items()), "an episode changed"
        seen = now
    assert len(killed) >= 5, f"only {len(killed)} of the kills landed: {killed}"
    final = subprocess.run(_sigkill_command(run), capture_output=True, text=True, env=env)
    assert final.returncode == 0, final.stderr
    files = _episode_files(run)
    assert all(files[name] == digest for name, digest in seen.items())
    data = TrajectoryDataset.load(run / "data")
    assert data.num_steps == expected.num_steps == 500
    assert len(data) == len(expected) == len(files) == 25
    assert [int(r["real_steps"]) for r in metrics(run)] == [100, 500]
    assert json.loads((run / "state.json").read_text())["finished"] is True


# --- the divergence guard against issue 15's cases ------------------------------------------------
def _constants(path):
    return HybridODE.load(path).prior.constants()


def test_a_huge_learning_rate_keeps_the_first_model_finite(tmp_path, capsys):
    """lr 1e6 drove the pendulum's constants to inf through their log parameters while every
    stored weight stayed finite: the refit and its retry (lr 1e5) are refused, the untrained
    model stays (finite, its constants where they started) and a warning says so."""
    run = tmp_path / "run"
    config = tiny(iterations=1, fit={**tiny().fit, "learning_rate": 1e6})
    ModelBasedLoop("pendulum", config, run, log=None).run()
    err = capsys.readouterr().err
    assert "fit failed" in err and "keeping the previous model" in err
    fresh = ModelBasedLoop("pendulum", config, tmp_path / "unused", log=None)._new_model()
    kept = _constants(run / "models" / "model_001.pt")
    for name, value in fresh.prior.constants().items():
        assert torch.isfinite(kept[name]) and torch.equal(kept[name], value.detach())


def test_a_worse_refit_of_a_good_model_is_refused_for_every_horizon(tmp_path, capsys):
    """After a good first fit, refits at lr 3 and lr 30 (and their retries at 0.3 and 3) may
    stay finite yet predict far worse: each is compared with the model it replaces on the same
    data (1- and 10-step windows) and refused, so the good model is kept."""
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    good = _constants(run / "models" / "model_001.pt")
    for rate in (3.0, 30.0):
        config = tiny(iterations=2, fit={**tiny().fit, "learning_rate": rate})
        loop = ModelBasedLoop("pendulum", config, tmp_path / f"bad{rate}", log=None)
        loop.data = TrajectoryDataset.load(run / "data").subset(range(2))
        loop.model = HybridODE.load(run / "models" / "model_001.pt")
        reference = loop._member_errors(loop.data)
        loop._fit_or_keep(loop.data, loop._fit_config(2), f"lr {rate}")
        assert loop._member_errors(loop.data) == reference  # the good model, untouched
        kept = loop.model.prior.constants()
        assert all(torch.equal(kept[n], good[n]) for n in good)
    err = capsys.readouterr().err
    assert err.count("keeping the previous model") == 2, err


def test_the_guard_checks_every_member_of_an_ensemble(tmp_path, monkeypatch, capsys):
    """A refit that wrecks member 2 of 3 alone (finite weights, far worse predictions) is
    refused by name; every member stays as it was."""
    import hybridgym.agents.loop as loop_module

    real_fit = loop_module.fit

    def wreck_member_2(model, data, config):
        report = real_fit(model, data, config)
        if isinstance(model, Ensemble):
            with torch.no_grad():
                for p in model.members[2].residual.parameters():
                    p.mul_(50.0)
        return report

    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1, ensemble=3), run, log=None).run()
    monkeypatch.setattr(loop_module, "fit", wreck_member_2)
    said = []
    loop = ModelBasedLoop("pendulum", tiny(iterations=2, ensemble=3), run, log=said.append)
    loop.run()
    assert any("member 2:" in line and "keeping the previous model" in line for line in said)
    first = torch.load(run / "models" / "model_001.pt", weights_only=True)
    second = torch.load(run / "models" / "model_002.pt", weights_only=True)
    for a, b in zip(first["members"], second["members"], strict=True):
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_an_iteration_written_twice_to_tensorboard_shows_once(tmp_path):
    """A kill after the TensorBoard write and before state.json reruns the iteration on
    resume: its second write replaces the first in TensorBoard's view (purge_step)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    loop = ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None)
    (row,) = loop.run()
    time.sleep(1.1)  # a later event file, as a resumed process writes
    loop._write_tensorboard({**row, "model_error": 123.0})
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("loop/model_error")
    assert [(s.step, s.value) for s in scalars] == [(50, 123.0)]


def test_a_kill_during_evaluation_resumes_the_evaluation_not_the_iteration(tmp_path, monkeypatch):
    """The evaluation records each episode in state.json (returns and the planner's random
    state): a run killed after its second evaluation episode resumes at the third, without
    collecting, fitting or training again, and ends with the metrics of an uninterrupted run."""
    import hybridgym.agents.loop as loop_module

    config = tiny(
        iterations=1,
        agent="mpc",
        agent_kwargs={"horizon": 10, "samples": 40, "iterations": 2},
        eval_episodes=3,
    )
    whole = ModelBasedLoop("pendulum", config, tmp_path / "whole", log=None).run()

    real_evaluate, real_fit, calls = loop_module.evaluate, loop_module.fit, {"eval": 0, "fit": 0}

    def killed_on_the_third(*args, **kwargs):
        calls["eval"] += 1
        if calls["eval"] == 3:
            raise KeyboardInterrupt  # as a kill: nothing after this point runs
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop_module, "evaluate", killed_on_the_third)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        ModelBasedLoop("pendulum", config, run, log=None).run()
    state = json.loads((run / "state.json").read_text())
    assert state["completed_iterations"] == 0 and len(state["evaluating"]["returns"]) == 2

    def counted_fit(*args, **kwargs):
        calls["fit"] += 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(loop_module, "evaluate", real_evaluate)
    monkeypatch.setattr(loop_module, "fit", counted_fit)
    said = []
    resumed = ModelBasedLoop("pendulum", config, run, log=said.append).run()
    assert calls["fit"] == 0  # nothing refitted
    assert any("resuming its evaluation after 2 of 3 episodes" in line for line in said)
    strip = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in whole]
    assert [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in resumed] == strip
    state = json.loads((run / "state.json").read_text())
    assert state["completed_iterations"] == 1 and "evaluating" not in state
    assert state["finished"] is True
