"""Fit a hybrid model to trajectories: multiple shooting over windows, with settings chosen
from the data unless given.

Every window of ``h`` steps starts from a recorded state and is rolled out under the recorded
actions; the loss compares the rollout with the recording through the angle-aware state
difference, scaled per state dimension (:mod:`hybridgym.models.shooting`).

``fit(model, data)`` with the default :class:`FitConfig` chooses everything itself (each
choice and its reason end up in :attr:`FitReport.choices`; docs/models.md gives the
rationale):

1. **constants first**: a fresh model's physical constants are fitted alone (the residual
   switched off, L-BFGS over growing windows), so the network starts from what the physics
   cannot explain instead of absorbing part of the physics;
2. **horizon**: one-step windows (exact and cheap where data are clean) and 10-step windows
   (robust to measurement noise) are both tried when episodes can be held out, and the one
   that predicts the held-out episodes best over ``max(validation_horizons)`` steps is kept;
3. **batch**: full batch while it is cheap, else a fixed amount of work per step;
4. **learning rate and length**: Adam at 1e-2, halved whenever the error stops improving
   (the best weights restored), until it has been halved five times or a work budget is spent;
5. **polish**: L-BFGS on a fixed set of windows, kept only if it lowers the loss;
6. **residual penalty**: a small weight on the network's size (0.01 of the normalised dx/dt),
   so that among equally good fits the one that explains most with the physics wins.

Any field set explicitly is used as given; ``iterations=N`` runs exactly N Adam steps with the
cosine schedule (the behaviour before the automatic choices).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridgym.models.ensemble import Ensemble
from hybridgym.models.hybrid import SENSITIVITIES, HybridODE
from hybridgym.models.shooting import (
    DatasetLike,
    Windows,
    masked_mean,
    prediction_errors,
    residual_size,
    rollout_errors,
    set_residual_statistics,
)

__all__ = ["AUTO", "FitConfig", "FitReport", "fit", "prediction_errors"]

#: the value of a :class:`FitConfig` field that is chosen from the data and the model
AUTO = "auto"

# --- the automatic choices (docs/models.md, "How fit chooses") ----------------------------------
#: Adam's learning rate; halved on every plateau
AUTO_LEARNING_RATE = 1e-2
#: the long window tried next to one-step windows (capped at the longest episode)
AUTO_LONG_HORIZON = 10
#: window-steps per Adam step: full batch up to this many, else windows of about this much work
FULL_BATCH_WORK = 4_096
#: window-steps per Adam step per recorded transition at horizons > 1 (a random subset of
#: windows, so a step costs about twice a one-step full batch)
WORK_PER_TRANSITION = 2
#: work of Adam per horizon tried, in window-steps, which bounds a fit's time; a step of h
#: model steps on B windows costs about h * (B + STEP_OVERHEAD) (one CPU thread)
AUTO_WORK_BUDGET = 1_200_000
STEP_OVERHEAD = 300
AUTO_MIN_ITERATIONS, AUTO_MAX_ITERATIONS = 300, 3_000
#: L-BFGS iterations of the polish, and the window-steps of its fixed set of windows
AUTO_LBFGS_ITERATIONS = 200
LBFGS_WORK = 8_192
#: weight of the residual's mean squared normalised size
AUTO_RESIDUAL_PENALTY = 0.01
#: plateau: checks without a relative improvement of PLATEAU_TOLERANCE halve the rate;
#: the fit stops once the rate has been halved PLATEAU_HALVINGS times
PLATEAU_CHECKS = 4
PLATEAU_TOLERANCE = 1e-2
#: improvements below this (in units of a squared one-step change) are rounding, not progress
PLATEAU_FLOOR = 1e-9
PLATEAU_HALVINGS = 5
#: Adam steps before the first plateau check (the window curriculum ramps over them)
AUTO_RAMP = 300
#: constants-first: L-BFGS iterations per window length (1, 2, 4 steps)
PHYSICS_FIRST_ITERATIONS = 50

_SCHEDULES = ("auto", "plateau", "cosine", "constant")


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


def _auto_or(name: str, value: Any, check: Callable[[], None], what: str) -> None:
    """``value`` is ``"auto"`` or passes ``check``; any other string is named as an error."""
    if isinstance(value, str):
        if value != AUTO:
            raise ValueError(f"FitConfig.{name} must be {what} or 'auto', got {value!r}")
        return
    check()


@dataclass(frozen=True)
class FitConfig:
    """How to fit. Every field has a working default; ``"auto"`` fields are chosen from the
    data and the model (see the module docstring) and reported in :attr:`FitReport.choices`.

    Attributes:
        horizon: window length in steps at the end of the curriculum (capped per episode, so
            a horizon as long as the episode works). ``auto``: 1 and 10 are both tried when
            episodes can be held out, the better on held-out data kept; else 10.
        iterations: Adam steps. ``auto``: until the error stops improving (the learning rate
            halved ``PLATEAU_HALVINGS`` times) or a work budget is spent (at most 3,000).
        learning_rate: Adam's (initial) learning rate; ``auto``: 1e-2. Physical constants
            stored without a log or sigmoid get it times their own size.
        lr_schedule: ``plateau`` (halve when the error stops improving, restoring the best
            weights), ``cosine`` (decay to 5% of ``learning_rate`` over ``iterations``) or
            ``constant``; ``auto``: plateau with ``iterations="auto"``, else cosine.
        batch_size: windows per Adam step; None uses every window; ``auto``: every window
            while that is at most 4,096 window-steps, else a random subset of about two
            window-steps per recorded transition.
        curriculum: fraction of ``iterations`` (of 300 steps with ``iterations="auto"``) over
            which windows grow from 1 step to ``horizon`` (0 trains at ``horizon`` from the
            start).
        lbfgs_iterations: L-BFGS iterations at ``horizon`` after Adam (0 = none), kept only
            if the loss falls; ``auto``: 200.
        residual_penalty: weight of the mean squared (normalised) residual over the data;
            ``auto``: 0.01 for a model with a prior and a residual, else 0.
        physics_first: fit a fresh model's physical constants alone before the network
            (L-BFGS on 1-, 2- and 4-step windows with the residual off); ``auto``: for a model
            with learnable constants whose residual has not been fitted before.
        validation_fraction: episodes held out for validation, early stopping and the choice
            of horizon (a single episode is never split).
        eval_every: Adam steps between validation (or plateau) checks.
        patience: fixed ``iterations`` only: validation checks without improvement before
            stopping (None: never).
        sensitivity: ``direct`` or ``adjoint`` gradients through the solver.
        seed: seeds window sampling and the validation split.
        progress: show a progress bar.
        weight_decay: decoupled weight decay (AdamW) on the residual's weights only; the
            physical constants are never decayed.
        grad_clip: clip the gradient norm (None: no clipping).
        validation_horizons: k of the k-step prediction errors reported; the largest is the
            error the automatic horizon choice compares.
        huber_delta: None for a squared loss; else a Huber loss, quadratic up to this size of
            error (in units of each state's typical one-step change) and linear beyond, so a
            few transitions the model cannot represent (a saturation, a glitch in the log)
            pull less.
    """

    horizon: int | str = AUTO
    iterations: int | str = AUTO
    learning_rate: float | str = AUTO
    lr_schedule: str = AUTO
    batch_size: int | str | None = AUTO
    curriculum: float = 0.3
    lbfgs_iterations: int | str = AUTO
    residual_penalty: float | str = AUTO
    physics_first: bool | str = AUTO
    validation_fraction: float = 0.2
    eval_every: int = 25
    patience: int | None = 10
    sensitivity: str = "direct"
    seed: int = 0
    progress: bool = True
    weight_decay: float = 0.0
    grad_clip: float | None = 10.0
    validation_horizons: tuple[int, ...] = (1, 10)
    huber_delta: float | None = None

    def __post_init__(self) -> None:
        _auto_or(
            "horizon", self.horizon, lambda: _positive_int("horizon", self.horizon), "an int >= 1"
        )
        _auto_or(
            "iterations",
            self.iterations,
            lambda: _positive_int("iterations", self.iterations, 0),
            "an int >= 0",
        )
        _auto_or(
            "lbfgs_iterations",
            self.lbfgs_iterations,
            lambda: _positive_int("lbfgs_iterations", self.lbfgs_iterations, 0),
            "an int >= 0",
        )
        _positive_int("eval_every", self.eval_every)
        if self.batch_size is not None:
            _auto_or(
                "batch_size",
                self.batch_size,
                lambda: _positive_int("batch_size", self.batch_size),
                "an int >= 1, None (every window)",
            )
        if self.patience is not None:
            _positive_int("patience", self.patience)
        _positive_int("seed", self.seed, 0)  # numpy's generators take seeds >= 0
        _auto_or(
            "residual_penalty",
            self.residual_penalty,
            lambda: _finite_non_negative("residual_penalty", self.residual_penalty),
            "a number >= 0",
        )
        _finite_non_negative("weight_decay", self.weight_decay)
        _auto_or("learning_rate", self.learning_rate, self._check_learning_rate, "a number > 0")
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
        for name in ("progress",):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"FitConfig.{name} must be True or False, got {self.progress!r}")
        if self.physics_first != AUTO and not isinstance(self.physics_first, bool):
            raise ValueError(
                f"FitConfig.physics_first must be True, False or 'auto', got {self.physics_first!r}"
            )
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(
                f"FitConfig.sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}"
            )
        if self.lr_schedule not in _SCHEDULES:
            raise ValueError(
                f"FitConfig.lr_schedule must be one of {_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.lr_schedule == "plateau" and self.iterations != AUTO:
            raise ValueError(
                "FitConfig.lr_schedule='plateau' ends the fit itself: use it with "
                "iterations='auto' (or choose 'cosine' / 'constant' for a fixed count)"
            )
        if self.lr_schedule in ("cosine", "constant") and self.iterations == AUTO:
            raise ValueError(
                f"FitConfig.lr_schedule={self.lr_schedule!r} needs a fixed number of "
                "iterations; set iterations=N or use lr_schedule='plateau'"
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

    def cautious(self) -> FitConfig:
        """The same fit with a tenth of the learning rate and, for a fixed count, half the
        Adam steps: the retry after a fit that diverged."""
        rate = AUTO_LEARNING_RATE if self.learning_rate == AUTO else self.learning_rate
        steps = self.iterations if self.iterations == AUTO else max(1, self.iterations // 2)
        return dataclasses.replace(self, learning_rate=rate / 10, iterations=steps)

    def _check_learning_rate(self) -> None:
        _finite_non_negative("learning_rate", self.learning_rate)
        if not self.learning_rate > 0:
            raise ValueError(f"FitConfig.learning_rate must be > 0, got {self.learning_rate!r}")


@dataclass
class FitReport:
    """What happened in a fit.

    Attributes:
        iterations: Adam steps taken on the kept horizon (fewer than configured after early
            stopping).
        history: per logged step of the kept horizon: iteration, horizon, train loss.
        validation_history: per check: iteration, validation (or plateau-check) error.
        validation_errors: k -> per-state RMSE of k-step predictions (validation episodes,
            or the training episodes when there is no validation split).
        physical_parameters: the prior's constants after the fit.
        wall_time: seconds.
        best_iteration: the iteration whose weights were kept.
        stopped_early: Adam ended before its iteration budget (early stopping or a plateau).
        non_finite_steps: Adam steps skipped because the loss was NaN or infinite.
        members: per-member reports of an ensemble fit.
        choices: setting -> what was chosen and why (every ``"auto"`` field; explicit ones
            say so).
        stop_reason: why Adam ended, in words.
        candidates: one entry per horizon tried: horizon, Adam steps, the held-out error
            they were compared on, seconds.
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
    choices: dict[str, str] = field(default_factory=dict)
    stop_reason: str = ""
    candidates: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else math.nan

    def summary(self) -> str:
        """The choices, one ``setting: choice`` per line."""
        return "\n".join(f"{name}: {text}" for name, text in self.choices.items())


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
        config: :class:`FitConfig`; None uses the defaults, which choose the horizon, batch,
            learning rate, length, polish and penalty from the data (``report.choices``).
        validation: held-out data; when None, ``config.validation_fraction`` of the episodes.

    Returns:
        A :class:`FitReport`. The model keeps the weights with the best validation loss.
    """
    config = config or FitConfig()
    if not isinstance(config, FitConfig):
        raise TypeError(f"config must be a FitConfig, got {type(config).__name__}")
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
    return _Fit(model, data, config, validation).run()


def _mean_errors(errors: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    return {
        k: {name: float(np.mean([e[k][name] for e in errors])) for name in errors[0][k]}
        for k in errors[0]
    }


@dataclass
class _Run:
    """One horizon's Adam (+ L-BFGS) run."""

    horizon: int
    iterations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    checks: list[dict[str, float]] = field(default_factory=list)
    best_iteration: int = 0
    stopped_early: bool = False
    non_finite: int = 0
    stop_reason: str = ""
    lbfgs: str = ""
    selection_error: float = math.inf
    seconds: float = 0.0
    state: dict[str, torch.Tensor] | None = None


class _Fit:
    """One model's fit: the choices from data and config, then the runs."""

    def __init__(
        self,
        model: HybridODE,
        data: DatasetLike,
        config: FitConfig,
        validation: DatasetLike | None,
    ) -> None:
        self.start_time = time.perf_counter()
        self.model, self.config = model, config
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
        self.train, self.validation = train, validation
        param = next(iter(model.parameters()), None)
        if param is None:
            raise ValueError("the model has no parameters to fit")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("no parameter of the model requires grad; nothing to fit")
        dtype, self.device = param.dtype, param.device
        self.windows = Windows(train.episodes, data.angle_dims, dtype, self.device)
        self.val_windows = (
            Windows(validation.episodes, data.angle_dims, dtype, self.device)
            if validation
            else None
        )
        #: a model whose residual has not been fitted before (a prior-only model: always)
        self.fresh = not bool(getattr(model.residual, "statistics_set", False))
        set_residual_statistics(model, self.windows, model.dt)
        self.scale = self.windows.step_scale()
        self.choices: dict[str, str] = {}
        self._choose()

    # --- choices -----------------------------------------------------------------------------
    def _choose(self) -> None:
        cfg, model, windows = self.config, self.model, self.windows
        self.auto_length = cfg.iterations == AUTO
        longest = windows.longest
        has_prior = model.prior is not None and any(
            p.requires_grad for p in model.prior.parameters()
        )
        with_residual = model.residual is not None
        self.select_k = min(
            max(cfg.validation_horizons),
            (self.val_windows or windows).longest,
        )
        # horizon
        if cfg.horizon != AUTO:
            self.horizons: tuple[int, ...] = (cfg.horizon,)
            self.choices["horizon"] = f"{cfg.horizon} (given)"
        else:
            long = min(AUTO_LONG_HORIZON, longest)
            if self.val_windows is not None and long > 1 and self.fresh:
                self.horizons = (1, long)
                self.choices["horizon"] = f"1 or {long}, whichever predicts held-out data best"
            else:
                self.horizons = (long,)
                why = (
                    "a warm start keeps to the noise-robust window"
                    if not self.fresh
                    else "no episode to hold out, so the noise-robust window"
                )
                self.choices["horizon"] = f"{long} ({why})"
        # learning rate and schedule
        self.learning_rate = (
            AUTO_LEARNING_RATE if cfg.learning_rate == AUTO else float(cfg.learning_rate)
        )
        self.schedule = cfg.lr_schedule
        if self.schedule == AUTO:
            self.schedule = "plateau" if self.auto_length else "cosine"
        given = "given" if cfg.learning_rate != AUTO else "default"
        self.choices["learning_rate"] = f"{self.learning_rate:g} ({given}), {self.schedule}"
        # residual penalty
        if cfg.residual_penalty == AUTO:
            self.penalty = AUTO_RESIDUAL_PENALTY if (has_prior and with_residual) else 0.0
            self.choices["residual_penalty"] = (
                f"{self.penalty:g} (the physics explains what it can)"
                if self.penalty
                else "0 (no prior constants to keep identifiable)"
            )
        else:
            self.penalty = float(cfg.residual_penalty)
            self.choices["residual_penalty"] = f"{self.penalty:g} (given)"
        # constants first
        if cfg.physics_first == AUTO:
            self.physics_first = has_prior and self.fresh
        else:
            self.physics_first = bool(cfg.physics_first) and has_prior
        # L-BFGS
        self.lbfgs = AUTO_LBFGS_ITERATIONS if cfg.lbfgs_iterations == AUTO else cfg.lbfgs_iterations

    def batch_for(self, h: int) -> int | None:
        """Windows per Adam step at horizon h (None: all)."""
        cfg = self.config
        if cfg.batch_size != AUTO:
            return cfg.batch_size
        count = len(self.windows.valid(h))
        if count * h <= FULL_BATCH_WORK and (h == 1 or count * h <= self._work()):
            return None
        return max(16, min(count, math.ceil(self._work() / h)))

    def _work(self) -> int:
        """Window-steps per Adam step at horizons > 1 when not every window fits."""
        return min(FULL_BATCH_WORK, max(512, WORK_PER_TRANSITION * self.windows.num_steps))

    def iterations_for(self, h: int) -> int:
        if not self.auto_length:
            return int(self.config.iterations)
        batch = self.batch_for(h)
        work = ((len(self.windows.valid(h)) if batch is None else batch) + STEP_OVERHEAD) * h
        return int(np.clip(AUTO_WORK_BUDGET // work, AUTO_MIN_ITERATIONS, AUTO_MAX_ITERATIONS))

    # --- losses ------------------------------------------------------------------------------
    def loss(self, which: torch.Tensor, h: int, windows: Windows, penalty: float) -> torch.Tensor:
        err, mask, x0 = rollout_errors(
            self.model, windows, which, h, self.scale, self.config.huber_delta
        )
        out = masked_mean(err, mask)
        if penalty and self.model.residual is not None:
            out = out + penalty * residual_size(self.model, x0, windows, which)
        return out

    @torch.no_grad()
    def held_out_error(self) -> float:
        """The error the horizons are compared on: scaled squared error of every step of
        ``select_k``-step windows of the validation episodes (no penalty)."""
        windows = self.val_windows
        k = self.select_k
        return float(self.loss(windows.valid(k), k, windows, 0.0))

    # --- the fit -----------------------------------------------------------------------------
    def run(self) -> FitReport:
        model = self.model
        sensitivity_before = model.sensitivity
        model.sensitivity = self.config.sensitivity
        try:
            if self.physics_first:
                self._physics_first()
            else:
                self.choices["physics_first"] = "no" + (
                    " (given)" if self.config.physics_first is False else ""
                )
            initial = copy.deepcopy(model.state_dict()) if len(self.horizons) > 1 else None
            runs = []
            for h in self.horizons:
                if initial is not None:
                    model.load_state_dict(initial)
                runs.append(self._run(h))
            best = min(runs, key=lambda r: r.selection_error) if len(runs) > 1 else runs[0]
            if best.state is not None and best is not runs[-1]:
                model.load_state_dict(best.state)
        finally:
            model.sensitivity = sensitivity_before
        self._describe(runs, best)
        report_data = self.validation if self.validation is not None else self.train
        return FitReport(
            iterations=best.iterations,
            history=best.history,
            validation_history=best.checks,
            validation_errors=prediction_errors(
                model, report_data, self.config.validation_horizons
            ),
            physical_parameters=_physical(model),
            wall_time=time.perf_counter() - self.start_time,
            best_iteration=best.best_iteration,
            stopped_early=best.stopped_early,
            non_finite_steps=sum(r.non_finite for r in runs),
            choices=dict(self.choices),
            stop_reason=best.stop_reason,
            candidates=[
                {
                    "horizon": r.horizon,
                    "iterations": r.iterations,
                    "held_out_error": r.selection_error,
                    "seconds": r.seconds,
                }
                for r in runs
            ],
        )

    def _describe(self, runs: list[_Run], best: _Run) -> None:
        if len(runs) > 1:
            scores = ", ".join(f"{r.selection_error:.3g} at horizon {r.horizon}" for r in runs)
            self.choices["horizon"] = (
                f"{best.horizon}: held-out {self.select_k}-step error {scores}"
            )
        batch = self.batch_for(best.horizon)
        count = len(self.windows.valid(best.horizon))
        given = " (given)" if self.config.batch_size != AUTO else ""
        self.choices["batch_size"] = (
            f"every window ({count}){given}"
            if batch is None or batch >= count
            else f"{batch} of {count} windows per step{given}"
        )
        self.choices["iterations"] = f"{best.iterations} Adam steps: {best.stop_reason}"
        self.choices["lbfgs"] = best.lbfgs or "none"

    def _physics_first(self) -> None:
        """L-BFGS on the prior's constants alone (the residual switched off), on 1-, 2- and
        4-step windows; each stage kept only if it lowers the loss."""
        model, windows = self.model, self.windows
        before_values = _physical(model)
        params = [p for p in model.prior.parameters() if p.requires_grad]
        mask = model.residual_mask.clone()
        model.residual_mask.zero_()
        try:
            for h in sorted({min(h, windows.longest) for h in (1, 2, 4)}):
                which = windows.spread(h, max(1, LBFGS_WORK // h))
                self._lbfgs(params, which, h, PHYSICS_FIRST_ITERATIONS, penalty=0.0)
        finally:
            model.residual_mask.copy_(mask)
        after = _physical(model)
        changes = ", ".join(f"{k} {before_values[k]:.4g} -> {after[k]:.4g}" for k in after)
        self.choices["physics_first"] = f"constants fitted alone first ({changes or 'none'})"

    def _lbfgs(
        self, params: list[torch.Tensor], which: torch.Tensor, h: int, iterations: int, penalty
    ) -> tuple[float, float]:
        """L-BFGS on a fixed set of windows; undone unless it lowers the loss. Returns the
        loss before and after."""
        model, windows = self.model, self.windows
        optimizer = torch.optim.LBFGS(
            params, lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
        )
        before = copy.deepcopy(model.state_dict())

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(which, h, windows, penalty)
            if torch.isfinite(loss):
                loss.backward()
            return loss

        with torch.no_grad():
            loss_before = float(self.loss(which, h, windows, penalty))
        optimizer.step(closure)
        with torch.no_grad():
            loss_after = float(self.loss(which, h, windows, penalty))
        if not math.isfinite(loss_after) or not loss_after < loss_before:
            model.load_state_dict(before)
            return loss_before, loss_before
        return loss_before, loss_after

    def _optimizer(self) -> torch.optim.Optimizer:
        model, cfg = self.model, self.config
        residual_params = set(model.residual.parameters()) if model.residual is not None else set()
        scaled = _unconstrained_constants(model.prior)
        groups: list[dict[str, Any]] = []
        plain = [p for p in self.params if p not in residual_params and id(p) not in scaled]
        groups.append({"params": plain, "weight_decay": 0.0, "lr": self.learning_rate})
        for p in self.params:
            if id(p) in scaled:  # a constant in its own units: steps relative to its size
                size = scaled[id(p)]
                groups.append({"params": [p], "weight_decay": 0.0, "lr": self.learning_rate * size})
        decayed = [p for p in self.params if p in residual_params]
        if decayed:
            groups.append(
                {"params": decayed, "weight_decay": cfg.weight_decay, "lr": self.learning_rate}
            )
        for group in groups:
            group["initial_lr"] = group["lr"]
        return torch.optim.AdamW(groups, lr=self.learning_rate)

    def _run(self, h: int) -> _Run:
        start = time.perf_counter()
        cfg, model, windows = self.config, self.model, self.windows
        run = _Run(horizon=h)
        iterations = self.iterations_for(h)
        batch = self.batch_for(h)
        optimizer = self._optimizer()
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(iterations, 1), eta_min=0.05 * self.learning_rate
            )
            if self.schedule == "cosine"
            else None
        )
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        ramp_base = AUTO_RAMP if self.auto_length else iterations
        ramp_end = int(cfg.curriculum * ramp_base)
        plateau = self.schedule == "plateau"
        check_set = None if self.val_windows is not None else windows.spread(h, LBFGS_WORK // h)

        def check() -> float:
            if self.val_windows is not None:
                return self.held_out_error()
            with torch.no_grad():
                return float(self.loss(check_set, h, windows, self.penalty))

        checking = plateau or self.val_windows is not None
        best = (check() if plateau else math.inf, copy.deepcopy(model.state_dict()), 0)
        bad_checks, halvings, it = 0, 0, 0
        run.stop_reason = f"the {iterations} steps"
        bar = tqdm(total=iterations, desc=f"fit h={h}", disable=not cfg.progress, leave=False)
        try:
            for it in range(1, iterations + 1):
                h_now = _ramp(it - 1, ramp_end, h)
                valid = windows.valid(h_now)
                size = batch if not plateau or h_now == h else self.batch_for(h_now)
                if size is not None and len(valid) > size:
                    pick = torch.randperm(len(valid), generator=generator, device=self.device)
                    valid = valid[pick[:size]]
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss(valid, h_now, windows, self.penalty)
                # the one read of the device per Adam step: a non-finite loss skips the step
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    run.non_finite += 1
                    if run.non_finite >= 20:
                        run.stop_reason = "20 non-finite losses"
                        break
                    continue
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                if it % 10 == 0 or it == 1:
                    run.history.append({"iteration": it, "horizon": h_now, "loss": loss_value})
                    bar.set_postfix(loss=f"{loss_value:.3g}", h=h_now)
                bar.update(1)
                if not checking or it % cfg.eval_every or it < ramp_end:
                    continue
                value = check()
                run.checks.append({"iteration": it, "loss": value})
                if plateau and value < PLATEAU_FLOOR:
                    best = (value, copy.deepcopy(model.state_dict()), it)
                    run.stopped_early = True
                    run.stop_reason = "converged: the error is at rounding level"
                    break
                target = best[0] * (1 - PLATEAU_TOLERANCE) - PLATEAU_FLOOR if plateau else best[0]
                if value < target:
                    best, bad_checks = (value, copy.deepcopy(model.state_dict()), it), 0
                    continue
                bad_checks += 1
                if not plateau:
                    if cfg.patience is not None and bad_checks >= cfg.patience:
                        run.stopped_early = True
                        run.stop_reason = f"no validation improvement in {cfg.patience} checks"
                        break
                    continue
                if bad_checks >= PLATEAU_CHECKS:  # halve the rate, back to the best weights
                    halvings += 1
                    bad_checks = 0
                    model.load_state_dict(best[1])
                    if halvings >= PLATEAU_HALVINGS:
                        run.stopped_early = True
                        run.stop_reason = (
                            f"a plateau: the learning rate was halved {PLATEAU_HALVINGS} times"
                        )
                        break
                    for group in optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * 0.5**halvings
            else:
                if plateau:
                    run.stop_reason = f"the work budget ({iterations} steps)"
        finally:
            bar.close()
        run.iterations = it
        if checking and best[0] < math.inf:
            if plateau and best[2] != it:
                value = check()  # the last weights may be better than the last check
                if value < best[0]:
                    best = (value, copy.deepcopy(model.state_dict()), it)
            model.load_state_dict(best[1])
            run.best_iteration = best[2]
        else:
            run.best_iteration = it
        if self.lbfgs:
            which = windows.spread(h, max(1, LBFGS_WORK // h))
            before, after = self._lbfgs(self.params, which, h, self.lbfgs, self.penalty)
            if self.val_windows is not None and after < before and self.held_out_error() > best[0]:
                model.load_state_dict(best[1])  # it polished the training windows only
                after = before
            run.lbfgs = (
                f"{self.lbfgs} L-BFGS iterations: loss {before:.3g} -> {after:.3g}"
                if after < before
                else f"{self.lbfgs} L-BFGS iterations did not lower the loss: undone"
            )
            if after < before:
                run.best_iteration = it
        if self.val_windows is not None:
            run.selection_error = self.held_out_error()
        if len(self.horizons) > 1:
            run.state = copy.deepcopy(model.state_dict())
        run.seconds = time.perf_counter() - start
        return run


def _ramp(it: int, ramp_end: int, horizon: int) -> int:
    """The curriculum: windows grow from 1 step to ``horizon`` over ``ramp_end`` steps."""
    if ramp_end <= 0 or it >= ramp_end:
        return horizon
    return 1 + int((horizon - 1) * it / ramp_end)


def _unconstrained_constants(prior: Any) -> dict[int, float]:
    """id(parameter) -> its size, for a PhysicsPrior's constants stored as plain values (no
    log, no sigmoid): their Adam steps are scaled by their size."""
    specs = getattr(prior, "constant_specs", None)
    raw = getattr(prior, "raw", None)
    if not specs or raw is None:
        return {}
    out = {}
    for name, spec in specs.items():
        if spec.learnable and not spec.positive and spec.bounds is None and name in raw:
            value = abs(float(raw[name].detach()))
            out[id(raw[name])] = value if value > 0 else 1.0
    return out


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
