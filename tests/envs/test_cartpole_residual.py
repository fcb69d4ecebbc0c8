"""The cart-pole's structured residual: friction as generalised forces through the mass matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgym.envs import get_task
from hybridgym.envs.systems.cartpole_swingup import (
    CART_COULOMB,
    CART_VISCOUS,
    COULOMB_SPEED,
    JOINT_VISCOUS,
    CartPoleForceResidual,
    cartpole_vector_field,
)
from hybridgym.models import HybridODE, MLPResidual

TASK = get_task("cartpole_swingup")


def _states(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.5, 2.0, 3.2, 6.0], dtype=torch.float64)
    return (torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1) * scale


def _true_friction(x: torch.Tensor) -> torch.Tensor:
    """The truth's generalised friction forces (cart N, pole N m)."""
    xdot, thetadot = x[:, 1], x[:, 3]
    cart = -CART_VISCOUS * xdot - CART_COULOMB * torch.tanh(xdot / COULOMB_SPEED)
    return torch.stack([cart, -JOINT_VISCOUS * thetadot], -1)


def test_the_true_friction_forces_through_the_mass_matrix_are_the_missing_physics():
    # the module's constants are float32 buffers: agreement to float32 precision
    residual = CartPoleForceResidual().double()
    x = _states(256)
    u = torch.rand(256, 1, dtype=torch.float64) * 2 - 1
    added = residual.from_forces(x, _true_friction(x))
    np.testing.assert_allclose(
        added.numpy(), TASK.missing_physics(x, u).numpy(), rtol=1e-6, atol=1e-6
    )
    # the textbook prior at the true constants plus them is the real system
    prior = TASK.make_prior(perturbation=0.0).double()
    np.testing.assert_allclose(
        (prior(x, u) + added).detach().numpy(), cartpole_vector_field(x, u).numpy(), atol=1e-6
    )


def test_a_cart_force_tips_a_hanging_and_a_standing_pole_opposite_ways():
    residual = CartPoleForceResidual().double()
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[1, 2] = torch.pi  # hanging
    push = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    dxdt = residual.from_forces(x, push)
    assert (dxdt[:, [0, 2]] == 0).all()  # kinematic rows untouched
    assert (dxdt[:, 1] > 0).all()
    assert dxdt[0, 3] < 0 < dxdt[1, 3]


@settings(max_examples=50, deadline=None)
@given(
    position=st.floats(-2, 2),
    action=st.floats(-1, 1),
    seed=st.integers(0, 1000),
)
def test_the_network_sees_only_the_velocities(position, action, seed):
    torch.manual_seed(seed)
    residual = CartPoleForceResidual(hidden=(8,)).double()
    for p in residual.parameters():
        torch.nn.init.normal_(p)
    x = _states(4, seed)
    moved = x.clone()
    moved[:, 0] = position
    u = torch.full((4, 1), action, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_array_equal(residual.forces(x).numpy(), residual.forces(moved).numpy())
        np.testing.assert_array_equal(residual(x, u).numpy(), residual(moved, -u).numpy())


def test_inference_path_equals_the_autograd_path():
    torch.manual_seed(0)
    residual = CartPoleForceResidual()
    residual.set_statistics(_states(64).float(), torch.zeros(64, 1), _states(64, 1).float())
    for p in residual.net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = _states(32, 2).float()
    with torch.no_grad():
        fast = residual(x, torch.zeros(32, 1))
    slow = residual(x, torch.zeros(32, 1))
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach())


def test_statistics_scale_the_outputs_as_forces_and_the_penalty_as_dxdt():
    residual = CartPoleForceResidual(cart_mass=2.0, pole_mass=0.5, half_length=1.0)
    x = _states(500).float()
    dxdt = torch.randn(500, 4) * torch.tensor([1.0, 3.0, 2.0, 5.0])
    residual.set_statistics(x, torch.zeros(500, 1), dxdt)
    scale = dxdt.std(0)
    torch.testing.assert_close(residual.state_scale(), scale)
    inertia = 4.0 / 3.0 * 0.5 * 1.0 * 1.0
    torch.testing.assert_close(
        residual.output_scale, torch.stack([scale[1] * 2.5, scale[3] * inertia])
    )
    assert bool(residual.statistics_set)


def test_the_task_builds_it_at_the_priors_starting_constants(tmp_path):
    prior = TASK.make_prior(perturbation=0.3)
    residual = TASK.make_residual(hidden=(16,), activation="relu", prior=prior)
    assert isinstance(residual, CartPoleForceResidual)
    assert residual.cart_mass == pytest.approx(0.7)
    assert residual.pole_mass == pytest.approx(0.07)
    assert residual.half_length == pytest.approx(0.35)
    assert residual.hidden == (16,) and residual.activation == "relu"
    assert TASK.make_residual().cart_mass == 1.0  # no prior: the textbook values
    assert type(TASK.make_residual(structured=False)) is MLPResidual

    torch.manual_seed(0)
    for p in residual.net.parameters():
        torch.nn.init.normal_(p)
    model = HybridODE(prior, residual, dt=TASK.dt, residual_mask=(1, 3))
    path = model.save(tmp_path / "model.pt")
    loaded = HybridODE.load(path)
    assert isinstance(loaded.residual, CartPoleForceResidual)
    assert loaded.residual.config() == residual.config()
    x = _states(8).float()
    u = torch.rand(8, 1)
    torch.testing.assert_close(loaded.vector_field(x, u), model.vector_field(x, u))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cart_mass": 0.0}, "cart_mass must be a number > 0, got 0.0"),
        ({"pole_mass": -1}, "pole_mass must be a number > 0, got -1"),
        ({"half_length": float("inf")}, "half_length must be finite"),
        ({"half_length": True}, "half_length must be a number > 0"),
        ({"activation": "sine"}, "activation must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CartPoleForceResidual(**kwargs)
