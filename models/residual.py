"""The neural part of a hybrid model: an MLP with its input normalisation inside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def _check_dim(label: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{label} must be an int >= {minimum}, got {value!r}")
    return value


class MLPResidual(nn.Module):
    """dx/dt correction NN(x, u), B x n, from a multilayer perceptron.

    Inputs are normalised inside the module (``(z - shift) / scale``, buffers set from data by
    :meth:`set_statistics`, which ``fit`` calls on a model's first fit) and outputs are
    multiplied by a per-dimension ``output_scale`` (the typical size of dx/dt), so the network
    works with numbers of order one whatever the units. The last layer starts at zero: a new
    hybrid model starts as its prior.

    Args:
        state_dim: n.
        action_dim: m (0 for an autonomous system).
        hidden: widths of the hidden layers.
        activation: one of ``tanh``, ``relu``, ``gelu``, ``silu``, ``softplus``, ``elu``.
        angle_dims: state dimensions that are angles; the network sees (sin, cos) of them
            instead of the raw (possibly unwrapped) angle.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        angle_dims: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.action_dim = _check_dim("action_dim", action_dim)
        hidden = tuple(hidden)
        for width in hidden:
            _check_dim("every hidden width", width, 1)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        angle_dims = tuple(sorted(set(angle_dims)))
        if any(not 0 <= d < state_dim for d in angle_dims):
            raise ValueError(f"angle_dims must lie in [0, {state_dim}), got {angle_dims}")
        self.hidden = hidden
        self.activation = activation
        self.angle_dims = angle_dims
        self._plain_dims = [d for d in range(state_dim) if d not in angle_dims]
        in_dim = len(self._plain_dims) + 2 * len(angle_dims) + action_dim
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        last = nn.Linear(width, state_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.register_buffer("input_shift", torch.zeros(in_dim))
        self.register_buffer("input_scale", torch.ones(in_dim))
        self.register_buffer("output_scale", torch.ones(state_dim))
        self.register_buffer("statistics_set", torch.tensor(False))

    def features(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Network inputs before normalisation, B x in_dim."""
        parts = [x[..., self._plain_dims]] if self._plain_dims else []
        if self.angle_dims:
            angles = x[..., list(self.angle_dims)]
            parts += [torch.sin(angles), torch.cos(angles)]
        if self.action_dim:
            parts.append(u)
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def set_statistics(
        self, x: torch.Tensor, u: torch.Tensor, dxdt: torch.Tensor | None = None
    ) -> None:
        """Set the input normalisation (and output scale, from dx/dt samples) from data.

        Args:
            x: states, N x n. u: actions, N x m. dxdt: typical time derivatives, N x n.
        """
        z = self.features(x, u)
        self.input_shift.copy_(z.mean(0))
        self.input_scale.copy_(z.std(0).clamp_min(1e-6) if len(z) > 1 else torch.ones_like(z[0]))
        if dxdt is not None and len(dxdt) > 1:
            self.output_scale.copy_(dxdt.std(0).clamp_min(1e-6))
        self.statistics_set.fill_(True)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """NN(x, u): B x n for x: B x n, u: B x m."""
        z = (self.features(x, u) - self.input_shift) / self.input_scale
        return self.net(z) * self.output_scale

    def config(self) -> dict[str, Any]:
        """Constructor arguments, plain types (saved in checkpoints)."""
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "angle_dims": list(self.angle_dims),
        }
