"""Ensemble.member_steps without autograd: alike MLP residuals stacked into batched products,
alike PhysicsPriors in one call; the same numbers as stepping each member, rebuilt when the
weights change, and the member-by-member path where batching would be wrong."""

import torch

from hybridgym.models import Ensemble, HybridODE, MLPResidual, PhysicsPrior


class Spring(PhysicsPrior):
    def __init__(self, stiffness: float = 1.0, limit: bool = False):
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("stiffness", stiffness, positive=True)
        self.add_constant("gain", 0.5)
        if limit:
            self.limit_state(1, -0.3, 0.3)

    def forward(self, x, u):
        c = self.constants()
        return torch.stack([x[:, 1], -c["stiffness"] * x[:, 0] + c["gain"] * u[:, 0]], dim=1)


class ScalarSpring(Spring):
    """Reads a constant as a Python number: correct per member, wrong if batched."""

    def forward(self, x, u):
        k = float(self.constant("stiffness"))
        return torch.stack([x[:, 1], -k * x[:, 0] + u[:, 0]], dim=1)


def _ensemble(prior_cls=None, k=3, method="euler", **prior_kwargs):
    torch.manual_seed(0)
    members = []
    for i in range(k):
        residual = MLPResidual(2, 1, (16, 16), "silu", angle_dims=(0,))
        for p in residual.parameters():
            torch.nn.init.normal_(p, std=0.3)
        residual.input_scale.uniform_(0.5, 2.0)
        residual.output_scale.uniform_(0.5, 2.0)
        prior = None if prior_cls is None else prior_cls(1.0 + 0.5 * i, **prior_kwargs)
        members.append(HybridODE(prior, residual, 0.1, method=method))
    return Ensemble(members)


def _one_by_one(ensemble, x, u):
    xs = x if x.dim() == 3 else [x] * ensemble.num_members
    return torch.stack([m.step(xi, u) for m, xi in zip(ensemble.members, xs, strict=True)])


def test_stacked_steps_equal_member_steps():
    x, u = torch.randn(50, 2), torch.randn(50, 1)
    for ensemble in (
        _ensemble(),
        _ensemble(Spring, method="rk4"),
        _ensemble(Spring, limit=True),
    ):
        with torch.no_grad():
            expected = _one_by_one(ensemble, x, u)
            torch.testing.assert_close(ensemble.member_steps(x, u), expected)
            xk = torch.randn(ensemble.num_members, 50, 2)
            torch.testing.assert_close(ensemble.member_steps(xk, u), _one_by_one(ensemble, xk, u))
        assert ensemble._stacked() is not None
    assert ensemble._stacked().batched_prior is not None  # the priors ran in one call
    assert (ensemble.member_steps(x * 10, u)[:, :, 1].abs() <= 0.3 + 1e-6).all()  # the limits


def test_a_weight_change_rebuilds_the_stack():
    ensemble = _ensemble(Spring)
    x, u = torch.randn(20, 2), torch.randn(20, 1)
    with torch.no_grad():
        before = ensemble.member_steps(x, u)
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.1)
    loss = ensemble.member_steps(x, u).pow(2).sum()  # with autograd: member by member
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = ensemble.member_steps(x, u)
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, _one_by_one(ensemble, x, u))
    other = _ensemble(Spring)
    other.members[1].load_state_dict(ensemble.members[1].state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.member_steps(x, u)[1], after[1])


def test_priors_that_need_scalar_constants_run_one_by_one():
    ensemble = _ensemble(ScalarSpring)
    x, u = torch.randn(10, 2), torch.randn(10, 1)
    with torch.no_grad():
        assert ensemble._stacked().batched_prior is None
        torch.testing.assert_close(ensemble.member_steps(x, u), _one_by_one(ensemble, x, u))
