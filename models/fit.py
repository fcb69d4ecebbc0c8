"""Fit a hybrid model to trajectories: multiple shooting over windows of recorded data, with
every setting chosen from the data unless given.

A window of ``h`` steps starts from a recorded state and is rolled out under the recorded
actions; the loss compares the rollout with the recording (angles wrapped), each state divided
by its typical one-step change (:mod:`hybridgym.models.shooting`).

``fit(model, data)`` with the default :class:`FitConfig` chooses everything itself; each choice
and its reason end up in :attr:`FitReport.choices` (docs/models.md, "How fit chooses"):

1. **constants first**: the prior's physical constants are fitted alone to the recorded rates
   of change (least squares, L-BFGS) and then held while the network learns what they leave,
   the division of labour the residual-size penalty of APHYNITY aims at; a constant the data
   push more than fivefold from its start goes back to it (the missing physics has a term of
   its form);
2. **Adam** on one-step windows, full batch while cheap, at a learning rate of 1e-2 halved
   whenever the training loss stops improving (best weights restored), until it was halved
   five times or a work budget is spent, with a small penalty on the network's size;
3. **polish**: L-BFGS on one-step windows and, from the same weights, on 10-step windows
   (robust to measurement noise, consistent over many steps); the candidate that predicts
   held-out episodes best over ``max(validation_horizons)`` steps is kept (the 10-step one
   when no episode can be held out).

Fields set explicitly are used as given: ``iterations=N`` runs exactly N Adam steps on the
cosine schedule, ``horizon=H`` trains on H-step windows (growing from 1 over ``curriculum``),
``physics_first=False`` trains constants and network together.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridgym.models.ensemble import Ensemble
from hybridgym.models.fit_config import (
    AUTO,
    AUTO_LBFGS_ITERATIONS,
    AUTO_LEARNING_RATE,
    AUTO_LONG_HORIZON,
    AUTO_MAX_ITERATIONS,
    AUTO_MIN_ITERATIONS,
    AUTO_RAMP,
    AUTO_RESIDUAL_PENALTY,
    AUTO_WORK_BUDGET,
    FULL_BATCH_WORK,
    LBFGS_PLATEAU_CHUNK,
    LBFGS_WORK,
    LONG_LBFGS_ITERATIONS,
    PHYSICS_FIRST_ITERATIONS,
    PHYSICS_FIRST_TRUST,
    PLATEAU_CHECKS,
    PLATEAU_FLOOR,
    PLATEAU_HALVINGS,
    PLATEAU_TOLERANCE,
    STEP_OVERHEAD,
    WORK_PER_TRANSITION,
    FitConfig,
    FitReport,
)
from hybridgym.models.hybrid import HybridODE
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

State = dict[str, torch.Tensor]
#: Adam steps with a non-finite loss after which a fit gives up
NON_FINITE_LIMIT = 20


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
        config: :class:`FitConfig`; None uses the defaults, which choose every setting from
            the data and the model (``report.choices`` says what and why).
        validation: held-out data; when None, ``config.validation_fraction`` of the episodes.

    Returns:
        A :class:`FitReport`. The model keeps the weights that predict held-out data best.
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
    """Adam's steps and one polish: a candidate."""

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
    state: State | None = None


class _Fit:
    """One model's fit: the settings from config, data and model, then the optimisation."""

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
        set_residual_statistics(model, self.windows, model.dt)
        self.scale = self.windows.step_scale()
        self.choices: dict[str, str] = {}
        self._choose()

    # --- settings ----------------------------------------------------------------------------
    def _choose(self) -> None:
        cfg, model = self.config, self.model
        self.auto_length = cfg.iterations == AUTO
        constants = model.prior is not None and any(
            p.requires_grad for p in model.prior.parameters()
        )
        self.select_k = min(
            max(cfg.validation_horizons), (self.val_windows or self.windows).longest
        )
        # windows: Adam on one step, then polished on one and on `long` steps; or as given
        self.staged = cfg.horizon == AUTO
        self.horizon = 1 if self.staged else int(cfg.horizon)
        self.long = min(AUTO_LONG_HORIZON, self.windows.longest)
        if not self.staged:
            self.choices["horizon"] = f"{cfg.horizon} (given)"
        # constants first, then held
        self.physics_first = constants and (cfg.physics_first == AUTO or bool(cfg.physics_first))
        self.holds_constants = self.physics_first and model.residual is not None
        if not self.physics_first:
            self.choices["physics_first"] = "no" + (
                " (given)" if cfg.physics_first is False else " (no constants to fit)"
            )
        # learning rate and schedule
        given = cfg.learning_rate != AUTO
        self.learning_rate = float(cfg.learning_rate) if given else AUTO_LEARNING_RATE
        self.schedule = cfg.lr_schedule
        if self.schedule == AUTO:
            self.schedule = "plateau" if self.auto_length else "cosine"
        self.choices["learning_rate"] = (
            f"{self.learning_rate:g} ({'given' if given else 'default'}), {self.schedule}"
        )
        # penalty on the network's size
        if cfg.residual_penalty != AUTO:
            self.penalty = float(cfg.residual_penalty)
            self.choices["residual_penalty"] = f"{self.penalty:g} (given)"
        elif constants and model.residual is not None:
            self.penalty = AUTO_RESIDUAL_PENALTY
            self.choices["residual_penalty"] = (
                f"{self.penalty:g} while Adam trains (keeps the network to what the physics "
                "leaves); none in the polish"
            )
        else:
            self.penalty = 0.0
            self.choices["residual_penalty"] = "0 (no physics for the network to leave room to)"
        self.lbfgs = AUTO_LBFGS_ITERATIONS if cfg.lbfgs_iterations == AUTO else cfg.lbfgs_iterations
        # the polish trains the network alone, without the penalty, where the constants are
        # held or the penalty is automatic (it only kept Adam from absorbing the physics)
        self.polish_network_only = model.residual is not None and (
            self.holds_constants or (cfg.residual_penalty == AUTO and self.penalty > 0)
        )

    def batch_for(self, h: int) -> int | None:
        """Windows per Adam step at horizon h (None: all)."""
        if self.config.batch_size != AUTO:
            return self.config.batch_size
        count = len(self.windows.valid(h))
        work = min(FULL_BATCH_WORK, max(512, WORK_PER_TRANSITION * self.windows.num_steps))
        if count * h <= FULL_BATCH_WORK and (h == 1 or count * h <= work):
            return None
        return max(16, min(count, math.ceil(work / h)))

    def iterations_for(self, h: int) -> int:
        """Adam steps: as given, or as many as the work budget allows (within bounds)."""
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
        """What candidates are compared on: the scaled squared error of every step of
        ``select_k``-step windows of the validation episodes (no penalty)."""
        k = self.select_k
        return float(self.loss(self.val_windows.valid(k), k, self.val_windows, 0.0))

    # --- the fit -----------------------------------------------------------------------------
    def run(self) -> FitReport:
        model = self.model
        sensitivity_before = model.sensitivity
        model.sensitivity = self.config.sensitivity
        initial = _copy(model)
        try:
            if self.physics_first:
                self._physics_first()
            runs = self._candidates()
            best = runs[-1]
            if self.val_windows is not None:
                best = min(runs, key=lambda r: r.selection_error)
            if best is not runs[-1]:
                model.load_state_dict(best.state)
            if best.non_finite >= NON_FINITE_LIMIT:  # a failed fit leaves the model as it was
                model.load_state_dict(initial)
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
            non_finite_steps=best.non_finite,
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

    def _candidates(self) -> list[_Run]:
        """Adam, then the polish at the given horizon; or, with the horizon automatic, two
        polishes from Adam's weights: on one-step and on ``long``-step windows."""
        model = self.model
        start = time.perf_counter()
        adam = _Run(horizon=self.horizon)
        if self.schedule == "plateau":
            kept = self._adam_plateau(adam, self.horizon)
        else:
            kept = self._adam_fixed(adam, self.horizon)
        adam_seconds = time.perf_counter() - start
        horizons = [self.horizon]
        if self.staged and self.long > 1:
            horizons.append(self.long)
        after_adam = _copy(model) if len(horizons) > 1 else None
        runs = []
        for h in horizons:
            begin = time.perf_counter()
            if after_adam is not None:
                model.load_state_dict(after_adam)
            run = dataclasses.replace(adam, horizon=h)
            iterations = (
                self.lbfgs if h == 1 or not self.staged else max(self.lbfgs, LONG_LBFGS_ITERATIONS)
            )
            if iterations:
                self._polish(run, h, kept, iterations)
            if self.val_windows is not None:
                run.selection_error = self.held_out_error()
            run.state = _copy(model) if len(horizons) > 1 else None
            run.seconds = adam_seconds + time.perf_counter() - begin
            runs.append(run)
        return runs

    def _describe(self, runs: list[_Run], best: _Run) -> None:
        if self.staged and len(runs) > 1 and self.val_windows is not None:
            scores = ", ".join(f"{r.selection_error:.3g} at {r.horizon}" for r in runs)
            self.choices["horizon"] = (
                f"{best.horizon}: Adam on one-step windows, L-BFGS on one and on {self.long} "
                f"steps; held-out {self.select_k}-step errors {scores}"
            )
        elif self.staged and len(runs) > 1:
            self.choices["horizon"] = (
                f"{best.horizon}: Adam on one-step windows, L-BFGS on {self.long} steps (no "
                "episode to hold out: the long windows, robust to noise)"
            )
        elif self.staged:
            self.choices["horizon"] = "1 (the episodes are one step long)"
        batch = self.batch_for(self.horizon)
        count = len(self.windows.valid(self.horizon))
        given = " (given)" if self.config.batch_size != AUTO else ""
        self.choices["batch_size"] = (
            f"every window ({count}){given}"
            if batch is None or batch >= count
            else f"{batch} of {count} windows per step{given}"
        )
        self.choices["iterations"] = f"{best.iterations} Adam steps: {best.stop_reason}"
        self.choices["lbfgs"] = best.lbfgs or "none"

    # --- constants first -----------------------------------------------------------------
    def _physics_first(self) -> None:
        """The prior's constants fitted alone to the recorded rates of change (the residual
        off). Each transition's rate is (x[k+1] - x[k]) / dt at the midpoint state under the
        action held over it (second-order accurate), each state divided by its rates'
        spread: matching rates, not rolled-out states, keeps one equation's missing term out
        of another equation's constants. A constant pushed more than
        ``PHYSICS_FIRST_TRUST`` times from its start goes back to it: the missing physics has
        a term of its form, and a constant driven to an extreme leaves the network a harder
        function to learn (measured on the fit suite's Lorenz and SIR systems)."""
        model, windows = self.model, self.windows
        before = _physical(model)
        s = windows.start
        step = windows.difference(windows.x[s + 1], windows.x[s])
        middle, rate, action = windows.x[s] + 0.5 * step, step / model.dt, windows.u[s]
        spread = rate.std(0).clamp_min(1e-6 * float(rate.std(0).max().clamp_min(1e-12)) + 1e-12)

        def mismatch() -> torch.Tensor:
            return (((model.prior(middle, action) - rate) / spread) ** 2).mean()

        params = [p for p in model.prior.parameters() if p.requires_grad]
        _minimise(mismatch, params, PHYSICS_FIRST_ITERATIONS, plateau=True)
        reset = _outside_trust(model.prior, before)
        after = _physical(model)
        changes = ", ".join(f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in after)
        held = ", then held while the network learns" if self.holds_constants else ""
        text = f"constants fitted alone to the recorded rates ({changes or 'none'}){held}"
        if reset:
            text += (
                f"; {', '.join(reset)} moved more than {PHYSICS_FIRST_TRUST:g}x and went back to "
                "the start (the missing physics has a term of their form)"
            )
        self.choices["physics_first"] = text

    # --- Adam ----------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable weights: the network's (with ``weight_decay``), and the
        constants unless they are held; a constant stored in its own units (no log, no
        sigmoid) steps relative to its size."""
        model = self.model
        network = set(model.residual.parameters()) if model.residual is not None else set()
        held = set(model.prior.parameters()) if self.holds_constants else set()
        sized = _unconstrained_constants(model.prior)
        rate = self.learning_rate
        plain = [p for p in self.params if p not in network and p not in held]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in plain if id(p) not in sized], "weight_decay": 0.0, "lr": rate}
        ]
        groups += [
            {"params": [p], "weight_decay": 0.0, "lr": rate * sized[id(p)]}
            for p in plain
            if id(p) in sized
        ]
        trained = [p for p in self.params if p in network]
        if trained:
            groups.append({"params": trained, "weight_decay": self.config.weight_decay, "lr": rate})
        for group in groups:
            group["initial_lr"] = group["lr"]
        return torch.optim.AdamW(groups, lr=rate)

    def _steps(
        self,
        run: _Run,
        h: int,
        iterations: int,
        schedule_of: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> Iterator[torch.optim.Optimizer]:
        """Adam steps with windows growing to h over the curriculum; yields the optimizer
        every ``eval_every`` steps after the curriculum, for the caller's checks."""
        cfg, windows = self.config, self.windows
        optimizer = self._optimizer()
        schedule = schedule_of(optimizer) if schedule_of is not None else None
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        ramp_end = int(cfg.curriculum * (AUTO_RAMP if self.auto_length else iterations))
        batch = self.batch_for(h)
        # progress=False silences the bar; with True, tqdm's own TQDM_DISABLE still can
        quiet = {} if cfg.progress else {"disable": True}
        bar = tqdm(total=iterations, desc=f"fit h={h}", leave=False, **quiet)
        try:
            for it in range(1, iterations + 1):
                h_now = _ramp(it - 1, ramp_end, h)
                valid = windows.valid(h_now)
                size = batch if not self.auto_length or h_now == h else self.batch_for(h_now)
                if size is not None and len(valid) > size:
                    pick = torch.randperm(len(valid), generator=generator, device=self.device)
                    valid = valid[pick[:size]]
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss(valid, h_now, windows, self.penalty)
                # the one read of the device per Adam step: a non-finite loss skips the step
                loss_value = loss.item()
                run.iterations = it
                if not math.isfinite(loss_value):
                    run.non_finite += 1
                    if run.non_finite >= NON_FINITE_LIMIT:
                        run.stop_reason = (
                            f"{NON_FINITE_LIMIT} non-finite losses: the model is kept as it was"
                        )
                        return
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
                if it % cfg.eval_every == 0 and it >= ramp_end:
                    yield optimizer
        finally:
            bar.close()

    def _adam_fixed(self, run: _Run, h: int) -> tuple[float, State] | None:
        """``iterations`` Adam steps (cosine or constant rate); with validation episodes, the
        weights of the best check are kept and ``patience`` stops early."""
        cfg, model = self.config, self.model
        iterations = int(cfg.iterations)

        def cosine(optimizer: torch.optim.Optimizer) -> Any:
            if self.schedule != "cosine":
                return None
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(iterations, 1), eta_min=0.05 * self.learning_rate
            )

        run.stop_reason = f"the {iterations} steps"
        best: tuple[float, State] | None = None
        bad_checks = 0
        for _ in self._steps(run, h, iterations, cosine):
            if self.val_windows is None:
                continue
            value = self.held_out_error()
            run.checks.append({"iteration": run.iterations, "loss": value})
            if best is None or value < best[0]:
                best, bad_checks, run.best_iteration = (value, _copy(model)), 0, run.iterations
                continue
            bad_checks += 1
            if cfg.patience is not None and bad_checks >= cfg.patience:
                run.stopped_early = True
                run.stop_reason = f"no validation improvement in {cfg.patience} checks"
                break
        if best is None:
            run.best_iteration = run.iterations
        else:
            model.load_state_dict(best[1])
        return best

    def _adam_plateau(self, run: _Run, h: int) -> tuple[float, State] | None:
        """Adam until the training loss stops improving: after ``PLATEAU_CHECKS`` checks
        without a relative gain of ``PLATEAU_TOLERANCE`` the rate is halved and the best
        weights restored; after ``PLATEAU_HALVINGS`` halvings (or the work budget) it stops.
        With validation episodes the weights with the best held-out error are kept."""
        model, windows = self.model, self.windows
        iterations = self.iterations_for(h)
        check_set = windows.spread(h, max(1, LBFGS_WORK // h))

        def train_check() -> float:
            with torch.no_grad():
                return float(self.loss(check_set, h, windows, self.penalty))

        trained = (train_check(), _copy(model))
        held = (self.held_out_error(), _copy(model), 0) if self.val_windows is not None else None
        bad_checks, halvings = 0, 0
        run.stop_reason = f"the work budget ({iterations} steps)"
        for optimizer in self._steps(run, h, iterations):
            value = train_check()
            if held is not None:
                error = self.held_out_error()
                if error < held[0]:
                    held = (error, _copy(model), run.iterations)
            run.checks.append(
                {"iteration": run.iterations, "loss": held[0] if held is not None else value}
            )
            if value < PLATEAU_FLOOR:
                trained = (value, _copy(model))
                run.stopped_early = True
                run.stop_reason = "converged: the error is at rounding level"
                break
            if value < trained[0] * (1 - PLATEAU_TOLERANCE) - PLATEAU_FLOOR:
                trained, bad_checks = (value, _copy(model)), 0
                continue
            bad_checks += 1
            if bad_checks < PLATEAU_CHECKS:
                continue
            halvings, bad_checks = halvings + 1, 0
            model.load_state_dict(trained[1])  # back to the best weights, half the rate
            if halvings >= PLATEAU_HALVINGS:
                run.stopped_early = True
                run.stop_reason = f"a plateau: the rate was halved {PLATEAU_HALVINGS} times"
                break
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * 0.5**halvings
        if held is None:
            if train_check() > trained[0]:
                model.load_state_dict(trained[1])
            run.best_iteration = run.iterations
            return None
        error = self.held_out_error()
        if error < held[0]:
            held = (error, _copy(model), run.iterations)
        model.load_state_dict(held[1])
        run.best_iteration = held[2]
        return held[0], held[1]

    # --- L-BFGS --------------------------------------------------------------------------
    def _polish(self, run: _Run, h: int, kept: tuple[float, State] | None, iterations: int) -> None:
        """L-BFGS on a fixed, evenly spread set of h-step windows; undone if it does not lower
        the loss, or raises the held-out error above that of the weights Adam kept."""
        model = self.model
        if self.polish_network_only:
            params = [p for p in model.residual.parameters() if p.requires_grad]
            penalty, what = 0.0, "the network (constants kept, no penalty)"
        else:
            params, penalty, what = self.params, self.penalty, "all weights"
        which = self.windows.spread(h, max(1, LBFGS_WORK // h))
        before = _copy(model)

        def loss() -> torch.Tensor:
            return self.loss(which, h, self.windows, penalty)

        # an expensive automatic polish (more window-steps than a cheap full batch) stops at
        # a plateau
        plateau = self.config.lbfgs_iterations == AUTO and len(which) * h > FULL_BATCH_WORK
        start, end, done = _minimise(loss, params, iterations, plateau=plateau)
        if kept is not None and end < start and self.held_out_error() > kept[0]:
            model.load_state_dict(before)  # it polished the training windows only
            end = start
        ran = (
            f"{done} of {iterations} L-BFGS iterations (then under "
            f"{PLATEAU_TOLERANCE:.0%} per {LBFGS_PLATEAU_CHUNK})"
            if done < iterations
            else f"{iterations} L-BFGS iterations"
        )
        run.lbfgs = (
            f"{ran} on {h}-step windows, {what}: loss {start:.3g} -> {end:.3g}"
            if end < start
            else f"{ran} on {h}-step windows did not help: undone"
        )
        if end < start:
            run.best_iteration = run.iterations


def _minimise(
    loss: Callable[[], torch.Tensor],
    params: list[torch.Tensor],
    iterations: int,
    plateau: bool = False,
) -> tuple[float, float, int]:
    """L-BFGS (strong Wolfe line search) on ``loss()`` over ``params``; undone unless the
    loss falls and stays finite. With ``plateau``, it runs in chunks of
    ``LBFGS_PLATEAU_CHUNK`` iterations (one optimizer, so its memory carries over) and stops
    after a chunk that lowered the loss by less than ``PLATEAU_TOLERANCE``. Returns the loss
    before and after, and the iterations run."""
    with torch.no_grad():
        start = float(loss())
    if not params or not iterations:
        return start, start, 0
    before = [p.detach().clone() for p in params]
    chunk = min(LBFGS_PLATEAU_CHUNK, iterations) if plateau else iterations
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=chunk, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        value = loss()
        if torch.isfinite(value):
            value.backward()
        return value

    done, end = 0, start
    while done < iterations:  # one pass without the plateau rule (chunk = iterations)
        optimizer.step(closure)
        done += chunk
        previous = end
        with torch.no_grad():
            end = float(loss())
        if not (plateau and math.isfinite(end) and previous - end >= PLATEAU_TOLERANCE * previous):
            break
    if not (math.isfinite(end) and end < start):
        with torch.no_grad():
            for p, b in zip(params, before, strict=True):
                p.copy_(b)
        return start, start, done
    return start, end, done


def _copy(model: torch.nn.Module) -> State:
    return copy.deepcopy(model.state_dict())


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


def _outside_trust(prior: Any, start: dict[str, float]) -> list[str]:
    """Set every constant that moved more than ``PHYSICS_FIRST_TRUST`` times from its value in
    ``start`` (or changed sign) back to it; return their names."""
    specs = getattr(prior, "constant_specs", {})
    raw = getattr(prior, "raw", {})
    reset = []
    for name, value in _physical_of(prior).items():
        first = start.get(name)
        if not first or name not in raw:
            continue
        if 1 / PHYSICS_FIRST_TRUST <= value / first <= PHYSICS_FIRST_TRUST:
            continue
        with torch.no_grad():
            raw[name].fill_(specs[name].to_raw(first))
        reset.append(name)
    return reset


def _physical_of(prior: Any) -> dict[str, float]:
    return prior.physical_parameters() if hasattr(prior, "physical_parameters") else {}


def _physical(model: HybridODE) -> dict[str, float]:
    return {} if model.prior is None else _physical_of(model.prior)


def _check_sampling(data: DatasetLike, dt: float) -> None:
    for i, ep in enumerate(data.episodes):
        steps = np.diff(np.asarray(ep.times, dtype=np.float64))
        if steps.size and not np.allclose(steps, dt, rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"episode {i}: times are spaced {steps.min():.6g}..{steps.max():.6g}, but the "
                f"model's control interval dt is {dt:g}; resample the data or build the model "
                "with the data's dt (irregular sampling is not supported yet)"
            )
