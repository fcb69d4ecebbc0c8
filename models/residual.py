"""The neural part of a hybrid model: an MLP with its input normalisation inside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: activations applied in place on the inference path (the others allocate)
_IN_PLACE = {
    "tanh": torch.tanh_,
    "relu": torch.relu_,
    "silu": lambda t: nn.functional.silu(t, inplace=True),
    "elu": lambda t: nn.functional.elu(t, inplace=True),
}
_WORKSPACES = 4  # cached hidden-layer buffer sets (distinct batch shapes) per module

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


def _as_slice(indices: list[int]) -> slice | list[int]:
    """A slice for a run of consecutive indices, else the list."""
    if indices and indices == list(range(indices[0], indices[-1] + 1)):
        return slice(indices[0], indices[-1] + 1)
    return indices


def _check_network(hidden: Sequence[int], activation: str) -> tuple[int, ...]:
    hidden = tuple(hidden)
    for width in hidden:
        _check_dim("every hidden width", width, 1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return hidden


def _build_network(module: nn.Module, in_dim: int, out_dim: int) -> None:
    """``module.net`` (hidden layers, then a last layer at zero: a new hybrid model starts as
    its prior) and the normalisation buffers ``set_statistics`` fills."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in module.hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[module.activation]()]
        width = h
    last = nn.Linear(width, out_dim)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    module.net = nn.Sequential(*layers, last)
    module.register_buffer("input_shift", torch.zeros(in_dim))
    module.register_buffer("input_scale", torch.ones(in_dim))
    module.register_buffer("output_scale", torch.ones(out_dim))
    module.register_buffer("statistics_set", torch.tensor(False))
    module._workspaces = {}


def _inference(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``module.net`` on normalised inputs ``(z - input_shift) / input_scale`` (z: N x in_dim)
    without autograd, writing hidden layers into buffers reused across calls
    (``module._workspaces``, which ``_apply`` must clear).

    Large batches (a vectorised env steps thousands of states four times per RK4 step; a
    ``UnitResidual`` runs its network once per unit of each) otherwise allocate and free
    megabytes per layer, and the C allocator's mmap/munmap of such blocks was measured to cost
    as much as the matrix products. The normalisation is folded into the first layer.
    """
    key = (z.shape[0], z.dtype, z.device, torch.is_inference_mode_enabled())
    workspaces = module._workspaces
    buffers = workspaces.get(key)
    layers = list(module.net)
    if buffers is None:
        if len(workspaces) >= _WORKSPACES:
            workspaces.pop(next(iter(workspaces)))
        buffers = [
            torch.empty(z.shape[0], layer.out_features, dtype=z.dtype, device=z.device)
            for layer in layers[:-1:2]
        ]
        workspaces[key] = buffers
    in_place = _IN_PLACE.get(module.activation)
    # the input normalisation folded into the first layer: W (z - s) / c + b
    first = layers[0]
    weight = first.weight / module.input_scale
    bias = first.bias - weight @ module.input_shift
    h = z
    for k, buffer in enumerate(buffers):
        linear, activation = layers[2 * k], layers[2 * k + 1]
        w, b = (weight, bias) if k == 0 else (linear.weight, linear.bias)
        torch.addmm(b, h, w.t(), out=buffer)
        h = in_place(buffer) if in_place is not None else activation(buffer)
    last = layers[-1]
    w, b = (weight, bias) if not buffers else (last.weight, last.bias)  # no hidden layer
    return torch.addmm(b, h, w.t())


def _take(x: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
    return x[..., index] if isinstance(index, slice) else x.index_select(-1, index)


class _NetworkResidual(nn.Module):
    """What the residuals built on :func:`_build_network` share: the network on normalised
    inputs times ``output_scale`` (:meth:`network`; without autograd through reused buffers),
    the input normalisation from data, and dropping those buffers when the module moves."""

    _workspaces: dict[tuple, list[torch.Tensor]]

    def network(self, z: torch.Tensor) -> torch.Tensor:
        """The network on features ``z`` (... x in_dim; normalised here), times
        ``output_scale``; without autograd every leading index as one batch through reused
        buffers."""
        if torch.is_grad_enabled():
            return self.net((z - self.input_shift) / self.input_scale) * self.output_scale
        flat = _inference(self, z.reshape(-1, z.shape[-1]))
        return flat.view(*z.shape[:-1], flat.shape[-1]) * self.output_scale

    def _set_input_statistics(self, z: torch.Tensor) -> None:
        """``input_shift`` / ``input_scale`` from features z (N x in_dim)."""
        self.input_shift.copy_(z.mean(0))
        self.input_scale.copy_(z.std(0).clamp_min(1e-6) if len(z) > 1 else torch.ones_like(z[0]))

    def _apply(self, fn, recurse=True):  # .to(), .double(), ...: drop buffers of the old kind
        self._workspaces = {}
        return super()._apply(fn, recurse)


class MLPResidual(_NetworkResidual):
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
        input_dims: the state dimensions the network sees (None: all). Leaving one out builds
            in a symmetry (a cart-pole's dynamics do not depend on where the cart is).
    """

    #: the network's output width (None: state_dim); a subclass that turns the network's
    #: outputs into dx/dt itself (e.g. generalised forces through a mass matrix) sets it
    network_outputs: int | None = None

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        angle_dims: Sequence[int] = (),
        input_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.action_dim = _check_dim("action_dim", action_dim)
        hidden = _check_network(hidden, activation)
        angle_dims = tuple(sorted(set(angle_dims)))
        if any(not 0 <= d < state_dim for d in angle_dims):
            raise ValueError(f"angle_dims must lie in [0, {state_dim}), got {angle_dims}")
        inputs = list(range(state_dim)) if input_dims is None else sorted(set(input_dims))
        if any(not isinstance(d, int) or not 0 <= d < state_dim for d in inputs):
            raise ValueError(f"input_dims must lie in [0, {state_dim}), got {input_dims}")
        self.hidden = hidden
        self.activation = activation
        self.angle_dims = angle_dims
        self.input_dims = None if input_dims is None else tuple(inputs)
        self._plain_dims = [d for d in inputs if d not in angle_dims]
        self._angle_inputs = [d for d in inputs if d in angle_dims]
        # contiguous index sets become slices (views) instead of gathers
        self._plain_index = _as_slice(self._plain_dims)
        self._angle_index = _as_slice(self._angle_inputs)
        # other index sets: index_select with a tensor (advanced indexing with a list costs
        # about 10x more per call, which shows in planning loops)
        for name in ("_plain_index", "_angle_index"):
            index = getattr(self, name)
            if isinstance(index, list):
                delattr(self, name)
                self.register_buffer(name, torch.tensor(index, dtype=torch.long), persistent=False)
        in_dim = len(self._plain_dims) + 2 * len(self._angle_inputs) + action_dim
        _build_network(self, in_dim, self.network_outputs or state_dim)

    def features(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Network inputs before normalisation, B x in_dim."""
        parts = [_take(x, self._plain_index)] if self._plain_dims else []
        if self._angle_inputs:
            angles = _take(x, self._angle_index)
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
        self._set_input_statistics(self.features(x, u))
        if dxdt is not None and len(dxdt) > 1:
            self.output_scale.copy_(dxdt.std(0).clamp_min(1e-6))
        self.statistics_set.fill_(True)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """NN(x, u): B x n for x: B x n, u: B x m."""
        return self.network(self.features(x, u))

    def state_scale(self) -> torch.Tensor:
        """The typical size of each state's dx/dt the network was scaled with (n)."""
        return self.output_scale

    def config(self) -> dict[str, Any]:
        """Constructor arguments, plain types (saved in checkpoints)."""
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "angle_dims": list(self.angle_dims),
            "input_dims": None if self.input_dims is None else list(self.input_dims),
        }


def _index_groups(label: str, groups: Sequence[Sequence[int]], size: int, units: int) -> list:
    groups = [list(g) for g in groups]
    if len(groups) != units:
        raise ValueError(f"{label} must have one group per unit ({units}), got {len(groups)}")
    widths = {len(g) for g in groups}
    if len(widths) > 1:
        raise ValueError(f"every unit must have as many {label} as the others, got {groups}")
    for g in groups:
        for d in g:
            _check_dim(f"every index in {label}", d)
            if d >= size:
                raise ValueError(f"{label} index {d} is out of range for size {size}")
    return groups


class UnitResidual(_NetworkResidual):
    """dx/dt correction for a system of alike units (rack zones, cells, joints): one MLP whose
    weights every unit shares, fed with that unit's states and actions plus states all units
    see (a clock, an outside temperature).

    Parameters do not grow with the number of units, the cost grows linearly, and every unit's
    data trains the same function: with n units the network sees n times the samples of a
    per-system MLP of n times the inputs. Use it where the missing physics is local to a unit;
    couplings between units belong in the prior.

    Args:
        state_dim, action_dim: n and m of the whole system.
        unit_states: per unit, the state indices its network input holds, e.g. for zone i of
            DataCenter-v0 ``[i, num_zones + i]`` (temperature, load).
        unit_actions: per unit, its action indices (``[[i]]``; empty: none).
        shared_states: state indices every unit also sees.
        unit_outputs: per unit, the state indices whose dx/dt it corrects (the rest get 0).
        hidden, activation: the shared MLP (as :class:`MLPResidual`).
    Normalisation and output scale are set from data by :meth:`set_statistics` (``fit`` calls
    it), pooled over units; the last layer starts at zero.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        unit_states: Sequence[Sequence[int]],
        unit_outputs: Sequence[Sequence[int]],
        unit_actions: Sequence[Sequence[int]] = (),
        shared_states: Sequence[int] = (),
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.action_dim = _check_dim("action_dim", action_dim)
        units = len(unit_states)
        if units < 1:
            raise ValueError("unit_states must list at least one unit")
        self.unit_states = _index_groups("unit_states", unit_states, state_dim, units)
        self.unit_outputs = _index_groups("unit_outputs", unit_outputs, state_dim, units)
        self.unit_actions = (
            _index_groups("unit_actions", unit_actions, action_dim, units) if unit_actions else []
        )
        self.shared_states = [int(d) for d in shared_states]
        _index_groups("shared_states", [self.shared_states], state_dim, 1)
        outputs = [d for g in self.unit_outputs for d in g]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"unit_outputs must not overlap, got {self.unit_outputs}")
        hidden = _check_network(hidden, activation)
        self.hidden, self.activation, self.num_units = hidden, activation, units
        self.register_buffer("_states", torch.tensor(self.unit_states, dtype=torch.long))
        self.register_buffer("_outputs", torch.tensor(outputs, dtype=torch.long))
        self.register_buffer(
            "_actions", torch.tensor(self.unit_actions or [[]] * units, dtype=torch.long)
        )
        self.register_buffer("_shared", torch.tensor(self.shared_states, dtype=torch.long))
        # the same indices flat, for index_select: its backward is an index_add, where advanced
        # indexing with a 2-D index backpropagates through a slow accumulating index_put
        for name in ("_states", "_actions"):
            flat = getattr(self, name).flatten()
            self.register_buffer(name + "_flat", flat.clone(), persistent=False)
        # outputs that are one ascending run of states (DataCenter's temperatures) are written
        # by zero padding, else by index_copy
        run = outputs == list(range(outputs[0], outputs[0] + len(outputs)))
        self._output_pad = (outputs[0], state_dim - outputs[0] - len(outputs)) if run else None
        in_dim = self._states.shape[1] + self._actions.shape[1] + len(self.shared_states)
        _build_network(self, in_dim, len(self.unit_outputs[0]))

    def features(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Per-unit network inputs before normalisation, ... x units x in_dim."""
        parts = [x.index_select(-1, self._states_flat).unflatten(-1, self._states.shape)]
        if self._actions.shape[1]:
            parts.append(u.index_select(-1, self._actions_flat).unflatten(-1, self._actions.shape))
        if len(self.shared_states):
            shared = x.index_select(-1, self._shared).unsqueeze(-2)
            parts.append(shared.expand(*x.shape[:-1], self.num_units, len(self.shared_states)))
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """NN(x, u): ... x n (zero outside the unit outputs)."""
        # ... x units x in_dim in; every unit of every state one batch of the shared network
        flat = self.network(self.features(x, u)).flatten(-2)  # ... x (units * out_dim)
        if self._output_pad is not None:
            return nn.functional.pad(flat, self._output_pad)
        return x.new_zeros(x.shape).index_copy(-1, self._outputs, flat)

    @torch.no_grad()
    def set_statistics(
        self, x: torch.Tensor, u: torch.Tensor, dxdt: torch.Tensor | None = None
    ) -> None:
        """Input normalisation (and output scale from dx/dt samples), pooled over units."""
        self._set_input_statistics(self.features(x, u).reshape(-1, self.input_shift.shape[0]))
        if dxdt is not None and len(dxdt) > 1:
            scale = dxdt[..., self._outputs].reshape(-1, self.output_scale.shape[0]).std(0)
            self.output_scale.copy_(scale.clamp_min(1e-6))
        self.statistics_set.fill_(True)

    def state_scale(self) -> torch.Tensor:
        """The typical size of each state's dx/dt the network was scaled with (n; 1 where the
        network writes nothing)."""
        scale = self.output_scale.new_ones(self.state_dim)
        scale[self._outputs] = self.output_scale.repeat(self.num_units)
        return scale

    def config(self) -> dict[str, Any]:
        """Constructor arguments, plain types (saved in checkpoints)."""
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "unit_states": self.unit_states,
            "unit_outputs": self.unit_outputs,
            "unit_actions": self.unit_actions,
            "shared_states": self.shared_states,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }
