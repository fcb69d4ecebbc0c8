"""Ensembles of hybrid models: K members, their mean, and how much they disagree."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import torch
from torch import nn

from hybridgym.models.hybrid import HybridODE, atomic_torch_save, read_checkpoint

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
        """Next states of every member: K x B x n (x: B x n shared, or K x B x n)."""
        return torch.stack(
            [m.step(xi, u) for m, xi in zip(self.members, self._per_member(x), strict=True)]
        )

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
