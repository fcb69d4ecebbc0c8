"""distill: sparse regression finds exactly the terms a residual computes."""

import numpy as np
import pytest
import torch
from torch import nn

from hybridgym.envs import get_task
from hybridgym.models import HybridODE, SymbolicResidual, TrajectoryDataset, distill


class KnownResidual(nn.Module):
    """A residual with known polynomial terms, including an action term."""

    state_dim, action_dim = 2, 2

    def forward(self, x, u):
        return torch.stack([-0.9 * x[:, 0] * x[:, 1] + 0.5 * u[:, 0], 0.8 * x[:, 0] * x[:, 1]], 1)


def _data(rng, vary_actions=True):
    states = rng.uniform(0.5, 4.0, (40, 2))
    actions = rng.uniform(0, 1, (39, 2)) if vary_actions else np.zeros((39, 2))
    return TrajectoryDataset.from_arrays(
        states, actions, dt=0.25, state_names=("prey", "predators"), action_names=("h1", "h2")
    )


def test_exact_terms_with_actions_and_equations():
    model = HybridODE(get_task("lotka_volterra").make_prior(0.0), KnownResidual(), dt=0.25)
    symbolic = distill(model, _data(np.random.default_rng(0)), threshold=0.05)
    terms = symbolic.terms()
    assert set(terms["prey"]) == {"prey predators", "h1"}
    assert set(terms["predators"]) == {"prey predators"}
    assert terms["prey"]["prey predators"] == pytest.approx(-0.9, abs=1e-4)
    assert terms["prey"]["h1"] == pytest.approx(0.5, abs=1e-4)
    assert symbolic.equations() == [
        "dprey/dt = prior +0.500 h1 -0.900 prey predators",
        "dpredators/dt = prior +0.800 prey predators",
    ]
    x, u = torch.rand(6, 2) * 3, torch.rand(6, 2)
    torch.testing.assert_close(symbolic(x, u), KnownResidual()(x, u), rtol=1e-4, atol=1e-4)


def test_constant_actions_are_left_out_of_the_library():
    model = HybridODE(get_task("lotka_volterra").make_prior(0.0), KnownResidual(), dt=0.25)
    symbolic = distill(model, _data(np.random.default_rng(1), vary_actions=False))
    assert symbolic.input_names == ["prey", "predators"]
    assert not any("h1" in name for name in symbolic.term_names())


def test_mask_zeroes_untouched_states_and_round_trip(tmp_path):
    model = HybridODE(
        get_task("lotka_volterra").make_prior(0.0), KnownResidual(), dt=0.25, residual_mask=[1]
    )
    symbolic = distill(model, _data(np.random.default_rng(2)))
    assert symbolic.terms()["prey"] == {}
    hybrid = symbolic.as_hybrid(model)
    assert isinstance(hybrid.residual, SymbolicResidual)
    loaded = HybridODE.load(hybrid.save(tmp_path / "sym.pt"))
    x, u = torch.rand(4, 2), torch.rand(4, 2)
    torch.testing.assert_close(loaded.step(x, u), hybrid.step(x, u))
    assert loaded.residual.equations() == hybrid.residual.equations()


def test_distill_needs_a_residual_and_matching_data():
    prior_only = HybridODE(get_task("lotka_volterra").make_prior(0.0), None, dt=0.25)
    with pytest.raises(ValueError, match="no residual to distill"):
        distill(prior_only, _data(np.random.default_rng(0)))
    model = HybridODE(get_task("lotka_volterra").make_prior(0.0), KnownResidual(), dt=0.25)
    with pytest.raises(ValueError, match="data has 3 states"):
        distill(model, (np.zeros((5, 3)), np.zeros((5, 2))))
