"""What ``fit`` is told: :class:`FitConfig` (every field ``"auto"`` or given), the constants
behind the automatic choices, and :class:`FitReport` (what happened and why).

docs/models.md ("How fit chooses") explains each constant; the fit suite
(benchmarks/fit_suite.py) is what they were measured on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridgym.models.hybrid import SENSITIVITIES

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
#: L-BFGS iterations of the polish, and the window-steps of its fixed set of windows; the
#: polish on long windows gets at least LONG_LBFGS_ITERATIONS
AUTO_LBFGS_ITERATIONS = 200
LONG_LBFGS_ITERATIONS = 400
LBFGS_WORK = 8_192
#: an automatic L-BFGS polish over more than FULL_BATCH_WORK window-steps stops after this
#: many iterations that lowered the loss by less than PLATEAU_TOLERANCE (the DC motor's
#: 10-step polish, 8,000 window-steps, crept 1% per 25 iterations for 400 iterations, 39 s
#: of a 53 s fit, without changing the held-out error; on cheaper polishes the last 1%
#: steps were worth their time: stopping them made the CSTR's 20-step error 13% worse)
LBFGS_PLATEAU_CHUNK = 25
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
#: constants-first: L-BFGS iterations on one-step windows
PHYSICS_FIRST_ITERATIONS = 200
#: constants-first moves a constant at most this factor from its start, else it goes back:
#: a user's constants are roughly right, and a constant that has to move further is taking
#: up the missing physics (a missing term of the same form), which the network should learn.
#: Measured: README's oscillator starts its stiffness 4x low (kept: corrected); on the fit
#: suite, constants the missing terms pull away moved 9x to 10^6x (SIR, tanks, spring
#: damping, motor viscous, Lorenz rho, CSTR volume); with 2 instead, the tanks' 20-step
#: error was 1.9x worse
PHYSICS_FIRST_TRUST = 5.0

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
            a horizon as long as the episode works). ``auto``: Adam on one-step windows, then
            L-BFGS on one-step and, from the same weights, on 10-step windows; the candidate
            that predicts held-out episodes best is kept (the 10-step one without any).
        iterations: Adam steps. ``auto``: until the training loss stops improving (the
            learning rate halved ``PLATEAU_HALVINGS`` times) or a work budget is spent
            (300 to 3,000 steps).
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
            if the loss falls; ``auto``: 200 on one-step windows and 400 on the automatic
            long windows; a polish over more than 4,096 window-steps stops once 25 iterations
            lower the loss by less than 1%.
        residual_penalty: weight of the mean squared (normalised) residual over the data;
            ``auto``: 0.01 for a model with prior constants and a residual, during Adam only
            (the polish then trains the network alone, without it), else 0.
        physics_first: fit the prior's constants alone to the recorded rates of change
            first (L-BFGS, residual off; a constant pushed more than fivefold goes back to its
            start) and hold them while the network learns; ``auto`` and True: for any model
            with learnable constants (a prior-only model then trains them further with Adam);
            False: constants and network are trained together.
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
