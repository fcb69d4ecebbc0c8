"""Fixed-step integrators: convergence order on a closed-form solution, numpy/torch agreement."""

import numpy as np
import pytest
import torch

from hybridgym.models import fixed_step

A = np.array([[-0.5, 2.0], [-2.0, -0.5]])  # damped rotation
B = np.array([[0.0], [1.0]])


def linear(x, u):
    if isinstance(x, torch.Tensor):
        return x @ torch.as_tensor(A, dtype=x.dtype).T + u @ torch.as_tensor(B, dtype=x.dtype).T
    return x @ A.T + u @ B.T


def exact(x0, u, t):
    """x(t) for dx/dt = A x + B u with constant u: x* + expm(A t)(x0 - x*)."""
    from scipy.linalg import expm

    x_star = -np.linalg.solve(A, B @ u)
    return x_star + expm(A * t) @ (x0 - x_star)


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    x0, u, t = np.array([1.0, -0.5]), np.array([0.7]), 1.0
    errors = []
    for substeps in (8, 16, 32, 64):
        x = fixed_step(linear, x0[None], u[None], t, method=method, substeps=substeps)[0]
        errors.append(np.abs(x - exact(x0, u, t)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # halving the step divides the error by 2^order (16 for rk4)
    np.testing.assert_allclose(ratios, 2.0**order, rtol=0.15)


def test_numpy_and_torch_give_the_same_step():
    rng = np.random.default_rng(0)
    x, u = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    a = fixed_step(linear, x, u, 0.3, substeps=3)
    b = fixed_step(linear, torch.as_tensor(x), torch.as_tensor(u), 0.3, substeps=3)
    assert isinstance(b, torch.Tensor)
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-14)


def test_bad_arguments():
    x, u = np.zeros((1, 2)), np.zeros((1, 1))
    with pytest.raises(ValueError, match=r"method must be one of \('euler', 'midpoint', 'rk4'\)"):
        fixed_step(linear, x, u, 0.1, method="rk45")
    with pytest.raises(ValueError, match="substeps must be a positive int"):
        fixed_step(linear, x, u, 0.1, substeps=0)
