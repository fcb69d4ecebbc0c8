"""DataCenter-v0 zone topologies: the row (default, unchanged bit for bit) and a grid of rows,
both through the sparse neighbour table; numpy and torch agree with a dense-Laplacian
reference; the hybrid model's size does not grow with the zone count; 256 zones run."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgym.envs import DataCenterPrior, LearnedCore, get_task
from hybridgym.envs.systems import datacenter as dc
from hybridgym.models import FitConfig, HybridODE, TrajectoryDataset, fit
from hybridgym.models.arrays import array_namespace
from hybridgym.models.topology import Topology

SETTINGS = settings(max_examples=40, deadline=None)


def _shifted_copies_row(
    x,
    u,
    capacitance=dc.CAPACITANCE,
    cooling_gain=dc.COOLING_GAIN,
    k_nb=dc.NEIGHBOUR_COUPLING,
    k_out=dc.OUTSIDE_COUPLING,
    textbook=False,
):
    """DataCenter-v0's field as first written, a row through shifted copies (numpy or torch;
    ``textbook``: the prior's linear cooling and no recirculation)."""
    xp = array_namespace(x)
    n = u.shape[-1]
    temps, loads = x[..., :n], x[..., n : 2 * n]
    sin_tod, cos_tod = x[..., 2 * n : 2 * n + 1], x[..., 2 * n + 1 :]
    left = xp.concatenate([temps[..., :1], temps[..., :-1]], -1)
    right = xp.concatenate([temps[..., 1:], temps[..., -1:]], -1)
    saturation, recirculation = (0.0, 0.0) if textbook else (dc.SATURATION, dc.RECIRCULATION)
    if textbook:
        eff = u
    else:
        eff = (1.0 - xp.exp(-saturation * u)) / (1.0 - np.exp(-saturation))
    heat = loads + recirculation * loads**2 / dc.NOMINAL_LOAD
    d_temps = (
        heat
        - cooling_gain * eff * (temps - dc.SUPPLY_TEMP)
        + k_nb * (left + right - 2.0 * temps)
        + k_out * (dc.OUTSIDE_MEAN - dc.OUTSIDE_AMPLITUDE * cos_tod - temps)
    ) / capacitance
    d_loads = loads * (dc.OMEGA * dc.LOAD_AMPLITUDE * sin_tod / dc.load_profile(cos_tod))
    return xp.concatenate([d_temps, d_loads, dc.OMEGA * cos_tod, -dc.OMEGA * sin_tod], -1)


def _dense_reference(task, x, u):
    """The true field with the coupling as a dense n x n Laplacian product (numpy float64)."""
    n = task.num_zones
    coupling = dc.NEIGHBOUR_COUPLING * (x[..., :n] @ task.topology.laplacian())
    no_coupling = dc.datacenter_vector_field(x, u, neighbour_coupling=0.0, topology=task.topology)
    return no_coupling + np.concatenate([coupling / dc.CAPACITANCE, 0 * x[..., n:]], -1)


def _states(task, batch, seed):
    rng = np.random.default_rng(seed)
    x = task.sample_initial_states(batch, rng)
    x[:, : task.num_zones] += rng.normal(0.0, 4.0, (batch, task.num_zones))
    x[:, -2:] = np.stack([np.sin(a := rng.uniform(0, 2 * np.pi, batch)), np.cos(a)], -1)
    return x, rng.uniform(0.0, 1.0, (batch, task.num_zones))


@st.composite
def tasks(draw: st.DrawFn):
    if draw(st.booleans()):
        return get_task("datacenter", num_zones=draw(st.integers(1, 40)))
    rows, columns = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return get_task("datacenter", num_zones=rows * columns, topology="grid", rows=rows)


@SETTINGS
@given(tasks(), st.integers(0, 2**32 - 1))
def test_vector_field_equals_the_dense_laplacian_reference(task, seed):
    x, u = _states(task, 16, seed)
    reference = _dense_reference(task, x, u)
    np.testing.assert_allclose(task.true_vector_field(x, u), reference, rtol=1e-12, atol=1e-10)
    # torch agrees with numpy (float64), and the prior with the truth minus missing physics
    xt, ut = torch.as_tensor(x), torch.as_tensor(u)
    np.testing.assert_allclose(
        task.true_vector_field(xt, ut).numpy(), reference, rtol=1e-12, atol=1e-10
    )
    prior = task.make_prior(perturbation=0.0).double()
    with torch.no_grad():
        total = prior(xt, ut) + task.missing_physics(xt, ut)
    np.testing.assert_allclose(total.numpy(), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_zones", [1, 2, 3, 4, 17, 64])
def test_the_default_row_is_unchanged_bit_for_bit(num_zones):
    task = get_task("datacenter", num_zones=num_zones)
    assert task.topology == Topology.row(num_zones) and task.topology.kind == "row"
    x, u = _states(task, 64, num_zones)
    assert np.array_equal(dc.datacenter_vector_field(x, u), _shifted_copies_row(x, u))
    assert np.array_equal(task.true_vector_field(x, u), _shifted_copies_row(x, u))
    # the prior's float32 torch path too (its constants start 30 % low)
    prior = task.make_prior()
    x32, u32 = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(u, dtype=torch.float32)
    with torch.no_grad():
        c = prior.constants()
        expected = _shifted_copies_row(
            x32,
            u32,
            c["capacitance"],
            c["cooling_gain"],
            c["neighbour_coupling"],
            c["outside_coupling"],
            textbook=True,
        )
        assert torch.equal(prior(x32, u32), expected)
    assert float(c["neighbour_coupling"]) == pytest.approx(0.35)
    # files written before topologies existed name the same task and prior
    assert task.real_env_kwargs == {"num_zones": num_zones, "load_noise": 0.05}
    assert task.make_prior().rebuild_spec["task_kwargs"] == task.real_env_kwargs
    assert get_task("datacenter", num_zones=num_zones, topology="row") == task


def test_grid_couples_the_rows_in_front_and_behind():
    grid = get_task("datacenter", num_zones=12, topology="grid", rows=3, load_noise=0.0)
    row = get_task("datacenter", num_zones=12, load_noise=0.0)
    x = grid.sample_initial_states(1, np.random.default_rng(0))
    x[:, :12] = 22.0
    x[:, 1] = 30.0  # zone (row 0, column 1) runs hot
    u = np.zeros((1, 12))
    heated = grid.true_vector_field(x, u) - grid.true_vector_field(np.where(x == 30.0, 22.0, x), u)
    # in the grid, zone 1 warms 0 and 2 (its row) and 5 (behind it, row 1), nothing else
    assert set(np.flatnonzero(heated[0, :12] > 0)) == {0, 2, 5}
    heated_row = row.true_vector_field(x, u) - row.true_vector_field(
        np.where(x == 30.0, 22.0, x), u
    )
    assert set(np.flatnonzero(heated_row[0, :12] > 0)) == {0, 2}
    assert grid.real_env_kwargs == {
        "num_zones": 12,
        "load_noise": 0.0,
        "topology": "grid",
        "rows": 3,
    }
    assert grid != row and grid == get_task("datacenter", **grid.real_env_kwargs)
    assert grid.topology == Topology.grid(3, 4)


def test_grid_env_passes_the_checker_and_matches_its_oracle():
    env = gym.make("hybridgym/DataCenter-v0", num_zones=6, topology="grid", rows=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
    task = env.unwrapped.task
    assert task.make_real_env().unwrapped.task == task
    quiet = get_task("datacenter", num_zones=6, topology="grid", rows=2, load_noise=0.0)
    real = quiet.make_real_env()
    obs, _ = real.reset(seed=3)
    oracle = quiet.make_oracle().double()
    x = torch.as_tensor(obs, dtype=torch.float64)[None]
    for _ in range(20):
        action = np.full(6, 0.4, dtype=np.float32)
        obs, *_ = real.step(action)
        x = oracle.step(x, torch.as_tensor(action, dtype=torch.float64)[None])
    np.testing.assert_allclose(x[0].numpy(), obs, rtol=1e-5, atol=1e-4)


def test_grid_models_save_and_load_with_their_topology(tmp_path):
    task = get_task("datacenter", num_zones=8, topology="grid", rows=2)
    model = HybridODE(task.make_prior(), task.make_residual(hidden=(8,)), dt=task.dt)
    loaded = HybridODE.load(model.save(tmp_path / "grid.pt"))
    assert loaded.prior.topology == Topology.grid(2, 4)
    x, u = _states(task, 4, 0)
    xt, ut = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(u, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.step(xt, ut), model.step(xt, ut))
    row = get_task("datacenter", num_zones=8)
    old_style = HybridODE(row.make_prior(), row.make_residual(hidden=(8,)), dt=row.dt)
    assert set(old_style.state_dict()) == set(model.state_dict())  # no topology weights


@pytest.mark.parametrize("topology", ["row", "grid"])
def test_hybrid_model_size_does_not_grow_with_zones(topology):
    counts = set()
    for zones in (4, 16, 64, 256):
        kwargs = {"topology": "grid", "rows": 4} if topology == "grid" else {}
        task = get_task("datacenter", num_zones=zones, **kwargs)
        model = HybridODE(task.make_prior(), task.make_residual(), dt=task.dt)
        counts.add(sum(p.numel() for p in model.parameters()))
        assert len(model.prior.physical_parameters()) == 4
    assert len(counts) == 1, counts


def test_256_zones_step_fit_and_roll_out_finite():
    task = get_task("datacenter", num_zones=256, topology="grid", rows=8)
    env = task.make_real_env()
    data = TrajectoryDataset.collect(env, task, steps=12, seed=0)
    assert np.all(np.isfinite(data.episodes[0].states))
    assert data.episodes[0].states[:, :256].max() < 60.0
    torch.manual_seed(0)
    model = HybridODE(task.make_prior(), task.make_residual(hidden=(16,)), dt=task.dt)
    config = FitConfig(horizon=3, iterations=3, batch_size=4, progress=False)
    report = fit(model, data, config)
    assert report.iterations == 3 and np.isfinite(report.final_loss)
    core = LearnedCore(model, task, num_envs=8)
    core.reset_envs(np.arange(8))
    for _ in range(30):
        result = core.step(torch.full((8, 256), 0.5))
        assert torch.isfinite(result.obs).all() and not result.diverged.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"topology": "gird"}, ValueError, r"unknown topology 'gird'.*Did you mean 'grid'\?"),
        ({"topology": 3}, TypeError, r"topology must be one of \('row', 'grid'\).*int 3"),
        ({"topology": "grid"}, ValueError, r"needs rows=.*divisor of num_zones=12 \(1, 2, 3, 4"),
        ({"topology": "grid", "rows": 5}, ValueError, r"rows=5 must divide num_zones=12"),
        ({"topology": "grid", "rows": 0}, ValueError, "rows=0 must divide"),
        ({"topology": "grid", "rows": True}, TypeError, "rows must be an int"),
        ({"topology": "grid", "rows": 2.0}, TypeError, "rows must be an int"),
        ({"rows": 3}, ValueError, r"rows=3 is for topology='grid'"),
    ],
)
def test_bad_topology_arguments_say_what_to_do(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        get_task("datacenter", num_zones=12, **kwargs)
    with pytest.raises(error, match=pattern):
        gym.make("hybridgym/DataCenter-v0", num_zones=12, **kwargs)


def test_the_prior_checks_its_topology():
    assert DataCenterPrior(6, topology=Topology.grid(2, 3)).topology.kind == "grid"
    with pytest.raises(ValueError, match="topology has 6 units but num_zones is 4"):
        DataCenterPrior(4, topology=Topology.grid(2, 3))
    with pytest.raises(TypeError, match=r"topology must be a .*Topology.*got str"):
        DataCenterPrior(4, topology="row")
    with pytest.raises(ValueError, match="num_zones must be an int >= 1"):
        DataCenterPrior(0)
