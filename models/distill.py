"""Read a learned residual back as equations: sparse regression (PySINDy) of the network's
output on a polynomial library of states and actions, as in the UDE "missing physics" example.

PySINDy is an optional dependency (``pip install hybridgym[sindy]``); everything else in
hybridgym works without it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridgym.models.hybrid import HybridODE, register_residual


class SymbolicResidual(nn.Module):
    """A residual that is a sparse polynomial: dx_i/dt += sum_j c_ij * prod_k z_k^p_jk.

    z are the selected inputs (states, then the actions that varied in the data).

    Args:
        state_dim, action_dim: n and m of the model.
        input_dims: indices into concat(x, u) that the library uses.
        powers: F x len(input_dims) integer exponents, one row per library term.
        coefficients: n x F.
        input_names: names of the selected inputs (for :meth:`equations`).
        state_names: names of the n state variables.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        input_dims: Sequence[int],
        powers: Sequence[Sequence[int]],
        coefficients: Sequence[Sequence[float]],
        input_names: Sequence[str],
        state_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.input_dims = [int(i) for i in input_dims]
        self.input_names = [str(s) for s in input_names]
        self.state_names = [str(s) for s in state_names]
        powers_t = torch.as_tensor(
            np.asarray(powers, dtype=np.float64).reshape(-1, len(input_dims))
        )
        coef_t = torch.as_tensor(np.asarray(coefficients, dtype=np.float64))
        if coef_t.shape != (state_dim, powers_t.shape[0]):
            raise ValueError(
                f"coefficients must be {state_dim} x {powers_t.shape[0]}, got {tuple(coef_t.shape)}"
            )
        self.register_buffer("powers", powers_t.to(torch.get_default_dtype()))
        self.register_buffer("coefficients", coef_t.to(torch.get_default_dtype()))

    def library(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Library terms, B x F."""
        z = torch.cat([x, u], dim=-1)[..., self.input_dims]
        if not self.input_dims:
            return torch.ones(*x.shape[:-1], self.powers.shape[0], dtype=x.dtype, device=x.device)
        return torch.prod(z[..., None, :] ** self.powers.to(z.dtype), dim=-1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.library(x, u) @ self.coefficients.to(x.dtype).T

    def term_names(self) -> list[str]:
        names = []
        for row in self.powers.round().long().tolist():
            parts = [
                name if p == 1 else f"{name}^{p}"
                for name, p in zip(self.input_names, row, strict=True)
                if p
            ]
            names.append(" ".join(parts) if parts else "1")
        return names

    def terms(self, tol: float = 0.0) -> dict[str, dict[str, float]]:
        """Non-zero terms: state name -> {term name: coefficient}."""
        names = self.term_names()
        out = {}
        for i, state in enumerate(self.state_names):
            row = self.coefficients[i].tolist()
            out[state] = {n: c for n, c in zip(names, row, strict=True) if abs(c) > tol}
        return out

    def equations(self, precision: int = 3) -> list[str]:
        """One readable line per state, e.g. ``d prey/dt = prior + -0.903 prey predators``."""
        lines = []
        for state, terms in self.terms().items():
            body = " ".join(f"{c:+.{precision}f} {name}" for name, c in terms.items()) or "+0"
            lines.append(f"d{state}/dt = prior {body}")
        return lines

    def as_hybrid(self, like: HybridODE) -> HybridODE:
        """A HybridODE with ``like``'s prior (a copy), integrator and mask, and these terms in
        place of its residual."""
        return HybridODE(
            copy.deepcopy(like.prior),
            copy.deepcopy(self),
            like.dt,
            method=like.method,
            substeps=like.substeps,
            residual_mask=[bool(v) for v in like.residual_mask.tolist()],
            rtol=like.rtol,
            atol=like.atol,
            state_dim=like.state_dim,
            action_dim=like.action_dim,
        )

    def config(self) -> dict[str, Any]:
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "input_dims": list(self.input_dims),
            "powers": self.powers.round().long().tolist(),
            "coefficients": self.coefficients.tolist(),
            "input_names": list(self.input_names),
            "state_names": list(self.state_names),
        }


register_residual("SymbolicResidual", SymbolicResidual)


def distill(
    model: HybridODE,
    data: Any,
    *,
    degree: int = 2,
    threshold: float = 0.1,
    alpha: float = 1e-5,
    include_actions: bool | None = None,
) -> SymbolicResidual:
    """Sparse regression of ``model``'s (masked) residual into a polynomial.

    Args:
        model: a fitted HybridODE with a residual.
        data: a ``TrajectoryDataset`` (its recorded states and actions are the regression
            points), or a tuple ``(states N x n, actions N x m)``.
        degree: polynomial degree of the library.
        threshold: STLSQ threshold: coefficients smaller than this (in the data's units) are
            set to zero.
        alpha: ridge regularisation of STLSQ.
        include_actions: use actions in the library; None uses those that vary in the data.

    Returns:
        A :class:`SymbolicResidual`; ``.equations()``, ``.terms()``, ``.as_hybrid(model)``.
    """
    try:
        import pysindy as ps
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("distill needs PySINDy: pip install 'hybridgym[sindy]'") from err
    if model.residual is None:
        raise ValueError("the model has no residual to distill")
    if isinstance(data, tuple):
        x_np, u_np = (np.asarray(a, dtype=np.float64) for a in data)
        state_names = [f"x{i}" for i in range(model.state_dim)]
        action_names = [f"u{i}" for i in range(model.action_dim)]
    else:
        x_np = np.concatenate([np.asarray(ep.states)[:-1] for ep in data.episodes])
        u_np = np.concatenate([np.asarray(ep.actions) for ep in data.episodes])
        state_names, action_names = list(data.state_names), list(data.action_names)
    if x_np.shape[1] != model.state_dim or u_np.shape[1] != model.action_dim:
        raise ValueError(
            f"data has {x_np.shape[1]} states and {u_np.shape[1]} actions, the model "
            f"{model.state_dim} and {model.action_dim}"
        )
    param = next(model.parameters())
    with torch.no_grad():
        x_t = torch.as_tensor(x_np, dtype=param.dtype, device=param.device)
        u_t = torch.as_tensor(u_np, dtype=param.dtype, device=param.device)
        targets = model.residual_field(x_t, u_t).double().cpu().numpy()
    if include_actions is None:
        used_actions = [j for j in range(u_np.shape[1]) if np.ptp(u_np[:, j]) > 0]
    else:
        used_actions = list(range(u_np.shape[1])) if include_actions else []
    input_dims = list(range(model.state_dim)) + [model.state_dim + j for j in used_actions]
    input_names = state_names + [action_names[j] for j in used_actions]
    library = ps.PolynomialLibrary(degree=degree)
    sindy = ps.SINDy(optimizer=ps.STLSQ(threshold=threshold, alpha=alpha), feature_library=library)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySINDy warns about dt/feature-name conventions
        sindy.fit(
            x_np,
            t=model.dt,
            x_dot=targets,
            u=u_np[:, used_actions] if used_actions else None,
            feature_names=input_names,
        )
    coefficients = sindy.coefficients() * model.residual_mask.cpu().numpy()[:, None]
    return SymbolicResidual(
        model.state_dim,
        model.action_dim,
        input_dims,
        library.powers_,
        coefficients,
        input_names,
        state_names,
    ).to(param.device)
