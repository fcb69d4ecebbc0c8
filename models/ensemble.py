"""Ensembles of hybrid models: K members, their mean, and how much they disagree."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import torch
from torch import nn

from hybridgym.models.hybrid import HybridODE, atomic_torch_save, read_checkpoint
from hybridgym.models.integrators import FIXED_STEP_METHODS, fixed_step
from hybridgym.models.priors import PhysicsPrior
from hybridgym.models.residual import _IN_PLACE, ACTIVATIONS, MLPResidual

ENSEMBLE_FORMAT = "hybridgym.Ensemble"


class Ensemble(nn.Module):
    """K :class:`HybridODE` members with the same state, action and control interval.

    Per-member outputs have a leading member dimension K; ``step`` and ``vector_field`` return
    the member mean, so an ensemble can stand wherever a single model is stepped.
    ``fit`` trains each member on a bootstrap resample of the data with its own seed.

    Args:
        members: at least one HybridODE; all with equal state_dim, action_dim and dt.
    """

    def __init__(self, members: Sequence[HybridODE]) -> None:
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, HybridODE) for m in members):
            raise ValueError("an Ensemble needs a non-empty sequence of HybridODE members")
        first = members[0]
        for i, m in enumerate(members[1:], start=1):
            if (m.state_dim, m.action_dim, m.dt) != (first.state_dim, first.action_dim, first.dt):
                raise ValueError(
                    f"member {i} has (state_dim, action_dim, dt) = "
                    f"{(m.state_dim, m.action_dim, m.dt)}, member 0 has "
                    f"{(first.state_dim, first.action_dim, first.dt)}"
                )
        self.members = nn.ModuleList(members)
        self.state_dim = first.state_dim
        self.action_dim = first.action_dim
        self.dt = first.dt

    @property
    def num_members(self) -> int:
        return len(self.members)

    def _per_member(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Split K x B x n into K tensors, or share a B x n batch with every member."""
        if x.dim() == 3:
            if x.shape[0] != self.num_members:
                raise ValueError(f"expected {self.num_members} member batches, got {x.shape[0]}")
            return list(x.unbind(0))
        return [x] * self.num_members

    def member_vector_fields(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dx/dt of every member: K x B x n (x: B x n shared, or K x B x n)."""
        return torch.stack(
            [m.vector_field(xi, u) for m, xi in zip(self.members, self._per_member(x), strict=True)]
        )

    def member_steps(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Next states of every member: K x B x n (x: B x n shared, or K x B x n).

        Without autograd, members whose residuals are alike :class:`MLPResidual` networks
        (the usual ensemble) step together: their weights are stacked (once per change of
        weights) and every layer is one batched matrix product over the members, instead of
        one small product per member (a planner steps an ensemble thousands of times per
        decision).
        """
        stacked = None if torch.is_grad_enabled() else self._stacked()
        if stacked is not None:
            if x.dim() == 2:
                x = x.expand(self.num_members, *x.shape)
            elif x.shape[0] != self.num_members:
                raise ValueError(f"expected {self.num_members} member batches, got {x.shape[0]}")
            return stacked.step(x, u)
        return torch.stack(
            [m.step(xi, u) for m, xi in zip(self.members, self._per_member(x), strict=True)]
        )

    def _stacked(self) -> _StackedMembers | None:
        """The members' residual networks stacked, rebuilt when a weight changed; None where
        the members cannot step together."""
        # the weights' versions (bumped by every in-place change: optimiser steps,
        # load_state_dict) and storage say whether the stack is current; the list of weights
        # itself is cached too (walking the modules costs more than a planning step's maths)
        members = tuple(id(m) for m in self.members)
        tensors = self.__dict__.get("_stacked_tensors")
        if tensors is None or tensors[0] != members:
            tensors = (members, [*self.parameters(), *self.buffers()])
            self.__dict__["_stacked_tensors"] = tensors
        key = tuple((t._version, t.data_ptr()) for t in tensors[1])
        cached = self.__dict__.get("_stacked_cache")
        if cached is None or cached[0] != key:
            cached = (key, _StackedMembers.build(list(self.members)))
            self.__dict__["_stacked_cache"] = cached
        return cached[1]

    def _apply(self, fn, recurse=True):  # .to(), .double(), ...: the stack is rebuilt
        self.__dict__.pop("_stacked_tensors", None)
        self.__dict__.pop("_stacked_cache", None)
        return super()._apply(fn, recurse)

    def vector_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Member-mean dx/dt, B x n."""
        return self.member_vector_fields(x, u).mean(0)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Member-mean next state, B x n."""
        return self.member_steps(x, u).mean(0)

    def disagreement(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Standard deviation of the members' next states, averaged over state dims; B."""
        steps = self.member_steps(x, u)
        if self.num_members == 1:
            return torch.zeros(steps.shape[1], dtype=steps.dtype, device=steps.device)
        return steps.std(0).mean(-1)

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Each member's open-loop rollout: K x B x (T+1) x n."""
        return torch.stack(
            [
                m.rollout(xi, actions)
                for m, xi in zip(self.members, self._per_member(x0), strict=True)
            ]
        )

    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write every member's config and weights to one file, atomically."""
        payload = {
            "format": ENSEMBLE_FORMAT,
            "version": 1,
            "members": [
                {
                    "config": m.config(),
                    "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
                }
                for m in self.members
            ],
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        priors: Sequence[nn.Module] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> Ensemble:
        """Load an ensemble written by :meth:`save` (weights only, no code executed)."""
        payload = read_checkpoint(path, ENSEMBLE_FORMAT, map_location)
        members = []
        for i, entry in enumerate(payload["members"]):
            given = priors[i] if priors is not None else None
            member = HybridODE.from_config(
                entry["config"], entry["state_dict"], prior=given, source=path
            )
            members.append(member)
        return cls(members).to(map_location)


class _StackedMembers:
    """K members' MLP residuals as stacked weights (K x out x in per layer, the input
    normalisation folded into the first), stepped together: each layer is one ``baddbmm``
    over the members. Priors (if any) still run per member. Built only without autograd."""

    def __init__(self, members: list[HybridODE]) -> None:
        first = members[0]
        self.members = members
        self.residual: MLPResidual = first.residual
        self.dt, self.method, self.substeps = first.dt, first.method, first.substeps
        name = self.residual.activation
        self.activation = _IN_PLACE.get(name) or ACTIVATIONS[name]()  # on a fresh product
        layers = [list(m.residual.net) for m in members]
        linear = [i for i, layer in enumerate(layers[0]) if isinstance(layer, torch.nn.Linear)]
        weights, biases = [], []
        for j, i in enumerate(linear):
            w = torch.stack([member[i].weight for member in layers])  # K x out x in
            b = torch.stack([member[i].bias for member in layers])  # K x out
            if j == 0:  # (z - shift) / scale folded in
                scale = torch.stack([m.residual.input_scale for m in members])
                shift = torch.stack([m.residual.input_shift for m in members])
                w = w / scale[:, None, :]
                b = b - (w @ shift[:, :, None])[..., 0]
            weights.append(w.transpose(1, 2).contiguous())  # K x in x out
            biases.append(b[:, None, :])
        self.weights, self.biases = weights, biases
        out_scale = torch.stack([m.residual.output_scale for m in members])
        mask = torch.stack([m.residual_mask for m in members])
        self.output = (out_scale * mask)[:, None, :]  # K x 1 x n
        self.priors = [m.prior for m in members]
        self.batched_prior = _BatchedPriors.build(self.priors)

    @classmethod
    def build(cls, members: list[HybridODE]) -> _StackedMembers | None:
        first = members[0]
        if not all(
            type(m.residual) is MLPResidual
            and m.residual.config() == first.residual.config()
            and (m.method, m.substeps, m.sensitivity) == (first.method, first.substeps, "direct")
            and m.method in FIXED_STEP_METHODS
            and (m.prior is None) == (first.prior is None)
            for m in members
        ):
            return None
        with torch.no_grad():
            return cls(members)

    def vector_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dx/dt of every member, K x B x n, for x: K x B x n and u: B x m (shared)."""
        k = len(self.members)
        z = self.residual.features(x, u.expand(k, *u.shape) if u.dim() == 2 else u)
        h = z
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if j < len(self.weights) - 1:
                h = self.activation(h)
        out = h * self.output
        if self.batched_prior is not None:
            out = out + self.batched_prior(x, u)
        elif self.priors[0] is not None:
            actions = [u] * k if u.dim() == 2 else list(u)
            out = out + torch.stack(
                [p(xi, ui) for p, xi, ui in zip(self.priors, x, actions, strict=True)]
            )
        return out

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Next states of every member (K x B x n), with each prior's state limits."""
        out = fixed_step(
            self.vector_field, x, u, self.dt, method=self.method, substeps=self.substeps
        )
        if self.batched_prior is not None:
            return self.batched_prior.limit(out)
        limits = [getattr(p, "apply_state_limits", None) for p in self.priors]
        if any(limit is not None for limit in limits):
            out = torch.stack(
                [xi if limit is None else limit(xi) for limit, xi in zip(limits, out, strict=True)]
            )
        return out


class _BatchedPriors:
    """K :class:`PhysicsPrior` members of one class evaluated in one call of the first one's
    ``forward``: the members' batches are flattened into one (K B rows) and every constant
    becomes the vector of the members' values repeated over their rows, so elementwise physics
    code computes all members at once. Used only where that gives each member's own result
    (checked on a test batch whenever the weights change); otherwise the members run one by
    one."""

    def __init__(self, priors: list[PhysicsPrior]) -> None:
        self.template = priors[0]
        names = list(self.template.constant_specs)
        self.values = {n: torch.stack([p.constant(n) for p in priors]) for n in names}  # K
        self.k = len(priors)

    @classmethod
    def build(cls, priors: list[nn.Module | None]) -> _BatchedPriors | None:
        first = priors[0]
        if not isinstance(first, PhysicsPrior) or not all(
            type(p) is type(first)
            and p.constant_specs == first.constant_specs
            and p.state_limits == first.state_limits
            for p in priors
        ):
            return None
        batched = cls(priors)
        generator = torch.Generator().manual_seed(0)
        ref = next(iter([*first.parameters(), *first.buffers()]), torch.zeros(()))
        x = torch.randn(len(priors), 3, first.state_dim, generator=generator)
        u = torch.randn(3, first.action_dim, generator=generator)
        x, u = x.to(ref.device, ref.dtype), u.to(ref.device, ref.dtype)
        try:
            together = batched(x, u)
            alone = torch.stack([p(xi, u) for p, xi in zip(priors, x, strict=True)])
        except Exception:  # code that needs scalar constants: the members run one by one
            return None
        if together.shape != alone.shape or not torch.allclose(
            together, alone, rtol=1e-5, atol=1e-6, equal_nan=True
        ):
            return None
        return batched

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Every member's dx/dt, K x B x n, for x: K x B x n and u: B x m or K x B x m."""
        k, b, n = x.shape
        u = u.expand(k, *u.shape) if u.dim() == 2 else u
        rows = {name: v[:, None].expand(k, b).reshape(k * b) for name, v in self.values.items()}
        prior = self.template
        # the instance attributes shadow the methods for this call only
        prior.__dict__["constants"] = lambda: rows
        prior.__dict__["constant"] = rows.__getitem__
        try:
            out = prior(x.reshape(k * b, n), u.reshape(k * b, u.shape[-1]))
        finally:
            del prior.__dict__["constants"], prior.__dict__["constant"]
        return out.reshape(k, b, n)

    def limit(self, x: torch.Tensor) -> torch.Tensor:
        """The prior's state limits (the same for every member) on K x B x n states."""
        return self.template.apply_state_limits(x)
