"""Devices: model fitting, the learned envs, the planner and the loop on ``cpu`` and ``cuda``.

Every test runs on the CPU; its ``cuda`` variant is marked ``gpu`` (``pytest -m gpu``) and skips
with a reason where torch sees no CUDA (``tests/conftest.py``). "No host round trip" is checked
on the CPU too: the batched step runs under patches that make every Python-level way of
reading a tensor on the host, or of making one from host data, raise; on CUDA it also runs
under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from hybridgym.agents import LoopConfig, ModelBasedLoop, MPCAgent
from hybridgym.envs import LearnedCore, LearnedVecEnv, LearnedVectorEnv, get_task
from hybridgym.envs.learned import StepResult, packed_numpy
from hybridgym.models import Ensemble, FitConfig, HybridODE, MLPResidual, TrajectoryDataset, fit
from hybridgym.scripts.main import main

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
]
NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)


def _model(task, device: str, seed: int = 0) -> HybridODE:
    torch.manual_seed(seed)
    residual = MLPResidual(
        task.state_dim, task.action_dim, hidden=(16, 16), angle_dims=task.angle_dims
    )
    for p in residual.net[-1].parameters():
        torch.nn.init.normal_(p, std=0.1)
    return HybridODE(task.make_prior(), residual, dt=task.dt).to(device)


def _on(device: str, tensor: torch.Tensor) -> bool:
    return tensor.device.type == torch.device(device).type


def _same_place(target: torch.device, tensor: torch.Tensor) -> bool:
    return target.type == tensor.device.type and target.index in (None, tensor.device.index)


@contextlib.contextmanager
def no_host_round_trip(device: str) -> Iterator[None]:
    """Fail on any Python-level read of a tensor on the host (``item``, ``cpu``, ``numpy``,
    ``tolist``, ``bool``/``float``/``int``/``__index__``, ``__array__``), any tensor made from
    host data (``torch.tensor``, ``as_tensor``, ``from_numpy``), any ``.to`` another device,
    any size-from-data operation (``nonzero``, a boolean-mask index); on CUDA also on any
    synchronisation torch performs."""

    def refuse(name):
        def raiser(*args, **kwargs):
            raise AssertionError(f"host round trip: {name} called in a batched step")

        return raiser

    originals: dict[tuple[object, str], object] = {}

    def patch(owner, name, replacement):
        originals[(owner, name)] = getattr(owner, name)
        setattr(owner, name, replacement)

    for name in ("item", "cpu", "numpy", "tolist", "nonzero", "__bool__", "__float__"):
        patch(torch.Tensor, name, refuse(f"Tensor.{name}"))
    for name in ("__int__", "__index__", "__array__"):
        patch(torch.Tensor, name, refuse(f"Tensor.{name}"))
    for name in ("tensor", "as_tensor", "from_numpy", "nonzero"):
        patch(torch, name, refuse(f"torch.{name}"))
    to, getitem, setitem = torch.Tensor.to, torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def checked_to(self, *args, **kwargs):
        target = torch._C._nn._parse_to(*args, **kwargs)[0]
        if target is not None and not _same_place(target, self):
            raise AssertionError(f"host round trip: .to({target}) of a {self.device} tensor")
        return to(self, *args, **kwargs)

    def is_mask(index) -> bool:
        parts = index if isinstance(index, tuple) else (index,)
        return any(
            isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts
        )

    def checked_getitem(self, index):
        if is_mask(index):
            raise AssertionError("host round trip: boolean-mask indexing (its size is data)")
        return getitem(self, index)

    def checked_setitem(self, index, value):
        if is_mask(index):
            raise AssertionError("host round trip: boolean-mask assignment (its size is data)")
        return setitem(self, index, value)

    patch(torch.Tensor, "to", checked_to)
    patch(torch.Tensor, "__getitem__", checked_getitem)
    patch(torch.Tensor, "__setitem__", checked_setitem)
    cuda = torch.device(device).type == "cuda"
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        yield
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
        for (owner, name), value in originals.items():
            setattr(owner, name, value)


def test_the_guard_catches_reads_and_restores_torch():
    x = torch.ones(3)
    with no_host_round_trip("cpu"):
        for read in (
            lambda: x.sum().item(),
            lambda: bool(x.any()),
            lambda: float(x[0]),
            lambda: np.asarray(x),
            lambda: x[x > 0],
            lambda: torch.as_tensor(np.zeros(2)),
            lambda: x.to("meta"),
        ):
            with pytest.raises(AssertionError, match="host round trip"):
                read()
        x.to(torch.float64)  # the same device: allowed
    assert x.sum().item() == 3.0 and bool(x.any()) and x[x > 0].shape == (3,)


@pytest.mark.parametrize("device", DEVICES)
def test_fit_keeps_data_and_parameters_on_the_device(device):
    task = get_task("pendulum")
    data = TrajectoryDataset.collect(task.make_real_env(), task, steps=60, seed=0)
    model = _model(task, device)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = FitConfig(
        horizon=4, iterations=6, batch_size=16, lbfgs_iterations=2, eval_every=3, progress=False
    )
    report = fit(model, data, config)
    assert all(_on(device, p) for p in model.parameters())
    assert all(_on(device, b) for b in model.buffers())
    assert np.isfinite(report.final_loss) and report.iterations == 6
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    errors = report.validation_errors.values()
    assert all(np.isfinite(v) for by_state in errors for v in by_state.values())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["pendulum", "cartpole_swingup", "lotka_volterra"])
def test_learned_core_step_keeps_states_and_rewards_on_the_device(device, name):
    task = get_task(name)
    n = 32
    core = LearnedCore(_model(task, device), task, n, device=device, max_episode_steps=7)
    core.reset_envs(np.arange(n))
    actions = torch.zeros(n, task.action_dim, device=device)
    for _ in range(7):
        result = core.step(actions)
    for tensor in (core.states, core.elapsed, core.done, *vars(result).values()):
        assert _on(device, tensor)
    assert result.reward.shape == (n,) and result.obs.shape == (n, task.obs_dim)
    assert core.needs_reset.all() and result.truncated.all()  # the read happens here, on ask
    starts = core.reset_envs(np.arange(n))
    assert starts.shape == (n, task.state_dim) and not core.needs_reset.any()
    torch.testing.assert_close(core.states.cpu(), torch.as_tensor(starts, dtype=torch.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case", ["hybrid", "ensemble_random", "ensemble_mean", "held", "cartpole", "lotka_volterra"]
)
def test_batched_step_makes_no_host_round_trip(device, case):
    """The torch-native step with actions on the device reads nothing back and copies
    nothing over, whatever the model (a HybridODE or an Ensemble with penalty and cut-off),
    the task (with or without termination) and a NEXT_STEP hold mask on the device."""
    names = {"cartpole": "cartpole_swingup", "lotka_volterra": "lotka_volterra"}
    task = get_task(names.get(case, "pendulum"))
    n = 16
    kwargs = {}
    model = _model(task, device)
    if case.startswith("ensemble"):
        model = Ensemble([_model(task, device, seed=k) for k in range(3)])
        kwargs = {
            "ensemble_mode": case.removeprefix("ensemble_"),
            "uncertainty_penalty": 0.5,
            "uncertainty_cutoff": 10.0,
        }
    core = LearnedCore(model, task, n, device=device, max_episode_steps=3, **kwargs)
    core.reset_envs(np.arange(n))
    actions = torch.linspace(-1, 1, n * task.action_dim, device=device).reshape(n, -1)
    hold = None
    if case == "held":
        hold = torch.zeros(n, dtype=torch.bool, device=device)
        hold[::3] = True
    core.step(actions, hold=hold)  # warm-up: per-device caches of constants are made once
    with no_host_round_trip(device):
        for _ in range(4):  # across the truncation at step 3
            result = core.step(actions, hold=hold)
            core.observe()
    assert result.truncated.any().item() and core.needs_reset.any()
    if case == "held":
        assert not result.truncated[::3].any().item()
        assert (result.reward[::3] == 0).all().item()


@pytest.mark.parametrize("device", DEVICES)
def test_vec_env_reads_the_device_once_per_step_even_across_resets(device, monkeypatch):
    task = get_task("pendulum")
    n = 8
    vec = LearnedVecEnv(_model(task, device), task, n, device=device, max_episode_steps=4)
    vec.seed(0)
    obs = vec.reset()
    assert obs.shape == (n, task.obs_dim)
    reads = []
    cpu, numpy = torch.Tensor.cpu, torch.Tensor.numpy

    def counted(original):
        def read(self, *args, **kwargs):
            if self.device.type != "cpu":
                reads.append(self.device)
            return original(self, *args, **kwargs)

        return read

    monkeypatch.setattr(torch.Tensor, "cpu", counted(cpu))
    monkeypatch.setattr(torch.Tensor, "numpy", counted(numpy))
    actions = np.ones((n, 1), dtype=np.float32)
    for step in range(1, 9):
        reads.clear()
        obs, rewards, dones, infos = vec.step(actions)
        expected = 0 if device == "cpu" else 1
        assert len(reads) == expected, (step, reads)
        assert dones.all() == (step % 4 == 0)
        assert obs.dtype == np.float32 and rewards.dtype == np.float32
    assert "terminal_observation" in infos[0]


@pytest.mark.parametrize("device", DEVICES)
def test_gymnasium_vector_env_holds_on_the_device(device):
    task = get_task("pendulum")
    vec = LearnedVectorEnv(_model(task, device), task, 4, device=device, max_episode_steps=2)
    vec.reset(seed=0)
    actions = np.zeros((4, 1), dtype=np.float32)
    for _ in range(2):
        obs, reward, terminated, truncated, _ = vec.step(actions)
    assert truncated.all() and vec._hold is not None and _on(device, vec._hold)
    obs, reward, terminated, truncated, _ = vec.step(actions)  # the NEXT_STEP reset
    assert (reward == 0).all() and not (terminated | truncated).any()
    assert obs.shape == (4, 3) and isinstance(obs, np.ndarray)


def test_packed_copy_equals_the_fields():
    """The one-copy path an accelerator takes (checked here on CPU tensors): the same values
    and dtypes as reading each field, flags exact."""
    g = torch.Generator().manual_seed(0)
    n = 6
    result = StepResult(
        obs=torch.randn(n, 3, generator=g),
        reward=torch.randn(n, generator=g),
        terminated=torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool),
        truncated=torch.tensor([0, 1, 0, 0, 0, 1], dtype=torch.bool),
        diverged=torch.tensor([0, 1, 0, 0, 0, 0], dtype=torch.bool),
        uncertain=torch.zeros(n, dtype=torch.bool),
        disagreement=torch.rand(n, generator=g),
    )
    direct, packed = result.numpy(), packed_numpy(result)
    for field in vars(direct):
        a, b = getattr(direct, field), getattr(packed, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert packed.obs.flags.c_contiguous


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_mpc_plans_on_the_device_and_returns_one_action(device, method):
    task = get_task("pendulum")
    model = Ensemble([_model(task, device, seed=k) for k in range(2)])
    agent = MPCAgent(model, task, horizon=6, samples=24, iterations=2, method=method, device=device)
    x0 = task.sample_initial_states(5, torch.Generator().manual_seed(0)).to(device)
    agent.plan(x0)  # warm-up (caches)
    with no_host_round_trip(device):
        plan = agent.plan(x0)
    assert _on(device, plan) and plan.shape == (5, 6, 1)
    assert all(_on(device, p) for p in agent.model.parameters())
    obs = task.state_to_obs(x0.cpu()).numpy()
    action, _ = agent.predict(obs[0])
    assert isinstance(action, np.ndarray) and action.shape == (1,) and abs(action[0]) <= 2.0
    assert agent.last_plan_seconds > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("agent", ["mpc", "differentiable", "sac"])
def test_one_loop_iteration_runs_on_the_device(device, agent, tmp_path):
    kwargs = {
        "mpc": {"horizon": 5, "samples": 16, "iterations": 1},
        "differentiable": {"batch_size": 16, "horizon": 4},
        "sac": {"learning_starts": 16, "batch_size": 16, "buffer_size": 1_000},
    }[agent]
    config = LoopConfig.for_task(
        "pendulum",
        agent=agent,
        agent_kwargs=kwargs,
        iterations=1,
        initial_steps=30,
        episode_steps=30,
        first_agent_updates=24,
        learned_envs=4,
        eval_episodes=1,
        fit={"iterations": 5, "lbfgs_iterations": 0},
        device=device,
    )
    loop = ModelBasedLoop("pendulum", config, tmp_path / "run", log=None)
    history = loop.run()
    assert len(history) == 1 and np.isfinite(history[0]["eval_return_mean"])
    assert loop.device.type == torch.device(device).type
    assert all(_on(device, p) for p in loop.model.parameters())  # nothing moved it away
    if agent == "differentiable":
        assert all(_on(device, p) for p in loop.agent.policy.parameters())
    else:  # the planner, or SB3's device
        assert loop.agent.device.type == torch.device(device).type
    # real data and checkpoints come back to the host
    data = TrajectoryDataset.load(tmp_path / "run" / "data")
    assert isinstance(data.episodes[0].states, np.ndarray) and data.num_steps == 30
    saved = torch.load(tmp_path / "run" / "models" / "model_001.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in saved["state_dict"].values())


def test_loop_hands_its_device_to_the_learned_envs_and_the_planner(tmp_path, monkeypatch):
    """Both take the loop's model: built on another device they would move it there."""
    import hybridgym.agents.loop as loop_module

    seen = {}

    def spy(name, cls):
        def build(*args, **kwargs):
            seen[name] = kwargs.get("device")
            return cls(*args, **kwargs)

        monkeypatch.setattr(loop_module, name, build)

    spy("LearnedVecEnv", loop_module.LearnedVecEnv)
    spy("MPCAgent", loop_module.MPCAgent)
    loop = ModelBasedLoop("pendulum", LoopConfig.for_task("pendulum"), tmp_path, log=None)
    task = get_task("pendulum")
    loop.data = TrajectoryDataset.collect(task.make_real_env(), task, steps=5, seed=0)
    model = loop._new_model()
    loop._learned_env(model)
    loop._new_agent(model)
    assert seen == {"LearnedVecEnv": loop.device, "MPCAgent": loop.device}


@NO_CUDA
def test_a_loop_on_cuda_without_cuda_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no CUDA device here \(torch.cuda.is_available"):
        ModelBasedLoop("pendulum", LoopConfig(device="cuda"), tmp_path)
    with pytest.raises(ValueError, match="not a torch device"):
        ModelBasedLoop("pendulum", LoopConfig(device="gpu0"), tmp_path)
    assert not any(tmp_path.iterdir())


@NO_CUDA
@pytest.mark.parametrize(
    "command",
    [
        "loop pendulum --run r --iterations 1 --device cuda",
        "fit --task pendulum --data d --out m.pt --device cuda",
        "train --task pendulum --model m.pt --algo sac --steps 5 --out a --device cuda",
        "evaluate --task pendulum --agent random --device cuda",
        "collect --task pendulum --episodes 1 --out x --device cuda",
    ],
)
def test_cli_device_cuda_without_cuda_is_one_line_and_exit_2(
    command, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code = main(command.split())
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (
        f"hybridgym {command.split()[0]}: error: --device cuda: torch sees no CUDA device "
        "here (torch.cuda.is_available() is False); use --device cpu"
    )
    assert not any(tmp_path.iterdir()), "a refused command writes nothing"


def test_policy_normaliser_leaves_out_non_finite_rows_without_reading_the_device():
    from hybridgym.agents.differentiable import _Normaliser

    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(7, 3, generator=g), torch.randn(5, 3, generator=g) + 2.0
    second[1, 2], second[3, 0] = float("nan"), float("inf")
    norm = _Normaliser(3)
    with no_host_round_trip("cpu"):
        norm.update(first)
        norm.update(second)
        norm.update(torch.full((2, 3), float("nan")))  # nothing finite: nothing changes
    kept = torch.cat([first, second[[0, 2, 4]]])
    torch.testing.assert_close(norm.mean, kept.mean(0))
    torch.testing.assert_close(norm.var, kept.var(0, unbiased=False))
    assert norm.count.item() == 10
