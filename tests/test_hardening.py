"""Hardening (issue 7): untrusted files run no code, same seed gives the same run bit for bit,
one loop per run directory, and a failed write names its file and keeps the earlier data.

docs/guarantees.md lists these promises and points at the tests below.
"""

import base64
import csv
import errno
import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from hybridgym.agents import (
    DifferentiablePolicyAgent,
    LoopConfig,
    ModelBasedLoop,
    MPCAgent,
    PolicyTrainingConfig,
    load_agent,
    load_controller,
    load_planner,
    make_agent,
    save_agent,
    save_planner,
)
from hybridgym.agents.loop import TIMING_COLUMNS
from hybridgym.envs import get_task
from hybridgym.envs.learned import LearnedEnv, load_model
from hybridgym.models import Ensemble, HybridODE, MLPResidual, TrajectoryDataset
from hybridgym.models.hybrid import CHECKPOINT_VERSION

# the small loop of tests/agents/test_loop.py: 2 iterations of 50 real pendulum steps
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


# --- untrusted files ---------------------------------------------------------------------------
class Touch:
    """Unpickling this creates ``target``: the stand-in for code an attacker runs."""

    def __init__(self, target):
        self.target = pathlib.Path(target)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def _model(task="pendulum"):
    task = get_task(task)
    torch.manual_seed(0)
    return HybridODE(task.make_prior(), MLPResidual(task.state_dim, task.action_dim, hidden=(8,)),
                     dt=task.dt)  # fmt: skip


def _plant_checkpoint(path, fmt, target):
    """A torch checkpoint with the right format tag whose unpickling would touch ``target``."""
    torch.save({"format": fmt, "version": CHECKPOINT_VERSION, "payload": Touch(target)}, path)
    return path


def _would_run(load, tmp_path):
    """The planted file is live: an unguarded load does create the file."""
    witness = tmp_path / "witness"
    try:
        load(witness)
    except Exception:
        pass
    assert witness.exists(), "the planted pickle should run code when loaded unguarded"


POLICY = "hybridgym.DifferentiablePolicyAgent"
LOADERS = {
    "HybridODE.load": ("hybridgym.HybridODE", HybridODE.load),
    "Ensemble.load": ("hybridgym.Ensemble", Ensemble.load),
    "envs.load_model": ("hybridgym.HybridODE", load_model),
    "DifferentiablePolicyAgent.load": (POLICY, DifferentiablePolicyAgent.load),
    "load_controller": (POLICY, lambda p: load_controller(p, "pendulum")),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_checkpoints_that_would_run_code_are_refused(loader, tmp_path):
    fmt, load = LOADERS[loader]
    target = tmp_path / "pwned"
    path = _plant_checkpoint(tmp_path / "evil.pt", fmt, target)
    _would_run(lambda w: torch.load(_plant_checkpoint(tmp_path / "w.pt", fmt, w),
                                    weights_only=False), tmp_path)  # fmt: skip
    refused = "nothing from it was executed|is not an agent file"  # load_controller: the latter
    with pytest.raises(ValueError, match=refused) as info:
        load(path)
    assert str(path) in str(info.value)
    assert not target.exists()


def test_the_policy_format_tag_is_the_one_the_agent_writes(tmp_path):
    path = DifferentiablePolicyAgent("pendulum", PolicyTrainingConfig(hidden=(8,))).save(
        tmp_path / "policy.pt"
    )
    assert torch.load(path, weights_only=True)["format"] == LOADERS["load_controller"][0]


def test_an_episode_file_with_pickled_objects_is_refused(tmp_path):
    data = TrajectoryDataset.from_arrays(np.zeros((3, 2)), np.zeros((2, 1)), dt=0.05)
    data.save(tmp_path / "data")
    target = tmp_path / "pwned"
    episode = tmp_path / "data" / "episodes" / "episode_000000.npz"
    objects = np.empty(3, dtype=object)
    objects[:] = [Touch(target), 0.0, 0.0]
    np.savez(episode, states=objects, actions=np.zeros((2, 1)), times=np.arange(3) * 0.05)
    with np.load(episode, allow_pickle=True) as archive:  # live: an unguarded read runs it
        archive["states"]
    assert target.exists()
    target.unlink()
    with pytest.raises(ValueError, match=f"{episode} is not a readable episode file"):
        TrajectoryDataset.load(tmp_path / "data")
    assert not target.exists()


def _rewrite_zip(path, entry, new_bytes):
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries[entry] = new_bytes
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)


@pytest.fixture(scope="module")
def sac_zip(tmp_path_factory):
    agent = make_agent("sac", "pendulum", policy_kwargs={"net_arch": [8]})
    return save_agent(agent, tmp_path_factory.mktemp("sac") / "sac.zip")


@pytest.mark.parametrize("field", ["lr_schedule", "policy_class", "observation_space"])
def test_an_sb3_zip_whose_data_would_run_code_is_refused(sac_zip, field, tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.zip"
    shutil.copy(sac_zip, path)
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    data[field] = {":serialized:": base64.b64encode(pickle.dumps(Touch(target))).decode()}
    _rewrite_zip(path, "data", json.dumps(data).encode())
    try:  # live: SB3's own load cloudpickles the field and runs it
        SAC.load(path)
    except Exception:
        pass
    assert target.exists()
    target.unlink()
    refused = rf"field '{field}' .*could run code; nothing was run"
    with pytest.raises(ValueError, match=refused):
        load_agent("sac", path, "pendulum")
    # load_controller reads the algorithm from the policy class's module name first
    if field == "policy_class":
        refused = "policy from an unknown module"
    with pytest.raises(ValueError, match=refused):
        load_controller(path, "pendulum")
    assert not target.exists()
    # the untouched file still loads, through both doors
    assert isinstance(load_agent("sac", sac_zip, "pendulum"), SAC)
    assert isinstance(load_controller(sac_zip, "pendulum"), SAC)


def test_an_sb3_zip_whose_weights_would_run_code_is_refused(sac_zip, tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.zip"
    shutil.copy(sac_zip, path)
    buffer = io.BytesIO()
    torch.save({"actor.latent_pi.0.weight": Touch(target)}, buffer)
    _rewrite_zip(path, "policy.pth", buffer.getvalue())
    with pytest.raises(ValueError, match="nothing was run"):
        load_agent("sac", path, "pendulum")
    assert not target.exists()


def test_a_planner_file_loads_its_model_safely(tmp_path):
    model = _model().save(tmp_path / "model.pt")
    planner = save_planner(tmp_path / "planner.json", model, "pendulum", horizon=4, samples=8)
    target = tmp_path / "pwned"
    _plant_checkpoint(model, "hybridgym.HybridODE", target)
    for load in (lambda: load_planner(planner), lambda: load_controller(planner, "pendulum")):
        with pytest.raises(ValueError, match="nothing from it was executed"):
            load()
    assert not target.exists()


def test_a_model_of_another_task_or_state_size_names_the_mismatch(tmp_path):
    pendulum = _model().save(tmp_path / "pendulum.pt")
    with pytest.raises(ValueError, match=r"the model has 2 states and 1 actions, task 'cartpole"):
        LearnedEnv(pendulum, "cartpole_swingup")
    with pytest.raises(ValueError, match="the model has 2 states"):
        save_planner(tmp_path / "p.json", pendulum, "cartpole_swingup")
    ensemble = Ensemble([_model(), _model()]).save(tmp_path / "ensemble.pt")
    with pytest.raises(ValueError, match=r"not a hybridgym\.HybridODE checkpoint.*Ensemble"):
        HybridODE.load(ensemble)
    policy = DifferentiablePolicyAgent("pendulum", PolicyTrainingConfig(hidden=(8,)))
    policy.save(tmp_path / "policy.pt")
    with pytest.raises(ValueError, match="controller of task 'pendulum', not 'cartpole_swingup'"):
        load_controller(tmp_path / "policy.pt", "cartpole_swingup")


# --- determinism -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    for name in ("a", "b"):
        ModelBasedLoop("pendulum", tiny(), root / name, log=None).run()
    return root / "a", root / "b"


def _same(a, b, where):
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{k}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


def _rows_without_timing(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def test_same_seed_and_config_give_bitwise_equal_runs_on_cpu(twin_runs):
    a, b = twin_runs
    da, db = TrajectoryDataset.load(a / "data"), TrajectoryDataset.load(b / "data")
    assert len(da) == len(db) == 4
    for ea, eb in zip(da.episodes, db.episodes, strict=True):
        for name in ("states", "actions", "times", "rewards"):
            np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name), err_msg=name)
    files = sorted(
        p.relative_to(a) for folder in ("models", "agents") for p in (a / folder).iterdir()
    )
    assert [str(p) for p in files] == [
        "agents/agent_001.pt", "agents/agent_002.pt", "models/model_001.pt", "models/model_002.pt"
    ]  # fmt: skip
    for rel in files:  # every tensor of every checkpoint, bit for bit
        _same(
            torch.load(a / rel, weights_only=True), torch.load(b / rel, weights_only=True), str(rel)
        )
    for rel in ("models/model_002.pt",):
        sa, sb = HybridODE.load(a / rel).state_dict(), HybridODE.load(b / rel).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = _rows_without_timing(a)
    assert len(rows) == 2 and rows == _rows_without_timing(b)  # the CSV text, not rounded floats
    assert json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())


# --- concurrency -------------------------------------------------------------------------------
def test_a_live_lock_names_its_pid_and_a_stale_lock_is_taken_over(tmp_path):
    """A process holding the run directory's OS lock refuses a second loop by its pid (nothing
    written); a lock file left by a process that has exited, or naming a live process that
    holds no lock (a reused pid), blocks nothing."""
    run = tmp_path / "run"
    hold = (
        "import sys, time\nfrom hybridgym.models.files import DirectoryLock\n"
        "DirectoryLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FileExistsError, match=rf"{run} is in use by process {holder.pid}\b"):
            ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()  # as a crash: the lock file stays, the kernel frees the lock
        holder.wait()
        holder.stdout.close()
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run / ".lock").write_text(f"{sleeper.pid}\n")  # a live pid that holds nothing
        history = ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [row["real_steps"] for row in history] == [50]
    assert json.loads((run / "state.json").read_text())["finished"] is True
    assert not (run / ".lock").exists()


# --- settings are checked before the first real step --------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agent_kwargs": {"horizonn": 20}}, "did you mean 'horizon'"),
        ({"agent_kwargs": {"horizon": 0}}, "horizon must be a positive int, got 0"),
        ({"residual_mask": (5,)}, r"residual_mask must be state indices in \[0, 2\)"),
        ({"seed": 99999999999999999999}, r"seed must be below 2\*\*32"),
        ({"device": "meta"}, "computes on cpu, cuda or mps, not on meta"),
        ({"agent": "sac", "agent_kwargs": {"learning_ratte": 0.1}}, "Did you mean 'learning_rate'"),
    ],
)
def test_a_bad_setting_fails_before_anything_is_written_and_the_fixed_run_works(
    tmp_path, changes, message
):
    """Typos and impossible values in the model's, the agent's or the run's settings fail
    before the run directory is created (no config.json, no real episode, no model), so the
    command with the value fixed runs on the same directory."""
    run = tmp_path / "run"
    with pytest.raises((TypeError, ValueError), match=message):
        ModelBasedLoop("pendulum", tiny(iterations=1, **changes), run, log=None).run()
    assert not run.exists()
    history = ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    assert [row["real_steps"] for row in history] == [50]


def test_bad_loop_and_compare_settings_on_the_command_line_write_nothing(tmp_path):
    exe = [sys.executable, "-m", "hybridgym.scripts.main"]
    run, out = tmp_path / "run", tmp_path / "out"
    loop = ["loop", "pendulum", "--run-dir", str(run), "--set"]
    compare = ["compare", "--task", "pendulum", "--budget", "50", "--seeds", "1"]
    cases = [
        ([*loop, "agent_kwargs.horizonn=20"], run, "did you mean 'horizon'?"),
        ([*loop, 'device="meta"'], run, "not on meta; use cpu"),
        (
            [
                *compare,
                "--out",
                str(out),
                "--methods",
                "loop",
                "--loop-set",
                "agent_kwargs.sampels=1",
            ],
            out,
            "did you mean 'samples'?",
        ),
    ]
    for args, folder, message in cases:
        done = subprocess.run(exe + args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
        assert not folder.exists()


# --- one-line errors (issue 15, items 4 and 6) ----------------------------------------------------
COMPARE = ["compare", "--task", "pendulum", "--budget", "50", "--seeds", "1"]


def test_a_folder_under_a_file_or_an_empty_record_is_one_line_naming_it(tmp_path):
    exe = [sys.executable, "-m", "hybridgym.scripts.main"]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    commands = [
        ["collect", "--task", "pendulum", "--episodes", "1", "--out", str(blocker / "data")],
        ["loop", "pendulum", "--iterations", "1", "--run-dir", str(blocker / "run")],
        [*COMPARE, "--methods", "loop", "--out", str(blocker / "out")],
    ]
    for args in commands:
        done = subprocess.run(exe + args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(blocker) in lines[0], done.stderr
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    for name in ("state.json", "config.json"):
        kept = (run / name).read_text()
        (run / name).write_text("")
        done = subprocess.run(
            [*exe, "loop", "--run-dir", str(run)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{run / name} is empty" in lines[0], done.stderr
        (run / name).write_text(kept)
    done = subprocess.run(
        [*exe, "plot", str(run), "--out", str(blocker / "plots")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker) in lines[0], done.stderr


def test_a_read_only_filesystem_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """As root, permissions cannot make a folder read-only; the filesystem's refusal is
    stood in for at the one place every write goes through."""
    import hybridgym.models.files as files
    from hybridgym.scripts.main import main

    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(tmp_path) in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", read_only)
    code = main(["loop", "pendulum", "--iterations", "1", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "Read-only file system" in err[0] and str(tmp_path / "run") in err[0]


def test_the_corrected_compare_runs_after_a_refused_one(tmp_path):
    exe = [sys.executable, "-m", "hybridgym.scripts.main"]
    out = tmp_path / "out"
    base = [*exe, *COMPARE, "--methods", "loop", "--eval-episodes", "1", "--out", str(out)]
    refused = subprocess.run(
        [*base, "--loop-set", "agent_kwargs.sampels=50"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and not out.exists(), refused.stderr
    fixed = subprocess.run(
        [*base, "--loop-set", "agent_kwargs.samples=50", "--quiet"], capture_output=True, text=True
    )
    assert fixed.returncode == 0, fixed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["trials"]["loop"]["0"]["final_real_steps"] == 50


def test_sb3_settings_it_asserts_on_are_a_value_error_naming_them():
    with pytest.raises(ValueError, match=r"SAC refused its settings \{'learning_rate': 'fast'\}"):
        make_agent("sac", "pendulum", learning_rate="fast")


def test_a_csv_with_a_bom_reads_and_a_name_with_a_line_break_is_refused(tmp_path):
    (tmp_path / "plant.csv").write_bytes(
        "\ufeffepisode,t,x,u,reward\n0,0.0,1.0,0.5,1.0\n0,0.1,1.1,,\n".encode()
    )
    data = TrajectoryDataset.from_csv(
        tmp_path / "plant.csv", state_columns=["x"], action_columns=["u"]
    )
    assert data.state_names == ("x",) and data.num_steps == 1
    with pytest.raises(ValueError, match="printable on one line"):
        TrajectoryDataset(state_names=["x\ny"], action_names=["u"], dt=0.1)


def test_an_sb3_zip_with_a_truncated_policy_is_a_value_error_naming_it(tmp_path):
    agent = make_agent("sac", "pendulum", policy_kwargs={"net_arch": [8]})
    path = save_agent(agent, tmp_path / "agent.zip")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "policy.pth":
                data = data[: len(data) // 2]
            target.writestr(item, data)
    with pytest.raises(ValueError, match=rf"{re.escape(str(damaged))} is not a whole sac agent"):
        load_agent("sac", damaged, "pendulum")


def test_a_plot_that_cannot_be_written_names_its_file(tmp_path, monkeypatch):
    import matplotlib.figure

    from hybridgym.agents.plots import plot_loop_metrics

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    rows = [
        {
            "iteration": 1,
            "real_steps": 50,
            "eval_return_mean": -500.0,
            "eval_return_std": 1.0,
            "model_error": 0.1,
        }
    ]
    with pytest.raises(
        OSError, match=r"cannot write .*return_vs_real_steps\.png: No space"
    ) as info:
        plot_loop_metrics(rows, tmp_path / "plots", get_task("pendulum"))
    assert info.value.errno == errno.ENOSPC
    assert not list((tmp_path / "plots").glob(".*tmp*"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"init_std": float("nan")}, "init_std must be a finite number > 0, got nan"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
        ({"horizon": 10**7}, "model steps per decision is more than 1,000,000,000"),
        ({"iterations": 10**9}, "model steps per decision is more than 1,000,000,000"),
    ],
)
def test_a_planner_with_nan_or_absurd_settings_is_refused(tmp_path, settings, message):
    """A planner JSON with init_std NaN used to evaluate to "return: nan" with exit 0; sizes
    that would plan for hours per action ran until killed."""
    task = get_task("pendulum")
    model = HybridODE(task.make_prior(), None, dt=task.dt)
    with pytest.raises(ValueError, match=message):
        MPCAgent(model, task, **settings)
    with pytest.raises(ValueError, match="substeps must be at most 10,000"):
        HybridODE(task.make_prior(), None, dt=task.dt, substeps=10**8)


def test_a_model_file_of_another_task_is_named_on_resume_and_in_plot(tmp_path):
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    cart = get_task("cartpole_swingup")
    HybridODE(cart.make_prior(), None, dt=cart.dt).save(run / "models" / "model_001.pt")
    with pytest.raises(ValueError, match=r"model_001\.pt is a model of 4 states .* pendulum"):
        ModelBasedLoop("pendulum", tiny(iterations=2), run, log=None).run()
    done = subprocess.run(
        [sys.executable, "-m", "hybridgym.scripts.main", "plot", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to another run" in lines[0], done.stderr


def test_an_episode_file_deleted_behind_the_runs_back_is_named(tmp_path):
    """state.json records the episodes and steps the completed iterations used; a resume
    compares the store with it (a file replaced by one of the same length, or one added after
    them, cannot be told from the data of an interrupted iteration)."""
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1, episode_steps=10), run, log=None).run()
    episodes = sorted((run / "data" / "episodes").glob("episode_*.npz"))
    assert len(episodes) == 5
    last = episodes[-1].read_bytes()
    episodes[-1].unlink()  # deleted: fewer episodes than state.json records
    with pytest.raises(ValueError, match=r"holds 4 episodes .* records 5 episodes of 50 steps"):
        ModelBasedLoop("pendulum", tiny(iterations=2, episode_steps=10), run, log=None).run()
    episodes[-1].write_bytes(last)  # restored: the run goes on
    history = ModelBasedLoop("pendulum", tiny(iterations=2, episode_steps=10), run, log=None).run()
    assert [row["real_steps"] for row in history] == [50, 100]


def test_every_learned_env_refuses_a_nan_action_the_same_way():
    """One rule (issue 15): LearnedEnv, LearnedVecEnv and LearnedVectorEnv raise on a
    non-finite action, naming the environments; none silently ends the episode."""
    from hybridgym.envs import LearnedVecEnv, LearnedVectorEnv

    task = get_task("pendulum")
    model = HybridODE(task.make_prior(), None, dt=task.dt)
    single = LearnedEnv(model, task)
    single.reset(seed=0)
    with pytest.raises(ValueError, match="action must be finite"):
        single.step(np.array([np.nan], dtype=np.float32))
    actions = np.array([[0.5], [np.nan], [0.0]], dtype=np.float32)
    venv = LearnedVecEnv(model, task, 3)
    venv.reset()
    with pytest.raises(ValueError, match=r"actions must be finite; environments \[1\]"):
        venv.step(actions)
    vector = LearnedVectorEnv(model, task, 3)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be finite; environments \[1\]"):
        vector.step(actions)
    obs, *_ = vector.step(np.zeros((3, 1), dtype=np.float32))  # the env is still usable
    assert np.isfinite(obs).all()


# --- disk problems -----------------------------------------------------------------------------
def _fingerprint(run):
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
        and (
            p.parts[len(run.parts)] in ("data", "models", "agents")
            or p.name in ("state.json", "metrics.csv", "config.json")
        )
    }


def _make_read_only(run):
    for folder in [run, *(p for p in run.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)


def _make_writable(run):
    for folder in [run, *(p for p in run.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)


@pytest.mark.parametrize("problem", ["read_only", "disk_full"])
def test_a_failed_write_names_the_file_and_keeps_the_earlier_run(problem, tmp_path, monkeypatch):
    run = tmp_path / "run"
    ModelBasedLoop("pendulum", tiny(iterations=1), run, log=None).run()
    before = _fingerprint(run)
    assert "data/episodes/episode_000001.npz" in before and "state.json" in before
    if problem == "read_only" and os.geteuid() != 0:
        _make_read_only(run)
        error, code = PermissionError, errno.EACCES
    elif problem == "read_only":  # root writes through chmod 0o555: refuse every write instead
        real_open = os.open
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

        def read_only(path, flags, *args, **kwargs):
            if flags & writing and pathlib.Path(path).is_relative_to(run):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        error, code = PermissionError, errno.EACCES
    else:
        real_replace = os.replace

        def full_disk(src, dst, *args, **kwargs):
            if pathlib.Path(dst).is_relative_to(run):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", full_disk)
        error, code = OSError, errno.ENOSPC
    try:
        # read-only: the lock file is the first write and its error names it; full disk:
        # write(2) names no file, atomic_write_bytes adds it
        with pytest.raises(error, match=re.escape(f"{run}/")) as info:
            ModelBasedLoop("pendulum", tiny(iterations=2), run, log=None).run()
        assert info.value.errno == code
        if problem == "disk_full":
            assert re.search(rf"cannot write {re.escape(str(run))}/\S+", str(info.value))
    finally:
        monkeypatch.undo()
        if problem == "read_only" and os.geteuid() != 0:
            _make_writable(run)
    assert _fingerprint(run) == before, "the earlier iteration's files are untouched"
    assert not [p for p in run.rglob(".*.tmp")], "no temporary files left"
    assert not (run / ".lock").exists()
    assert json.loads((run / "state.json").read_text())["completed_iterations"] == 1
    assert TrajectoryDataset.load(run / "data").num_steps == 50
    HybridODE.load(run / "models" / "model_001.pt")
    # with the disk back, the run resumes and completes
    history = ModelBasedLoop("pendulum", tiny(iterations=2), run, log=None).run()
    assert [row["real_steps"] for row in history] == [50, 100]
