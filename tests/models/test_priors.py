"""PhysicsPrior: named constants with reparametrised constraints, and each task's prior."""

import math

import numpy as np
import pytest
import torch

from hybridgym.envs import get_task
from hybridgym.models import PhysicsPrior


class Decay(PhysicsPrior):
    def __init__(self):
        super().__init__(state_dim=1, action_dim=1)
        self.add_constant("rate", 2.0, positive=True)
        self.add_constant("gain", 0.5, bounds=(0.0, 1.0))
        self.add_constant("offset", -1.0)
        self.add_constant("fixed", 3.0, learnable=False)

    def forward(self, x, u):
        c = self.constants()
        return -c["rate"] * x + c["gain"] * u + c["offset"] + 0 * c["fixed"]


def test_constants_read_back_and_learnable_split():
    prior = Decay()
    params = prior.physical_parameters()
    assert params == pytest.approx({"rate": 2.0, "gain": 0.5, "offset": -1.0, "fixed": 3.0})
    assert sorted(name for name, _ in prior.named_parameters()) == [
        "raw.gain",
        "raw.offset",
        "raw.rate",
    ]
    assert "fixed_fixed" in prior.state_dict()


def test_constraints_hold_under_any_gradient_step():
    prior = Decay()
    opt = torch.optim.SGD(prior.parameters(), lr=1.0)
    x = torch.ones(8, 1)
    for _ in range(50):  # push the constants hard towards violating their constraints
        opt.zero_grad()
        loss = (prior.constant("rate") + 10.0) ** 2 + (prior.constant("gain") - 5.0) ** 2
        loss = loss + prior(x, x).sum() * 0
        loss.backward()
        opt.step()
        values = prior.physical_parameters()
        assert values["rate"] > 0
        assert 0.0 < values["gain"] < 1.0 or math.isclose(values["gain"], 1.0)
    assert values["gain"] > 0.99 and values["rate"] < 0.1


def test_gradients_reach_the_constants():
    prior = Decay()
    x = torch.full((4, 1), 2.0)
    prior(x, torch.ones(4, 1)).sum().backward()
    # d/d raw_rate of -rate*x summed = -rate * sum(x) (log parametrisation: d rate = rate d raw)
    assert prior.raw["rate"].grad.item() == pytest.approx(-2.0 * 8.0)
    assert prior.raw["offset"].grad.item() == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"value": -1.0, "positive": True}, "must be > 0"),
        ({"value": 2.0, "bounds": (0.0, 1.0)}, "outside its bounds"),
        ({"value": 0.5, "bounds": (1.0, 0.0)}, "low < high"),
        ({"value": float("nan")}, "must be finite"),
        ({"value": 0.5, "positive": True, "bounds": (-1.0, 1.0)}, "lower bound >= 0"),
    ],
)
def test_bad_constants_are_refused(kwargs, pattern):
    prior = PhysicsPrior(1, 1)
    value = kwargs.pop("value")
    with pytest.raises(ValueError, match=pattern):
        prior.add_constant("c", value, **kwargs)


def test_unknown_and_duplicate_constants():
    prior = Decay()
    with pytest.raises(KeyError, match=r"unknown constant 'rat'.*'rate'"):
        prior.constant("rat")
    with pytest.raises(ValueError, match="already declared"):
        prior.add_constant("rate", 1.0)
    with pytest.raises(ValueError, match="identifier"):
        prior.add_constant("not valid", 1.0)
    with pytest.raises(NotImplementedError, match="must implement forward"):
        PhysicsPrior(1, 1)(torch.zeros(1, 1), torch.zeros(1, 1))


ODE_TASKS = [
    ("lotka_volterra", {}),
    ("datacenter", {"num_zones": 5}),
    ("cartpole_swingup", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), ODE_TASKS)
def test_prior_at_truth_plus_missing_physics_is_the_truth(name, kwargs):
    task = get_task(name, **kwargs)
    prior = task.make_prior(perturbation=0.0).double()
    x = torch.as_tensor(task.sample_initial_states(64, np.random.default_rng(0)))
    x = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    space = task.action_space
    u = torch.as_tensor(
        np.random.default_rng(1).uniform(space.low, space.high, (64, space.shape[0]))
    )
    with torch.no_grad():
        total = prior(x, u) + task.missing_physics(x, u)
    # constants are stored in float32, hence 1e-6
    torch.testing.assert_close(total, task.true_vector_field(x, u), rtol=1e-6, atol=1e-6)
    # the missing physics is not negligible
    assert task.missing_physics(x, u).abs().max() > 0.1


@pytest.mark.parametrize(
    ("name", "kwargs", "default"),
    [("pendulum", {}, 0.5), *[(n, k, 0.3) for n, k in ODE_TASKS]],
)
def test_prior_constants_start_off_by_the_documented_amount(name, kwargs, default):
    task = get_task(name, **kwargs)
    truth = task.make_prior(perturbation=0.0).physical_parameters()
    start = task.make_prior().physical_parameters()
    learnable = {n for n, s in task.make_prior().constant_specs.items() if s.learnable}
    assert learnable, "every prior has learnable constants"
    for key in truth:
        expected = truth[key] * (1 - default) if key in learnable else truth[key]
        assert start[key] == pytest.approx(expected, rel=1e-6), key


def test_pendulum_prior_is_the_textbook_ode():
    prior = get_task("pendulum").make_prior(perturbation=0.0)
    assert prior.physical_parameters() == pytest.approx({"a": 15.0, "b": 3.0})
    x = torch.tensor([[0.3, -1.0]])
    u = torch.tensor([[0.5]])
    expected = torch.tensor([[-1.0, 15.0 * math.sin(0.3) + 1.5]])
    torch.testing.assert_close(prior(x, u), expected)


def test_state_limits_clamp_each_step_and_keep_gradients_inside():
    from hybridgym.models import HybridODE

    class Drift(PhysicsPrior):
        def __init__(self):
            super().__init__(state_dim=2, action_dim=1)
            self.add_constant("k", 1.0)
            self.limit_state(1, -2.0, 3.0)

        def forward(self, x, u):
            return torch.stack([x[:, 1], self.constant("k") * u[:, 0]], -1)

    model = HybridODE(Drift(), None, dt=1.0, method="euler")
    x = torch.zeros(3, 2)
    u = torch.tensor([[10.0], [-10.0], [1.0]])
    with torch.inference_mode():  # the cached bounds must not be inference tensors
        assert model.step(x, u)[:, 1].tolist() == [3.0, -2.0, 1.0]  # clamped in place
    assert x.abs().sum() == 0  # the input is never touched
    out = model.step(x, u)
    assert out[:, 1].tolist() == [3.0, -2.0, 1.0]
    out[:, 1].sum().backward()
    k = model.prior.raw["k"]
    assert k.grad.item() == pytest.approx(1.0)  # only the unclamped state carries gradient
    assert model.prior.state_limits == {1: (-2.0, 3.0)}
    assert "x1 in [-2, 3]" in repr(model.prior)


@pytest.mark.parametrize(
    "args, pattern",
    [((2, -1.0, 1.0), "state index"), ((0, 1.0, 1.0), "low < high"), ((0, math.nan, 1.0), "low")],
)
def test_bad_state_limits_are_refused(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        Decay().limit_state(*args)
    with pytest.raises(ValueError, match="state index"):
        Decay().limit_state(True, 0.0, 1.0)


def test_pendulum_prior_knows_the_speed_limit_and_keeps_it_through_a_checkpoint(tmp_path):
    from hybridgym.models import HybridODE

    task = get_task("pendulum")
    model = HybridODE(task.make_prior(perturbation=0.0), None, dt=task.dt)
    x = torch.tensor([[math.pi, 7.9]])
    assert model.step(x, torch.tensor([[2.0]]))[0, 1].item() == 8.0
    loaded = HybridODE.load(model.save(tmp_path / "m.pt"))
    assert loaded.prior.state_limits == {1: (-8.0, 8.0)}


def test_cached_constants_follow_parameter_updates():
    prior = Decay()
    with torch.no_grad():
        first = prior.constants()["rate"].item()
        assert prior.constants() is prior.constants()  # cached while nothing changes
    optimizer = torch.optim.SGD(prior.parameters(), lr=0.5)
    prior(torch.ones(3, 1), torch.ones(3, 1)).sum().backward()
    optimizer.step()  # in place: the parameter's version changes
    with torch.no_grad():
        assert prior.constants()["rate"].item() != first
        assert prior.constants()["rate"].item() == pytest.approx(prior.constant("rate").item())
    prior.double()  # new tensors: the cache is rebuilt in the new dtype
    with torch.no_grad():
        assert prior.constants()["rate"].dtype == torch.float64
