"""MLPResidual: normalisation, angle features, and the allocation-free inference path."""

import pytest
import torch

from hybridgym.models import MLPResidual
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
