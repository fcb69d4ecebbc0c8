"""Multiple shooting over windows of recorded data: the machinery ``fit`` optimises and
``prediction_errors`` measures with.

A *window* starts at a recorded state and is rolled out under the recorded actions for ``h``
steps; its error is the angle-aware state difference to the recording, divided per state by
the typical one-step change, so every state counts alike whatever its units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from hybridgym.models.arrays import wrap_angle
from hybridgym.models.ensemble import Ensemble
from hybridgym.models.hybrid import HybridODE


class EpisodeLike(Protocol):
    states: np.ndarray  # (T+1) x n
    actions: np.ndarray  # T x m
    times: np.ndarray  # T+1


class DatasetLike(Protocol):
    """What ``fit`` needs from a dataset (``TrajectoryDataset`` has it)."""

    episodes: Sequence[EpisodeLike]
    angle_dims: tuple[int, ...]
    state_names: tuple[str, ...]

    def split(self, validation_fraction: float = 0.2, seed: int = 0) -> tuple[Any, Any]: ...

    def bootstrap(self, seed: int) -> Any: ...


class Windows:
    """All recorded states and actions of a dataset as flat tensors on the model's device
    (copied there once), with window indexing that stays on the device."""

    def __init__(
        self,
        episodes: Sequence[EpisodeLike],
        angle_dims: Sequence[int],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if not episodes:
            raise ValueError("fit needs at least one episode of data")
        states, actions, starts, remaining, ends, firsts = [], [], [], [], [], []
        offset = 0
        for ep in episodes:
            x = torch.tensor(np.asarray(ep.states), dtype=dtype)  # copies (episodes are read-only)
            u = torch.tensor(np.asarray(ep.actions), dtype=dtype)
            steps = u.shape[0]
            states.append(x)
            actions.append(torch.cat([u, u[-1:]]))  # pad: same indexing as the states
            local = torch.arange(steps)
            starts.append(offset + local)
            firsts.append(local == 0)
            remaining.append(steps - local)
            ends.append(torch.full((steps,), offset + steps))
            offset += steps + 1
        self.x = torch.cat(states).to(device)
        self.u = torch.cat(actions).to(device)
        self.start = torch.cat(starts).to(device)
        self.remaining = torch.cat(remaining).to(device)
        self.end = torch.cat(ends).to(device)
        self.angle_dims = list(angle_dims)
        # a tensor index on the device: a Python list would be copied there on every use
        self.angle_index = torch.tensor(self.angle_dims, dtype=torch.long, device=device)
        self.num_steps = len(self.start)
        #: the longest episode, in steps
        self.longest = int(max(len(np.asarray(ep.actions)) for ep in episodes))
        self.first = torch.cat(firsts).to(device)  # the first step of each episode
        self._valid: dict[int, torch.Tensor] = {}

    def valid(self, h: int) -> torch.Tensor:
        """Indices (into start) of windows for horizon h: every start with h steps left, and
        the first step of episodes shorter than h (their window is the whole episode)."""
        if h not in self._valid:  # asked every iteration: computed once per horizon
            short_episode = self.first & (self.remaining < h)
            self._valid[h] = torch.nonzero((self.remaining >= h) | short_episode).squeeze(1)
        return self._valid[h]

    def spread(self, h: int, count: int) -> torch.Tensor:
        """At most ``count`` windows of horizon h, evenly spread over the data (a fixed set)."""
        which = self.valid(h)
        if count >= len(which):
            return which
        pick = torch.linspace(0, len(which) - 1, count, device=which.device).round().long()
        return which[pick]

    def gather(self, which: torch.Tensor, h: int) -> tuple[torch.Tensor, ...]:
        """x0 (W x n), actions (W x h x m), targets (W x h x n), mask (W x h)."""
        s = self.start[which]
        k = torch.arange(1, h + 1, device=s.device)
        idx = torch.minimum(s[:, None] + k[None, :], self.end[which][:, None])
        mask = (k[None, :] <= self.remaining[which][:, None]).to(self.x.dtype)
        u_idx = torch.minimum(s[:, None] + k[None, :] - 1, self.end[which][:, None] - 1)
        return self.x[s], self.u[u_idx], self.x[idx], mask

    def difference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        if self.angle_dims:
            diff = diff.clone()
            diff[..., self.angle_index] = wrap_angle(diff[..., self.angle_index])
        return diff

    def step_scale(self) -> torch.Tensor:
        """The typical one-step change of each state (n): the unit of the fit's errors."""
        steps = self.difference(self.x[self.start + 1], self.x[self.start])
        scale = steps.std(0) if len(steps) > 1 else steps.abs().mean(0)
        return scale.clamp_min(1e-6 * float(scale.max().clamp_min(1e-12)) + 1e-12)


def rollout_errors(
    model: HybridODE,
    windows: Windows,
    which: torch.Tensor,
    h: int,
    scale: torch.Tensor,
    huber_delta: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled squared errors (W x h x n; Huber-ised beyond ``huber_delta``), mask (W x h) and
    window start states."""
    x0, actions, targets, mask = windows.gather(which, h)
    x = x0
    preds = []
    for k in range(h):
        x = model.step(x, actions[:, k])
        preds.append(x)
    pred = torch.stack(preds, dim=1)
    diff = windows.difference(pred, targets) / scale
    if huber_delta is None:
        return diff**2, mask, x0
    err = torch.nn.functional.huber_loss(
        diff, torch.zeros_like(diff), reduction="none", delta=huber_delta
    )
    return 2.0 * err, mask, x0


def masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (err.mean(-1) * mask).sum() / mask.sum().clamp_min(1.0)


def residual_size(
    model: HybridODE, x: torch.Tensor, windows: Windows, which: torch.Tensor
) -> torch.Tensor:
    """Mean squared residual dx/dt at the window starts, each state divided by the residual's
    own output scale (its typical dx/dt), so the size is in the same units for every state."""
    if model.residual is None:
        return x.new_zeros(())
    u = windows.u[windows.start[which]]
    r = model.residual_field(x, u)
    scale_of = getattr(model.residual, "state_scale", None)  # the residual's dx/dt scale, n
    out_scale = scale_of() if scale_of is not None else None
    if out_scale is not None:
        r = r / out_scale
    return (r**2).mean()


def set_residual_statistics(model: HybridODE, windows: Windows, dt: float) -> None:
    """Set the residual's input normalisation and output scale from the data, unless set by an
    earlier fit (a warm start keeps the normalisation its weights were trained with)."""
    residual = model.residual
    if residual is None or not hasattr(residual, "set_statistics"):
        return
    if bool(getattr(residual, "statistics_set", torch.tensor(False))):
        return
    s = windows.start
    x, u = windows.x[s], windows.u[s]
    dxdt = windows.difference(windows.x[s + 1], x) / dt
    residual.set_statistics(x, u, dxdt)


@torch.no_grad()
def prediction_errors(
    model: HybridODE | Ensemble, data: DatasetLike, horizons: Sequence[int] = (1, 10)
) -> dict[int, dict[str, float]]:
    """Root-mean-square error of k-step open-loop predictions from every recorded state.

    Returns:
        k -> {state name: RMSE}; angle errors are wrapped. Windows longer than an episode are
        cut at its end.
    """
    dtype = next(iter(model.parameters()), torch.zeros(())).dtype
    device = next(iter(model.parameters()), torch.zeros(())).device
    windows = Windows(data.episodes, data.angle_dims, dtype, device)
    out = {}
    for h in horizons:
        which = windows.valid(h)
        x0, actions, targets, mask = windows.gather(which, h)
        x = x0
        for k in range(h):
            x = model.step(x, actions[:, k])
        last = (mask.sum(1) - 1).long()  # the k-th step, or the episode's last
        target = targets[torch.arange(len(which), device=targets.device), last]
        if (mask.sum(1) == h).any():  # prefer full windows when there are any
            full = mask.sum(1) == h
            x, target = x[full], target[full]
        rmse = windows.difference(x, target).pow(2).mean(0).sqrt()
        out[int(h)] = {name: float(v) for name, v in zip(data.state_names, rmse, strict=True)}
    return out
