"""Fit a hybrid model to trajectories: multiple shooting over windows with a horizon curriculum.

Every window of ``h`` steps starts from a recorded state and is rolled out under the recorded
actions; the loss compares the rollout with the recording through the angle-aware state
difference, scaled per state dimension. Windows grow from one step to ``horizon`` over the first
part of training (oscillatory systems and the identifiability of physical constants both need
it). Adam, then optional L-BFGS; an optional penalty on the residual's size keeps the physical
constants identifiable (APHYNITY, Yin et al. 2021).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridgym.models.arrays import wrap_angle
from hybridgym.models.ensemble import Ensemble
from hybridgym.models.hybrid import SENSITIVITIES, HybridODE


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


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"FitConfig.{name} must be an int >= {minimum}, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"FitConfig.{name} must be a number >= 0, got {value!r}")


def _finite_non_negative(name: str, value: Any) -> None:
    _non_negative(name, value)
    if not math.isfinite(value):
        raise ValueError(f"FitConfig.{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class FitConfig:
    """How to fit (all fields have working defaults).

    Attributes:
        horizon: window length in steps at the end of the curriculum (capped per episode, so
            a horizon as long as the episode works).
        iterations: Adam steps.
        learning_rate: Adam learning rate.
        lr_schedule: ``cosine`` (decay to 5% of ``learning_rate`` over ``iterations``) or
            ``constant``.
        batch_size: windows per Adam step; None uses every window.
        curriculum: fraction of ``iterations`` over which windows grow from 1 step to
            ``horizon`` (0 trains at ``horizon`` from the start).
        lbfgs_iterations: full-batch L-BFGS iterations at ``horizon`` after Adam (0 = none).
        residual_penalty: weight of the mean squared (normalised) residual over the data.
        validation_fraction: episodes held out for validation and early stopping (a single
            episode is never split: then there is no early stopping).
        eval_every: Adam steps between validation checks.
        patience: validation checks without improvement before stopping (None: never).
        sensitivity: ``direct`` or ``adjoint`` gradients through the solver.
        seed: seeds window sampling and the validation split.
        progress: show a progress bar.
        weight_decay: decoupled weight decay (AdamW) on the residual's weights only; the
            physical constants are never decayed.
        grad_clip: clip the gradient norm (None: no clipping).
        validation_horizons: k of the k-step prediction errors reported.
        huber_delta: None for a squared loss; else a Huber loss, quadratic up to this size of
            error (in units of each state's typical one-step change) and linear beyond, so a
            few transitions the model cannot represent (a saturation, a glitch in the log)
            pull less.
    """

    horizon: int = 10
    iterations: int = 1_000
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"
    batch_size: int | None = 256
    curriculum: float = 0.3
    lbfgs_iterations: int = 0
    residual_penalty: float = 0.0
    validation_fraction: float = 0.2
    eval_every: int = 50
    patience: int | None = 10
    sensitivity: str = "direct"
    seed: int = 0
    progress: bool = True
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    validation_horizons: tuple[int, ...] = (1, 10)
    huber_delta: float | None = None

    def __post_init__(self) -> None:
        _positive_int("horizon", self.horizon)
        _positive_int("iterations", self.iterations, 0)
        _positive_int("lbfgs_iterations", self.lbfgs_iterations, 0)
        _positive_int("eval_every", self.eval_every)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.patience is not None:
            _positive_int("patience", self.patience)
        _positive_int("seed", self.seed, 0)  # numpy's generators take seeds >= 0
        for name in ("learning_rate", "residual_penalty", "weight_decay"):
            _finite_non_negative(name, getattr(self, name))
        if not self.learning_rate > 0:
            raise ValueError(f"FitConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        _non_negative("curriculum", self.curriculum)
        if self.curriculum > 1:
            raise ValueError(f"FitConfig.curriculum must be in [0, 1], got {self.curriculum!r}")
        _non_negative("validation_fraction", self.validation_fraction)
        if self.validation_fraction >= 1:
            raise ValueError(
                f"FitConfig.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.grad_clip is not None:
            _non_negative("grad_clip", self.grad_clip)
            if self.grad_clip == 0:
                raise ValueError(
                    "FitConfig.grad_clip must be > 0 (0 would zero every gradient); "
                    "use None for no clipping"
                )
        if not isinstance(self.progress, bool):
            raise TypeError(f"FitConfig.progress must be True or False, got {self.progress!r}")
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(
                f"FitConfig.sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}"
            )
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"FitConfig.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if self.huber_delta is not None:
            _finite_non_negative("huber_delta", self.huber_delta)
            if self.huber_delta == 0:
                raise ValueError("FitConfig.huber_delta must be > 0 or None")
        horizons = self.validation_horizons
        if isinstance(horizons, str) or not isinstance(horizons, Sequence):
            raise TypeError(
                f"FitConfig.validation_horizons must be a tuple of ints >= 1, e.g. (1, 10), "
                f"got {horizons!r}"
            )
        object.__setattr__(self, "validation_horizons", tuple(horizons))
        if not self.validation_horizons:
            raise ValueError("FitConfig.validation_horizons must name at least one horizon")
        for k in self.validation_horizons:
            _positive_int("validation_horizons entry", k)


@dataclass
class FitReport:
    """What happened in a fit.

    Attributes:
        iterations: Adam steps taken (fewer than configured after early stopping).
        history: per logged step: iteration, horizon, train loss.
        validation_history: per validation check: iteration, validation loss.
        validation_errors: k -> per-state RMSE of k-step predictions (validation episodes,
            or the training episodes when there is no validation split).
        physical_parameters: the prior's constants after the fit.
        wall_time: seconds.
        best_iteration: the iteration whose weights were kept.
        stopped_early: early stopping ended Adam.
        non_finite_steps: Adam steps skipped because the loss was NaN or infinite.
        members: per-member reports of an ensemble fit.
    """

    iterations: int
    history: list[dict[str, float]]
    validation_history: list[dict[str, float]]
    validation_errors: dict[int, dict[str, float]]
    physical_parameters: dict[str, float]
    wall_time: float
    best_iteration: int
    stopped_early: bool
    non_finite_steps: int = 0
    members: list[FitReport] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else math.nan


class _Windows:
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
        self.first = torch.cat(firsts).to(device)  # the first step of each episode
        self._valid: dict[int, torch.Tensor] = {}

    def valid(self, h: int) -> torch.Tensor:
        """Indices (into start) of windows for horizon h: every start with h steps left, and
        the first step of episodes shorter than h (their window is the whole episode)."""
        if h not in self._valid:  # asked every iteration: computed once per horizon
            short_episode = self.first & (self.remaining < h)
            self._valid[h] = torch.nonzero((self.remaining >= h) | short_episode).squeeze(1)
        return self._valid[h]

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


def _rollout_errors(
    model: HybridODE,
    windows: _Windows,
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


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (err.mean(-1) * mask).sum() / mask.sum().clamp_min(1.0)


def _penalty(
    model: HybridODE, x: torch.Tensor, windows: _Windows, which: torch.Tensor, weight: float
) -> torch.Tensor:
    if weight == 0 or model.residual is None:
        return x.new_zeros(())
    u = windows.u[windows.start[which]]
    r = model.residual_field(x, u)
    scale_of = getattr(model.residual, "state_scale", None)  # the residual's dx/dt scale, n
    out_scale = scale_of() if scale_of is not None else None
    if out_scale is not None:
        r = r / out_scale
    return weight * (r**2).mean()


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
    windows = _Windows(data.episodes, data.angle_dims, dtype, device)
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


def _horizon_at(it: int, config: FitConfig) -> int:
    ramp = config.curriculum * config.iterations
    if ramp <= 0 or it >= ramp:
        return config.horizon
    return 1 + int((config.horizon - 1) * it / ramp)


def _set_residual_statistics(model: HybridODE, windows: _Windows, dt: float) -> None:
    residual = model.residual
    if residual is None or not hasattr(residual, "set_statistics"):
        return
    if bool(getattr(residual, "statistics_set", torch.tensor(False))):
        return  # warm start: keep the normalisation the weights were trained with
    s = windows.start
    x, u = windows.x[s], windows.u[s]
    dxdt = windows.difference(windows.x[s + 1], x) / dt
    residual.set_statistics(x, u, dxdt)


def fit(
    model: HybridODE | Ensemble,
    data: DatasetLike,
    config: FitConfig | None = None,
    *,
    validation: DatasetLike | None = None,
) -> FitReport:
    """Fit ``model`` to ``data`` in place, starting from its current weights (warm start).

    Args:
        model: a :class:`HybridODE`, or an :class:`Ensemble` (each member is fitted on a
            bootstrap resample of ``data`` with seed ``config.seed + k``).
        data: a ``TrajectoryDataset`` (or anything with its ``episodes``, ``angle_dims``,
            ``state_names``, ``split`` and ``bootstrap``).
        config: :class:`FitConfig`; defaults when None.
        validation: held-out data; when None, ``config.validation_fraction`` of the episodes.

    Returns:
        A :class:`FitReport`. The model keeps the weights with the best validation loss.
    """
    config = config or FitConfig()
    if isinstance(model, Ensemble):
        start = time.perf_counter()
        reports = []
        for k, member in enumerate(model.members):
            member_config = dataclasses.replace(config, seed=config.seed + k)
            reports.append(
                fit(member, data.bootstrap(config.seed + k), member_config, validation=validation)
            )
        merged = copy.copy(reports[0])
        merged.members = reports
        merged.wall_time = time.perf_counter() - start
        merged.validation_errors = _mean_errors([r.validation_errors for r in reports])
        return merged
    if not isinstance(model, HybridODE):
        raise TypeError(f"fit needs a HybridODE or an Ensemble, got {type(model).__name__}")
    return _fit_one(model, data, config, validation)


def _mean_errors(errors: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    return {
        k: {name: float(np.mean([e[k][name] for e in errors])) for name in errors[0][k]}
        for k in errors[0]
    }


def _fit_one(
    model: HybridODE, data: DatasetLike, config: FitConfig, validation: DatasetLike | None
) -> FitReport:
    start_time = time.perf_counter()
    if len(data.episodes) and np.asarray(data.episodes[0].states).shape[1] != model.state_dim:
        raise ValueError(
            f"the data has {np.asarray(data.episodes[0].states).shape[1]} state variables "
            f"{tuple(data.state_names)}, the model {model.state_dim}"
        )
    _check_sampling(data, model.dt)
    if validation is None and config.validation_fraction > 0 and len(data.episodes) > 1:
        train, validation = data.split(config.validation_fraction, seed=config.seed)
        if not len(validation.episodes):
            validation = None
    else:
        train = data
    param = next(iter(model.parameters()), None)
    if param is None:
        raise ValueError("the model has no parameters to fit")
    dtype, device = param.dtype, param.device
    windows = _Windows(train.episodes, data.angle_dims, dtype, device)
    val_windows = (
        _Windows(validation.episodes, data.angle_dims, dtype, device) if validation else None
    )
    _set_residual_statistics(model, windows, model.dt)
    steps = windows.difference(windows.x[windows.start + 1], windows.x[windows.start])
    scale = steps.std(0) if len(steps) > 1 else steps.abs().mean(0)
    scale = scale.clamp_min(1e-6 * float(scale.max().clamp_min(1e-12)) + 1e-12)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter of the model requires grad; nothing to fit")
    residual_params = set(model.residual.parameters()) if model.residual is not None else set()
    decayed = [p for p in params if p in residual_params]
    plain = [p for p in params if p not in residual_params]
    groups = [{"params": plain, "weight_decay": 0.0}]
    if decayed:
        groups.append({"params": decayed, "weight_decay": config.weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    # window sampling on the data's device (on the CPU: the same stream as ever)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(config.iterations, 1), eta_min=0.05 * config.learning_rate
        )
        if config.lr_schedule == "cosine"
        else None
    )
    sensitivity_before = model.sensitivity
    model.sensitivity = config.sensitivity

    def batch_loss(which: torch.Tensor, h: int, wins: _Windows) -> torch.Tensor:
        err, mask, x0 = _rollout_errors(model, wins, which, h, scale, config.huber_delta)
        return _masked_mean(err, mask) + _penalty(model, x0, wins, which, config.residual_penalty)

    def validation_loss() -> float:
        with torch.no_grad():
            which = val_windows.valid(config.horizon)
            return float(batch_loss(which, config.horizon, val_windows))

    history: list[dict[str, float]] = []
    val_history: list[dict[str, float]] = []
    best = (math.inf, copy.deepcopy(model.state_dict()), 0)
    bad_checks, non_finite, stopped_early, it = 0, 0, False, 0
    ramp_end = int(config.curriculum * config.iterations)
    bar = tqdm(total=config.iterations, desc="fit", disable=not config.progress, leave=False)
    try:
        for it in range(1, config.iterations + 1):
            h = _horizon_at(it - 1, config)
            valid = windows.valid(h)
            if config.batch_size is not None and len(valid) > config.batch_size:
                pick = torch.randperm(len(valid), generator=generator, device=device)
                valid = valid[pick[: config.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(valid, h, windows)
            # the one read of the device per Adam step: a non-finite loss skips the step
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                non_finite += 1
                if non_finite >= 20:
                    break
                continue
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            if it % 10 == 0 or it == 1:
                history.append({"iteration": it, "horizon": h, "loss": loss_value})
                bar.set_postfix(loss=f"{loss_value:.3g}", h=h)
            bar.update(1)
            if val_windows is not None and it % config.eval_every == 0 and it >= ramp_end:
                v = validation_loss()
                val_history.append({"iteration": it, "loss": v})
                if v < best[0]:
                    best, bad_checks = (v, copy.deepcopy(model.state_dict()), it), 0
                else:
                    bad_checks += 1
                    if config.patience is not None and bad_checks >= config.patience:
                        stopped_early = True
                        break
    finally:
        bar.close()
    if val_windows is not None and best[0] < math.inf:
        model.load_state_dict(best[1])  # else no check ran: the last weights stay
    checked = val_windows is not None and best[0] < math.inf
    best_iteration = best[2] if checked else it
    if config.lbfgs_iterations:
        _lbfgs(model, params, windows, config, batch_loss)
        best_iteration = it
        if val_windows is not None:
            val_history.append({"iteration": it, "loss": validation_loss()})
    model.sensitivity = sensitivity_before
    report_data = validation if validation is not None else train
    return FitReport(
        iterations=it,
        history=history,
        validation_history=val_history,
        validation_errors=prediction_errors(model, report_data, config.validation_horizons),
        physical_parameters=_physical(model),
        wall_time=time.perf_counter() - start_time,
        best_iteration=best_iteration,
        stopped_early=stopped_early,
        non_finite_steps=non_finite,
    )


def _lbfgs(model, params, windows, config, batch_loss) -> None:
    which = windows.valid(config.horizon)
    if config.batch_size is not None and len(which) > 16 * config.batch_size:
        generator = torch.Generator().manual_seed(config.seed + 1)
        which = which[torch.randperm(len(which), generator=generator)[: 16 * config.batch_size]]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=config.lbfgs_iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    before = copy.deepcopy(model.state_dict())

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(which, config.horizon, windows)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    with torch.no_grad():
        loss_before = float(batch_loss(which, config.horizon, windows))
    optimizer.step(closure)
    with torch.no_grad():
        loss_after = float(batch_loss(which, config.horizon, windows))
    if not math.isfinite(loss_after) or loss_after > loss_before:
        model.load_state_dict(before)  # L-BFGS made it worse: keep the Adam result


def _physical(model: HybridODE) -> dict[str, float]:
    prior = model.prior
    if prior is not None and hasattr(prior, "physical_parameters"):
        return prior.physical_parameters()
    return {}


def _check_sampling(data: DatasetLike, dt: float) -> None:
    for i, ep in enumerate(data.episodes):
        steps = np.diff(np.asarray(ep.times, dtype=np.float64))
        if steps.size and not np.allclose(steps, dt, rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"episode {i}: times are spaced {steps.min():.6g}..{steps.max():.6g}, but the "
                f"model's control interval dt is {dt:g}; resample the data or build the model "
                "with the data's dt (irregular sampling is not supported yet)"
            )
