"""Known physics with named, learnable physical constants."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridgym.models.arrays import lasting_tensor


@dataclass(frozen=True)
class ConstantSpec:
    """How one physical constant is stored.

    Attributes:
        name: a Python identifier, e.g. ``"alpha"``.
        positive: stored as log(value), so the value stays > 0 under any gradient step.
        bounds: (low, high); stored through a sigmoid, so the value stays strictly inside.
        learnable: a trained parameter (True) or a fixed buffer (False).
    """

    name: str
    positive: bool = False
    bounds: tuple[float, float] | None = None
    learnable: bool = True

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"constant name must be a Python identifier, got {self.name!r}")
        if self.bounds is not None:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(
                    f"bounds of constant {self.name!r} must be finite with low < high, "
                    f"got {self.bounds!r}"
                )
            if self.positive and low < 0:
                raise ValueError(
                    f"constant {self.name!r} is positive but its lower bound is {low}; "
                    "use a lower bound >= 0"
                )

    def to_raw(self, value: float) -> float:
        """Map a physical value to its unconstrained storage."""
        if not math.isfinite(value):
            raise ValueError(f"constant {self.name!r} must be finite, got {value!r}")
        if self.bounds is not None:
            low, high = self.bounds
            if not low < value < high:
                raise ValueError(
                    f"constant {self.name!r} = {value} lies outside its bounds ({low}, {high}); "
                    "the value must be strictly inside"
                )
            p = (value - low) / (high - low)
            return math.log(p) - math.log1p(-p)
        if self.positive:
            if value <= 0:
                raise ValueError(f"constant {self.name!r} must be > 0, got {value}")
            return math.log(value)
        return float(value)

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Map storage back to the physical value (differentiable)."""
        if self.bounds is not None:
            low, high = self.bounds
            return low + (high - low) * torch.sigmoid(raw)
        if self.positive:
            return torch.exp(raw)
        return raw


class PhysicsPrior(nn.Module):
    """Base class of the known-physics part of a hybrid model.

    A subclass declares its constants with :meth:`add_constant` in ``__init__`` and implements
    :meth:`forward`, which maps a batch of states and actions to time derivatives. Constants are
    read with :meth:`constants` inside ``forward`` (differentiable values, reparametrised so that
    positivity and bounds hold without clamping).

    Any ``nn.Module`` with the same ``forward`` signature can serve as a prior; this class adds
    the named constants, :meth:`physical_parameters` and known hard limits on state variables
    (:meth:`limit_state`, e.g. a speed limiter), which :class:`HybridODE` enforces at the end of
    every control interval.

    Args:
        state_dim: n, the number of state variables.
        action_dim: m, the number of action variables.
    """

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        for label, value in (("state_dim", state_dim), ("action_dim", action_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{label} must be a non-negative int, got {value!r}")
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.raw = nn.ParameterDict()
        self._specs: dict[str, ConstantSpec] = {}
        #: how to rebuild this prior when a checkpoint is loaded (see ``register_prior_builder``);
        #: ``Task.make_prior`` fills it, user priors are passed to ``HybridODE.load(prior=...)``
        self.rebuild_spec: dict[str, Any] | None = None
        self._state_limits: dict[int, tuple[float, float]] = {}
        self._limit_cache: dict[tuple[torch.dtype, torch.device], tuple[Any, Any]] = {}

    def add_constant(
        self,
        name: str,
        value: float,
        *,
        positive: bool = False,
        bounds: tuple[float, float] | None = None,
        learnable: bool = True,
    ) -> None:
        """Declare a physical constant with its initial value (see :class:`ConstantSpec`)."""
        if name in self._specs:
            raise ValueError(f"constant {name!r} is already declared")
        spec = ConstantSpec(name, positive=positive, bounds=bounds, learnable=learnable)
        raw = torch.tensor(spec.to_raw(float(value)), dtype=torch.get_default_dtype())
        if learnable:
            self.raw[name] = nn.Parameter(raw)
        else:
            self.register_buffer(f"fixed_{name}", raw)
        self._specs[name] = spec

    def limit_state(self, dim: int, low: float = -math.inf, high: float = math.inf) -> None:
        """Declare that state variable ``dim`` never leaves [low, high] (known physics such as a
        speed limiter or an end stop); the model clamps it at the end of each control interval.
        """
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < self.state_dim:
            raise ValueError(f"dim must be a state index in [0, {self.state_dim}), got {dim!r}")
        low, high = float(low), float(high)
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"state limits need low < high, got [{low}, {high}] for dim {dim}")
        self._state_limits[dim] = (low, high)
        self._limit_cache.clear()

    @property
    def state_limits(self) -> dict[int, tuple[float, float]]:
        """Declared hard limits, state index -> (low, high)."""
        return dict(self._state_limits)

    def apply_state_limits(self, x: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
        """Clamp a batch of states (B x n) into the declared limits (x itself when none);
        ``in_place`` overwrites ``x`` (no new tensor on hot paths without autograd)."""
        if not self._state_limits:
            return x
        key = (x.dtype, x.device)
        if key not in self._limit_cache:
            low, high = [-math.inf] * self.state_dim, [math.inf] * self.state_dim
            for dim, (lo, hi) in self._state_limits.items():
                low[dim], high[dim] = lo, hi
            self._limit_cache[key] = (
                lasting_tensor(low, x.dtype, x.device),
                lasting_tensor(high, x.dtype, x.device),
            )
        low, high = self._limit_cache[key]
        return x.clamp_(low, high) if in_place else torch.clamp(x, low, high)

    def constant(self, name: str) -> torch.Tensor:
        """The current value of one constant, a 0-d tensor."""
        try:
            spec = self._specs[name]
        except KeyError:
            raise KeyError(
                f"unknown constant {name!r}; this prior has {sorted(self._specs)}"
            ) from None
        raw = self.raw[name] if spec.learnable else getattr(self, f"fixed_{name}")
        return spec.from_raw(raw)

    def constants(self) -> dict[str, torch.Tensor]:
        """All constants by name, as differentiable 0-d tensors.

        With gradients off (planning, rollouts in an env) the values are cached until a
        parameter changes, which saves a few small tensor ops per vector-field evaluation.
        """
        if torch.is_grad_enabled():
            return {name: self.constant(name) for name in self._specs}
        key = tuple((id(p), p._version) for p in self.raw.values())
        key += tuple((id(b), b._version) for b in self.buffers())
        cached = self.__dict__.get("_constants_cache")
        if cached is None or cached[0] != key:
            cached = (key, {name: self.constant(name) for name in self._specs})
            self.__dict__["_constants_cache"] = cached
        return cached[1]

    def physical_parameters(self) -> dict[str, float]:
        """All constants by name, as plain floats (for reports)."""
        with torch.no_grad():
            return {name: float(value) for name, value in self.constants().items()}

    @property
    def constant_specs(self) -> dict[str, ConstantSpec]:
        """How each constant is stored, by name."""
        return dict(self._specs)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Time derivative of the state.

        Args:
            x: states, B x n.
            u: actions, B x m.

        Returns:
            dx/dt, B x n.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, u)")

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" for k, v in self.physical_parameters().items())
        limits = "".join(
            f", x{d} in [{lo:g}, {hi:g}]" for d, (lo, hi) in self._state_limits.items()
        )
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, {params}{limits}"
