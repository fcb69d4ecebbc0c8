"""Residual networks: MLPResidual (normalisation, angle features, the allocation-free inference
path) and UnitResidual (one network shared by alike units)."""

import pytest
import torch

from hybridgym.models import HybridODE, MLPResidual, UnitResidual
from hybridgym.models.residual import ACTIVATIONS


def _randomised(residual):
    torch.manual_seed(0)
    for p in residual.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x, u = torch.randn(300, residual.state_dim) * 3, torch.randn(300, residual.action_dim)
    residual.set_statistics(x, u, torch.randn(300, residual.state_dim) * 2)
    return residual


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_inference_path_equals_the_autograd_path(activation):
    residual = _randomised(
        MLPResidual(3, 2, hidden=(16, 8), activation=activation, angle_dims=(1,))
    )
    for batch in (7, 64, 7):  # new and reused workspaces
        x, u = torch.randn(batch, 3), torch.randn(batch, 2)
        with_grad = residual(x, u)
        with torch.no_grad():
            no_grad = residual(x, u)
        with torch.inference_mode():
            inference = residual(x, u)
        torch.testing.assert_close(no_grad, with_grad.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(inference, with_grad.detach(), rtol=1e-5, atol=1e-6)
    double = residual.double()
    with torch.no_grad():
        out = double(x.double(), u.double())
    assert out.dtype == torch.float64


def test_outputs_do_not_alias_reused_buffers():
    residual = _randomised(MLPResidual(2, 1, hidden=(8,)))
    with torch.no_grad():
        a = residual(torch.ones(5, 2), torch.ones(5, 1))
        kept = a.clone()
        residual(torch.zeros(5, 2), torch.zeros(5, 1))
    torch.testing.assert_close(a, kept)


def test_angles_enter_as_sin_and_cos():
    residual = _randomised(MLPResidual(2, 1, hidden=(8,), angle_dims=(0,)))
    x = torch.tensor([[0.3, 1.0]])
    shifted = x + torch.tensor([[2 * torch.pi, 0.0]])
    u = torch.zeros(1, 1)
    torch.testing.assert_close(residual(x, u), residual(shifted, u), rtol=1e-5, atol=1e-5)
    assert residual.features(x, u).shape == (1, 4)


def test_a_new_residual_outputs_zero_and_bad_arguments():
    residual = MLPResidual(2, 1)
    assert torch.all(residual(torch.randn(4, 2), torch.randn(4, 1)) == 0)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPResidual(2, 1, activation="sigmoidal")
    with pytest.raises(ValueError, match="angle_dims must lie in"):
        MLPResidual(2, 1, angle_dims=(2,))
    with pytest.raises(ValueError, match="state_dim must be an int >= 1"):
        MLPResidual(0, 1)


# --- UnitResidual: one network shared by alike units --------------------------------------------
def _zones(n, hidden=(8,)):
    """n zones: (temperature, load) per zone, one action each, a shared clock (2 states)."""
    return UnitResidual(
        2 * n + 2,
        n,
        unit_states=[[i, n + i] for i in range(n)],
        unit_outputs=[[i] for i in range(n)],
        unit_actions=[[i] for i in range(n)],
        shared_states=[2 * n, 2 * n + 1],
        hidden=hidden,
    )


def test_unit_residual_is_shared_by_units_and_writes_only_their_outputs():
    torch.manual_seed(0)
    net = _zones(4)
    torch.nn.init.normal_(net.net[-1].weight)
    x, u = torch.randn(6, 10), torch.rand(6, 4)
    out = net(x, u)
    assert out.shape == (6, 10)
    assert torch.all(out[:, 4:] == 0) and torch.all(out[:, :4] != 0)
    # swapping two zones (states and actions) swaps their corrections: the weights are shared
    perm = [2, 0, 3, 1]
    xp = x.clone()
    xp[:, :4], xp[:, 4:8] = x[:, perm], x[:, [4 + p for p in perm]]
    torch.testing.assert_close(net(xp, u[:, perm])[:, :4], out[:, perm])
    # leading batch dimensions (an ensemble's K x B) pass through
    assert net(x[None].expand(3, -1, -1), u[None].expand(3, -1, -1)).shape == (3, 6, 10)


@pytest.mark.parametrize("hidden", [(), (8,), (16, 8)])
def test_unit_residual_inference_path_equals_the_autograd_path(hidden):
    net = _randomised(_zones(5, hidden))
    for shape in ((7,), (64,), (3, 7), (7,)):  # new and reused workspaces, leading dims
        x, u = torch.randn(*shape, 12) * 3, torch.rand(*shape, 5)
        with_grad = net(x, u)
        with torch.no_grad():
            no_grad = net(x, u)
        with torch.inference_mode():
            inference = net(x, u)
        assert no_grad.shape == with_grad.shape == (*shape, 12)
        torch.testing.assert_close(no_grad, with_grad.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(inference, with_grad.detach(), rtol=1e-5, atol=1e-5)
        assert torch.all(no_grad[..., 5:] == 0)
    with torch.no_grad():
        assert net.double()(x.double(), u.double()).dtype == torch.float64


def test_a_network_without_hidden_layers_is_normalised_on_every_path():
    for net in (_randomised(MLPResidual(3, 2, hidden=())), _randomised(_zones(2, hidden=()))):
        x, u = torch.randn(9, net.state_dim) * 3, torch.rand(9, net.action_dim)
        with torch.no_grad():
            fast = net(x, u)
        torch.testing.assert_close(fast, net(x, u).detach(), rtol=1e-5, atol=1e-5)


def test_unit_residual_parameters_do_not_grow_with_units():
    counts = {n: sum(p.numel() for p in _zones(n).parameters()) for n in (1, 4, 64)}
    assert len(set(counts.values())) == 1, counts


def test_unit_residual_statistics_pool_units_and_scale_the_penalty():
    net = _zones(2)
    x = torch.randn(100, 6) * torch.tensor([1.0, 3.0, 10.0, 30.0, 1.0, 1.0])
    dxdt = torch.randn(100, 6) * torch.tensor([2.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    net.set_statistics(x, torch.rand(100, 2), dxdt)
    pooled = torch.cat([x[:, 0], x[:, 1]])
    assert net.input_shift[0] == pytest.approx(float(pooled.mean()), abs=1e-5)
    assert net.input_scale[0] == pytest.approx(float(pooled.std()), rel=1e-5)
    scale = net.state_scale()
    assert scale.shape == (6,) and torch.all(scale[2:] == 1)
    assert scale[0] == scale[1] == pytest.approx(float(torch.cat([dxdt[:, 0], dxdt[:, 1]]).std()))


def test_unit_residual_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = HybridODE(None, _zones(3), dt=0.1, state_dim=8, action_dim=3)
    torch.nn.init.normal_(model.residual.net[-1].weight)
    model.save(tmp_path / "m.pt")
    loaded = HybridODE.load(tmp_path / "m.pt")
    assert isinstance(loaded.residual, UnitResidual)
    x, u = torch.randn(4, 8), torch.rand(4, 3)
    torch.testing.assert_close(loaded.step(x, u), model.step(x, u))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"unit_states": [[0, 4], [1]]}, "as many unit_states"),
        ({"unit_outputs": [[0]]}, "one group per unit"),
        ({"unit_states": [[0, 40], [1, 5]]}, "out of range"),
        ({"unit_outputs": [[0], [0]]}, "must not overlap"),
        ({"activation": "sigmoid"}, "activation"),
    ],
)
def test_unit_residual_rejects_bad_groups(kwargs, message):
    args = {
        "state_dim": 6,
        "action_dim": 2,
        "unit_states": [[0, 2], [1, 3]],
        "unit_outputs": [[0], [1]],
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        UnitResidual(**args)


def test_input_dims_leave_a_state_out_of_the_network():
    torch.manual_seed(0)
    net = MLPResidual(4, 1, hidden=(8,), angle_dims=(2,), input_dims=(1, 2, 3))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x, u = torch.randn(5, 4), torch.randn(5, 1)
    moved = x.clone()
    moved[:, 0] += 3.0  # the cart elsewhere on the track
    torch.testing.assert_close(net(moved, u), net(x, u))
    assert net.features(x, u).shape == (5, 1 + 2 + 1 + 1)  # xdot, sin/cos theta, thetadot, u
    full = MLPResidual(4, 1, hidden=(8,), angle_dims=(2,))
    assert full.features(x, u).shape == (5, 6) and full.config()["input_dims"] is None
    again = MLPResidual(**net.config())
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again(x, u), net(x, u))
    with pytest.raises(ValueError, match="input_dims"):
        MLPResidual(4, 1, input_dims=(0, 4))
