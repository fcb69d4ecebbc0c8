"""HybridODE: structure, integrators, gradients (direct vs adjoint), checkpoints."""

import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from torch.func import functional_call

from hybridgym.envs import get_task
from hybridgym.models import Ensemble, HybridODE, MLPResidual, PhysicsPrior

A = torch.tensor([[-0.3, 1.5], [-1.5, -0.3]], dtype=torch.float64)
B = torch.tensor([[0.0], [1.0]], dtype=torch.float64)


class Linear(PhysicsPrior):
    """dx/dt = A x + B u with a learnable damping scale (exact solutions are known)."""

    def __init__(self):
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("scale", 1.0, positive=True)

    def forward(self, x, u):
        return self.constant("scale") * (x @ A.to(x.dtype).T) + u @ B.to(x.dtype).T


def exact_step(x0, u, t):
    a, b = A.numpy(), B.numpy()
    x_star = -np.linalg.solve(a, b @ u)
    return x_star + expm(a * t) @ (x0 - x_star)


def _pendulum_model(dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    task = get_task("pendulum")
    residual = MLPResidual(2, 1, hidden=(16, 16), angle_dims=(0,))
    for p in residual.parameters():  # non-zero weights so the residual matters in the tests
        torch.nn.init.normal_(p, std=0.3)
    return HybridODE(task.make_prior(), residual, dt=task.dt, **kwargs).to(dtype)


def test_shapes_and_parts():
    model = _pendulum_model()
    x, u = torch.randn(7, 2), torch.randn(7, 1)
    assert model.vector_field(x, u).shape == (7, 2)
    assert model.step(x, u).shape == (7, 2)
    traj = model.rollout(x, torch.randn(7, 5, 1))
    assert traj.shape == (7, 6, 2) and torch.equal(traj[:, 0], x)
    torch.testing.assert_close(
        model.vector_field(x, u), model.prior_field(x, u) + model.residual_field(x, u)
    )
    prior_only = HybridODE(model.prior, None, dt=0.05)
    torch.testing.assert_close(prior_only.vector_field(x, u), model.prior_field(x, u))
    neural = HybridODE(None, model.residual, dt=0.05)
    torch.testing.assert_close(neural.vector_field(x, u), model.residual(x, u))


def test_residual_mask_limits_what_the_network_touches():
    model = _pendulum_model(residual_mask=[1])
    x, u = torch.randn(4, 2), torch.randn(4, 1)
    r = model.residual_field(x, u)
    assert torch.all(r[:, 0] == 0) and torch.any(r[:, 1] != 0)
    same = _pendulum_model(residual_mask=[False, True])
    torch.testing.assert_close(same.residual_field(x, u), r)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"method": "rk45"}, "method must be one of"),
        ({"substeps": 0}, "substeps must be a positive int"),
        ({"sensitivity": "backprop"}, "sensitivity must be one of"),
        ({"residual_mask": [5]}, "residual_mask must be state indices"),
        ({"residual_mask": [True]}, "boolean residual_mask needs 2 entries"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _pendulum_model(**kwargs)
    with pytest.raises(ValueError, match="needs a prior, a residual or both"):
        HybridODE(None, None, dt=0.1)
    with pytest.raises(ValueError, match="dt must be a positive number"):
        HybridODE(Linear(), None, dt=0.0)


def test_rk4_step_is_fourth_order_and_dopri5_meets_its_tolerance():
    x0, u, t = np.array([1.0, -0.5]), np.array([0.4]), 0.8
    truth = exact_step(x0, u, t)
    xt, ut = torch.tensor(x0[None]), torch.tensor(u[None])
    errors = []
    for substeps in (4, 8, 16):
        model = HybridODE(Linear().double(), None, dt=t, substeps=substeps)
        errors.append(np.abs(model.step(xt, ut)[0].detach().numpy() - truth).max())
    assert 14 < errors[0] / errors[1] < 18 and 14 < errors[1] / errors[2] < 18
    for rtol in (1e-5, 1e-9):
        model = HybridODE(Linear().double(), None, dt=t, method="dopri5", rtol=rtol, atol=rtol)
        err = np.abs(model.step(xt, ut)[0].detach().numpy() - truth).max()
        assert err < 10 * rtol


def test_gradcheck_vector_field_float64():
    model = _pendulum_model(torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model.vector_field, (x, u))
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def by_params(*params):
        return functional_call(
            model, dict(zip(names, params, strict=True)), (x.detach(), u.detach())
        )

    def field(*params):
        return functional_call(
            model,
            dict(zip(names, params, strict=True)),
            (x.detach(), u.detach()),
            strict=False,
        )

    # the vector field through the module's forward is vector_field; call it functionally
    model.forward = model.vector_field
    assert torch.autograd.gradcheck(field, values)
    del by_params


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_adjoint_and_direct_gradients_agree(method):
    model = _pendulum_model(torch.float64, method=method, rtol=1e-10, atol=1e-10)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    actions = torch.randn(4, 8, 1, dtype=torch.float64)

    def grads(sensitivity):
        model.sensitivity = sensitivity
        model.zero_grad()
        model.rollout(x0, actions).pow(2).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    direct, adjoint = grads("direct"), grads("adjoint")
    rel = (direct - adjoint).norm() / direct.norm()
    assert rel < 1e-4, rel


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model = _pendulum_model(residual_mask=[1], substeps=3)
    path = model.save(tmp_path / "model.pt")
    loaded = HybridODE.load(path)
    x, u = torch.randn(9, 2), torch.randn(9, 1)
    assert torch.equal(model.step(x, u), loaded.step(x, u))
    assert loaded.prior.physical_parameters() == model.prior.physical_parameters()
    assert (loaded.substeps, loaded.method) == (3, "rk4")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary file left"


def test_user_prior_needs_to_be_passed_when_loading(tmp_path):
    model = HybridODE(Linear(), MLPResidual(2, 1), dt=0.1)
    model.prior.raw["scale"].data.fill_(0.3)
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"pass prior=Linear\(...\)"):
        HybridODE.load(tmp_path / "m.pt")
    loaded = HybridODE.load(tmp_path / "m.pt", prior=Linear())
    assert loaded.prior.physical_parameters()["scale"] == pytest.approx(np.exp(0.3))
    with pytest.raises(ValueError, match="holds a prior of class Linear"):
        HybridODE.load(tmp_path / "m.pt", prior=get_task("pendulum").make_prior())


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "hybridgym.HybridODE", "payload": _Evil(target)}, path)
    with pytest.raises(ValueError, match="not a hybridgym checkpoint"):
        HybridODE.load(path)
    assert not target.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(target)))
    with pytest.raises(ValueError, match="nothing from it was executed"):
        HybridODE.load(raw)
    assert not target.exists()


def test_non_checkpoints_are_refused_clearly(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a hybridgym checkpoint"):
        HybridODE.load(tmp_path / "text.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a hybridgym\.HybridODE checkpoint"):
        HybridODE.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        HybridODE.load(tmp_path / "missing.pt")


def test_ensemble_outputs_and_round_trip(tmp_path):
    members = [_pendulum_model() for _ in range(3)]
    for k, m in enumerate(members):
        m.prior.raw["a"].data.add_(0.1 * k)
    ens = Ensemble(members)
    x, u = torch.randn(5, 2), torch.randn(5, 1)
    per = ens.member_steps(x, u)
    assert per.shape == (3, 5, 2)
    torch.testing.assert_close(ens.step(x, u), per.mean(0))
    torch.testing.assert_close(ens.disagreement(x, u), per.std(0).mean(-1))
    assert torch.all(ens.disagreement(x, u) > 0)
    assert ens.rollout(x, torch.zeros(5, 4, 1)).shape == (3, 5, 5, 2)
    loaded = Ensemble.load(ens.save(tmp_path / "ens.pt"))
    torch.testing.assert_close(loaded.member_steps(x, u), per)
    with pytest.raises(ValueError, match="member 1 has"):
        Ensemble([members[0], HybridODE(Linear(), None, dt=0.1)])


def test_checkpoint_path_is_a_pathlib_path(tmp_path):
    path = _pendulum_model().save(str(tmp_path / "sub" / "m.pt"))
    assert isinstance(path, pathlib.Path) and path.exists()
