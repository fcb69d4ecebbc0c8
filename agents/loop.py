"""The model-based loop: act in the real system, store the data, refit the model, retrain the
controller, repeat; with a run directory that survives a crash at any moment.

Run directory (``docs/loop.md``)::

    RUN/config.json        the task and LoopConfig (a resumed run must match it)
        data/              the real transitions, one episode file each (append-only store)
        models/            model_NNN.pt after the fit of iteration NNN
        agents/            agent_NNN.pt / .zip after the training of iteration NNN
        metrics.csv        one row per iteration
        tensorboard/       the same scalars as TensorBoard events (when tensorboard is installed)
        plots/             return vs real steps, model error
        state.json         written last: iterations completed
        lock               pid of the process running the loop

Every file is written to a temporary name and renamed into place, ``state.json`` last. A run
killed at any moment loses at most the iteration in flight, never a recorded episode; running
the same loop on the same directory resumes it.
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import difflib
import inspect
import io
import json
import math
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hybridgym.agents.differentiable import DifferentiablePolicyAgent, PolicyTrainingConfig
from hybridgym.agents.evaluation import evaluate
from hybridgym.agents.mpc import MPCAgent
from hybridgym.envs import GymTask, LearnedVecEnv, Task, get_task, resolve_task
from hybridgym.models import (
    Ensemble,
    FitConfig,
    FitReport,
    HybridODE,
    TrajectoryDataset,
    fit,
    prediction_errors,
)
from hybridgym.models.arrays import unwrap_angles, usable_device
from hybridgym.models.files import DirectoryLock, atomic_write_text, read_json_object
from hybridgym.models.fit import NON_FINITE_LIMIT
from hybridgym.models.hybrid import METHODS, check_model_matches
from hybridgym.models.residual import ACTIVATIONS
from hybridgym.models.reward_model import RewardFitConfig, load_parts, save_parts

AGENTS = ("differentiable", "mpc", "sac", "td3", "ppo")
METRIC_COLUMNS = (
    "iteration",
    "real_steps",
    "real_episodes",
    "eval_return_mean",
    "eval_return_std",
    "model_error",
    "fit_loss",
    "fit_seconds",
    "agent_seconds",
    "collect_seconds",
    "eval_seconds",
    "wall_seconds",
)
#: columns that differ between identical runs (everything else is reproducible on CPU)
TIMING_COLUMNS = ("fit_seconds", "agent_seconds", "collect_seconds", "eval_seconds", "wall_seconds")
STATE_VERSION = 1
#: LoopConfig fields a resumed run may change (more iterations extend a finished run)
RESUMABLE_CHANGES = ("iterations", "progress", "stop_return", "eval_every")


@dataclass(frozen=True)
class LoopConfig:
    """What the model-based loop does. ``LoopConfig.for_task(name, **overrides)`` starts from
    the task's row of :data:`LOOP_DEFAULTS`.

    Attributes:
        iterations: fit/train/evaluate rounds; after each one but the last, the agent
            collects ``steps_per_iteration`` more real steps.
        initial_steps: uniformly random real steps before the first fit.
        steps_per_iteration: real steps the agent collects (with exploration) per round.
        episode_steps: cap on the length of a collected episode (None: the task's episode);
            short learning episodes from fresh start states spread the data.
        collect_schedule: real steps the agent collects before iteration 2, 3, ... (the last
            entry repeats; empty: ``steps_per_iteration`` every time), e.g. short learning
            trials first and full episodes later.
        agent: ``differentiable`` (policy trained through the model), ``mpc`` (planner, no
            training), or ``sac`` / ``td3`` / ``ppo`` (SB3 in a LearnedVecEnv).
        agent_kwargs: PolicyTrainingConfig fields, MPCAgent arguments, or SB3 overrides.
        agent_updates: per round: policy updates (differentiable) or model steps (SB3).
        first_agent_updates: the same for the first round (None: ``agent_updates``).
        refit_every: ``mpc`` only: while collecting, refit the model every this many real
            steps on all data including the episode in progress (the planner uses the new
            model from the next step; the real system waits, as it can in simulation).
        learned_envs: SB3 agents: parallel learned envs.
        start_fraction: share of model rollouts restarted from recorded real states.
        hidden, activation, method, substeps: the residual network and the integrator.
        residual_mask: state dimensions the residual may change (None: all), e.g. only the
            accelerations when the missing physics is a force.
        ensemble: models in an ensemble (1: a single HybridODE).
        prior_perturbation: how far the prior's constants start from the truth (None: the
            task's documented default); ``prior=False`` drops the prior (a plain neural ODE).
        prior: use the task's physics prior.
        residual: use a residual network (False: physics only, constants fitted).
        fit: FitConfig fields for every refit (warm started).
        stop_return: finish early once the evaluation's mean return reaches this.
        eval_episodes, eval_seed: the deterministic evaluation on the real system; the same
            seeds every round, apart from the seeds used to collect data (0 episodes: no
            evaluation, the return columns are NaN).
        eval_every: evaluate after every this many iterations, and always after the last
            one; the other rows have NaN returns (``stop_return`` is checked where there is an
            evaluation).
        exploration: ``mpc`` with an ensemble: while collecting, the planner adds an optimism
            bonus where the members disagree, at most this fraction of the recorded rewards'
            range (max - min over steps) per step (``MPCAgent(exploration=...)``; 0: off).
            Evaluation never explores.
        error_horizon: k of the model-error column (k-step prediction error on the newest real
            data, measured before the model is refitted on it).
        seed: seeds everything else.
        device: where the model and the agent live.
        progress: progress bars for fits and training.
    """

    iterations: int = 3
    initial_steps: int = 200
    steps_per_iteration: int = 200
    episode_steps: int | None = None
    collect_schedule: tuple[int, ...] = ()
    agent: str = "differentiable"
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    agent_updates: int = 300
    first_agent_updates: int | None = None
    refit_every: int | None = None
    learned_envs: int = 16
    start_fraction: float = 0.5
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    residual_mask: tuple[int, ...] | None = None
    method: str = "rk4"
    substeps: int = 1
    ensemble: int = 1
    prior_perturbation: float | None = None
    prior: bool = True
    residual: bool = True
    fit: dict[str, Any] = field(default_factory=dict)
    stop_return: float | None = None
    eval_episodes: int = 10
    eval_every: int = 1
    exploration: float = 0.0
    eval_seed: int = 1_000_000
    error_horizon: int = 10
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        positive = ("iterations", "steps_per_iteration", "agent_updates", "learned_envs")
        for name in (*positive, "error_horizon", "substeps", "ensemble", "eval_every"):
            _check_int(name, getattr(self, name), 1)
        _check_int("eval_episodes", self.eval_episodes, 0)
        self._tuple_field("collect_schedule")
        for steps in self.collect_schedule:
            _check_int("every collect_schedule entry", steps, 1)
        _check_int("initial_steps", self.initial_steps, 1)
        for name in ("seed", "eval_seed"):
            _check_int(name, getattr(self, name), 0)
            if getattr(self, name) >= SEED_LIMIT:  # member k's torch seed is seed * 1000 + k
                raise ValueError(f"{name} must be below 2**32, got {getattr(self, name)!r}")
        if self.refit_every is not None and self.agent != "mpc":
            raise ValueError(
                f"refit_every works with the mpc agent only (a trained agent would need "
                f"retraining after each refit), got agent {self.agent!r}"
            )
        for name in ("episode_steps", "first_agent_updates", "refit_every"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.agent not in AGENTS:
            hint = difflib.get_close_matches(str(self.agent), AGENTS, n=1)
            tip = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(f"agent must be one of {AGENTS}, got {self.agent!r}{tip}")
        if not (_is_real(self.start_fraction) and 0 <= self.start_fraction <= 1):
            raise ValueError(f"start_fraction must be in [0, 1], got {self.start_fraction!r}")
        if not (_is_real(self.exploration) and 0 <= self.exploration < math.inf):
            raise ValueError(f"exploration must be a finite number >= 0, got {self.exploration!r}")
        for name in ("prior", "residual", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (self.prior or self.residual):
            raise ValueError("a model needs the prior, the residual or both (prior/residual)")
        self._check_model_fields()
        if self.stop_return is not None and not (
            _is_real(self.stop_return) and not math.isnan(self.stop_return)
        ):
            raise ValueError(f"stop_return must be a number or None, got {self.stop_return!r}")
        if not isinstance(self.device, str) or not self.device.strip():
            raise TypeError(
                f"device must be a torch device name such as 'cpu', got {self.device!r}"
            )
        for name in ("agent_kwargs", "fit"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict, got {getattr(self, name)!r}")
            keys = [k for k in getattr(self, name) if not isinstance(k, str)]
            if keys:
                raise TypeError(f"{name} must have str keys (field names), got {keys!r}")
        known = {f.name for f in dataclasses.fields(FitConfig)}
        unknown = sorted(set(self.fit) - known)
        if unknown:
            raise ValueError(f"fit has unknown FitConfig fields {unknown}; known: {sorted(known)}")
        try:
            FitConfig(**self.fit)
        except (TypeError, ValueError) as error:
            raise type(error)(f"fit: {error}") from None

    def _tuple_field(self, name: str) -> None:
        """Store a sequence field as a tuple (a TypeError for anything else)."""
        value = getattr(self, name)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
        object.__setattr__(self, name, tuple(value))

    def _check_model_fields(self) -> None:
        """hidden, activation, method, residual_mask and prior_perturbation."""
        self._tuple_field("hidden")
        if self.residual_mask is not None:
            self._tuple_field("residual_mask")
        for width in self.hidden:
            _check_int("every hidden entry (a layer width)", width, 1)
        if self.residual_mask is not None:
            for dim in self.residual_mask:
                _check_int("every residual_mask entry (a state dimension)", dim, 0)
            if len(set(self.residual_mask)) != len(self.residual_mask):
                raise ValueError(f"residual_mask repeats a dimension: {self.residual_mask}")
        for name, known in (("activation", tuple(ACTIVATIONS)), ("method", METHODS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in known:
                hint = difflib.get_close_matches(str(value), known, n=1)
                tip = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ValueError(f"{name} must be one of {known}, got {value!r}{tip}")
        perturbation = self.prior_perturbation
        if perturbation is not None and not (
            _is_real(perturbation) and math.isfinite(perturbation) and perturbation >= 0
        ):
            raise ValueError(
                f"prior_perturbation must be a finite number >= 0 or None (the task's default), "
                f"got {perturbation!r}"
            )

    @classmethod
    def for_task(cls, task: Task | str, **overrides: Any) -> LoopConfig:
        """The task's defaults from :data:`LOOP_DEFAULTS` (a task without a row there, e.g. any
        Gymnasium env: :func:`generic_loop_defaults`), then ``overrides``."""
        task = resolve_task(task)
        if task.name in LOOP_DEFAULTS:
            values = copy.deepcopy(LOOP_DEFAULTS[task.name])
        else:
            values = generic_loop_defaults(task)
        agent = overrides.get("agent", values.get("agent", cls.agent))
        if agent != "mpc" and "refit_every" not in overrides:
            values.pop("refit_every", None)  # the task's in-episode refits serve the planner
        by_agent = values.pop("agent_kwargs", {})
        values["agent_kwargs"] = dict(by_agent.get(agent, {})) if isinstance(agent, str) else {}
        for key in ("fit", "agent_kwargs"):  # nested dicts merge
            if key in overrides and not isinstance(overrides[key], dict):
                raise TypeError(f"{key} must be a dict of field values, got {overrides[key]!r}")
            if key in overrides and key in values:
                overrides = {**overrides, key: {**values[key], **overrides[key]}}
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LoopConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("hidden", "collect_schedule", "residual_mask"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    def evaluates(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` ends with an evaluation on the real system."""
        last = iteration == self.iterations
        return self.eval_episodes > 0 and (iteration % self.eval_every == 0 or last)

    def target_steps(self, iteration: int) -> int:
        """Real transitions the dataset holds once iteration ``iteration`` has collected."""
        total = self.initial_steps
        for k in range(iteration - 1):
            if self.collect_schedule:
                total += self.collect_schedule[min(k, len(self.collect_schedule) - 1)]
            else:
                total += self.steps_per_iteration
        return total


#: seeds are below this (numpy's and torch's generators take them; member k of an ensemble
#: seeds torch with seed * 1000 + k)
SEED_LIMIT = 2**32

#: the refit of every built-in task: a few short episodes, so no validation split (the loop
#: measures the model on new data instead), Adam then a short L-BFGS polish, the residual-size
#: penalty so the constants stay physical
SMALL_DATA_FIT: dict[str, Any] = {
    "horizon": 10,
    "iterations": 500,
    "residual_penalty": 0.1,
    "batch_size": None,
    "learning_rate": 1e-2,
    "lbfgs_iterations": 50,
    "validation_fraction": 0.0,
    "physics_first": False,
}
#: the differentiable agent's settings on the built-in tasks
POLICY_IN_MODEL: dict[str, Any] = {"batch_size": 128, "horizon": 32}

#: per-task loop settings (the benchmarks' and the demo's): ``LoopConfig.for_task``;
#: ``agent_kwargs`` is keyed by agent, the chosen agent's row is used
LOOP_DEFAULTS: dict[str, dict[str, Any]] = {
    "pendulum": {
        # the planner needs no training: the loop's wall-clock time is the fit's
        # (benchmarks/loop_pendulum.py compares it with the differentiable policy and SAC)
        "agent": "mpc",
        # Pendulum-v1 is an explicit Euler-type map: Euler steps keep the residual simple
        "method": "euler",
        "initial_steps": 50,
        "steps_per_iteration": 50,
        "episode_steps": 50,
        "iterations": 2,
        "agent_updates": 150,
        "first_agent_updates": 300,
        "fit": SMALL_DATA_FIT,
        "agent_kwargs": {
            "differentiable": POLICY_IN_MODEL,
            "mpc": {"horizon": 30, "samples": 300, "iterations": 4},
        },
    },
    "lotka_volterra": {
        # one random 100-step episode, then one episode per iteration; the planner looks
        # 2.5 time units ahead with narrow sampling (wide sampling harvests noisily)
        "agent": "mpc",
        "initial_steps": 100,
        "steps_per_iteration": 100,
        "iterations": 3,
        "fit": SMALL_DATA_FIT,
        "agent_kwargs": {
            "mpc": {"horizon": 10, "samples": 300, "iterations": 6, "init_std": 0.2},
            "differentiable": POLICY_IN_MODEL,
        },
    },
    "datacenter": {
        # 8 hours of random cooling, then one day under the planner per iteration; the
        # residual is one network shared by the zones (Task.make_residual) and corrects only
        # the temperatures (loads and the clock are known exactly).
        # Cooling energy is linear in the action, so sampling noise costs energy directly:
        # a short horizon with narrow sampling (a perfect-model planner with horizon 3
        # scores -38.9 against the thermostat's -40.7; horizon 6 with wide sampling -52)
        "agent": "mpc",
        "initial_steps": 96,
        "steps_per_iteration": 288,
        "iterations": 3,
        "fit": SMALL_DATA_FIT,
        "agent_kwargs": {
            "mpc": {
                "horizon": 3,
                "samples": 200,
                "iterations": 8,
                "init_std": 0.1,
                "momentum": 0.0,
            },
            "differentiable": POLICY_IN_MODEL,
        },
    },
    "cartpole_swingup": {
        # PILCO-style: 1 s of random actions, two 2.5 s learning trials, then full 10 s
        # episodes; the planner needs about 39 ms per action on one CPU thread with midpoint
        # steps (rk4: about twice that)
        "agent": "mpc",
        "method": "midpoint",
        # the task's residual: friction forces of the velocities through the mass matrix
        # (CartPoleForceResidual); first 10 s episode solved at 16 s in 5 of 5 seeds with tanh,
        # 4 of 5 with relu, 3 of 5 with a whole-state 32x32 MLP
        "hidden": (32, 32),
        "activation": "tanh",
        "residual_mask": (1, 3),  # the missing physics is friction: forces, not kinematics
        "initial_steps": 20,
        "collect_schedule": (50, 50, 200),
        # refit every 2 s within an episode: the model sees the swing-up before balancing
        # (whole-state MLP, horizon 30: solved at 16 s in 2 of 5 seeds with it, 0 without)
        "refit_every": 40,
        "iterations": 5,
        "eval_episodes": 2,
        "fit": SMALL_DATA_FIT,
        "agent_kwargs": {
            # 1.6 s ahead with 3 CEM iterations: with the force residual, horizons 32 and 40
            # both solve the first 10 s episode in 5 of 5 seeds; 32 costs a fifth less per
            # action (the whole-state MLP needed 40: 3 of 5, against 2 of 5 with 30)
            "mpc": {"horizon": 32, "samples": 300, "iterations": 3},
            "differentiable": POLICY_IN_MODEL,
        },
    },
}


#: the model of a system without a row in LOOP_DEFAULTS (the loop's and ``hybridgym fit``'s
#: without --task): an MLP vector field (plus the system's prior where it has one), Euler
#: steps at the data's control interval (a sampled system is a discrete-time map: Euler makes
#: the network learn that map's increments directly)
GENERIC_MODEL: dict[str, Any] = {"method": "euler", "hidden": (32, 32), "activation": "silu"}
#: how far the generic planner looks ahead: this many seconds where the system's time unit is
#: physical (mechanical systems of a human scale; Pendulum-v1: 30 steps, InvertedPendulum-v5:
#: 38), else (time counted in steps) this share of an episode (MountainCarContinuous-v0: 124
#: steps), within the bounds below
PLAN_SECONDS = 1.5
PLAN_EPISODE_SHARE = 1 / 8
PLAN_STEPS = (10, 150)


def generic_loop_defaults(task: Task) -> dict[str, Any]:
    """LoopConfig values for a task without a row in :data:`LOOP_DEFAULTS` (any Gymnasium
    env, a dataset's system): derived from its control interval and episode length, no
    constants per system.

    - the model: :data:`GENERIC_MODEL`, an ensemble of 5 (a plain neural ODE per member, or the
      task's prior plus a network where it has one), fitted with ``FitConfig``'s defaults;
    - data: a fifth of an episode per collected trial (at least 50 steps, at most an
      episode), the first one random; later trials from the real env's start states;
    - the planner: CEM over :data:`PLAN_SECONDS` of physical time (or
      :data:`PLAN_EPISODE_SHARE` of an episode counted in steps), with sampling noise held
      for a twelfth of the horizon (slow, searchable action sequences over long horizons);
      while collecting it is optimistic where the ensemble disagrees, worth up to the
      recorded rewards' range per step (``exploration=1``: an unknown state might be as good as
      the best seen plus that range, as R-max assumes), which is what finds the goal of a
      sparse task such as MountainCarContinuous-v0; evaluation never explores.
    """
    steps = task.max_episode_steps
    trial = min(steps, max(50, steps // 5))  # real steps per collected episode and iteration
    if getattr(task, "time_unit", "") == "steps":
        ahead = steps * PLAN_EPISODE_SHARE
    else:
        ahead = PLAN_SECONDS / task.dt
    horizon = int(min(steps, max(PLAN_STEPS[0], min(round(ahead), PLAN_STEPS[1]))))
    return {
        **GENERIC_MODEL,
        "agent": "mpc",
        "ensemble": 5,
        "initial_steps": trial,
        "steps_per_iteration": trial,
        "episode_steps": trial,
        "iterations": 10,
        "exploration": 1.0,
        "eval_episodes": 5,
        "agent_kwargs": {
            "mpc": {
                "horizon": horizon,
                "samples": 300,
                "iterations": 4,
                "noise_hold": max(1, horizon // 12),
            }
        },
    }


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --- the loop ----------------------------------------------------------------------------------
class ModelBasedLoop:
    """Fit a hybrid model to real data, train a controller in it, act, repeat.

    Args:
        task: a Task, a task name or a Gymnasium id (any env with Box spaces: a
            :class:`~hybridgym.envs.GymTask`); its real system is acted on, its prior (where
            it has one) starts the model, its learned parts (a GymTask's reward and
            termination) are refitted with the model.
        config: a :class:`LoopConfig` (default: ``LoopConfig.for_task(task)``).
        run_dir: the run directory; an existing one is resumed if its ``config.json`` matches.
        log: called with one line per event (default: print to stderr); None silences it.

    ``run()`` runs the remaining iterations and returns the metrics history (one dict per
    iteration, the rows of ``metrics.csv``).
    """

    def __init__(
        self,
        task: Task | str,
        config: LoopConfig | None = None,
        run_dir: str | os.PathLike[str] = "runs/loop",
        *,
        log: Callable[[str], None] | None = print,
    ) -> None:
        self.task = resolve_task(task)
        self.config = config if config is not None else LoopConfig.for_task(self.task)
        if not isinstance(self.config, LoopConfig):
            raise TypeError(f"config must be a LoopConfig, got {type(self.config).__name__}")
        self.run_dir = pathlib.Path(run_dir)
        self._log = log
        self.device = usable_device(self.config.device, "LoopConfig.device")
        self.history: list[dict[str, Any]] = []
        self.model: HybridODE | Ensemble | None = None
        self.agent: Any = None
        self.data: TrajectoryDataset | None = None
        self._wall = 0.0

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        log: Callable[[str], None] | None = print,
        **changes: Any,
    ) -> ModelBasedLoop:
        """The loop recorded in ``run_dir/config.json`` (its task, or Gymnasium env with its
        reward, termination and prior specs, and its LoopConfig), to resume it.

        Args:
            run_dir: a run directory written by :meth:`run`.
            log: as for the constructor.
            **changes: LoopConfig fields to change; a resumed run accepts only
                ``iterations``, ``progress``, ``stop_return`` and ``eval_every`` changes.

        Raises:
            FileNotFoundError: no ``config.json`` there.
        """
        path = pathlib.Path(run_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {run_dir} holds no loop run")
        stored = read_json_object(path)
        if "env" in stored:
            task: Task = GymTask.from_record(stored["env"])
        else:
            task = get_task(stored["task"], **stored.get("task_kwargs", {}))
        values = {**stored["loop"], **changes}
        return cls(task, LoopConfig(**values), run_dir, log=log)

    # --- paths and records -------------------------------------------------------------------
    def path(self, *parts: str) -> pathlib.Path:
        return self.run_dir.joinpath(*parts)

    def _say(self, message: str) -> None:
        if self._log is not None:
            if self._log is print:
                print(f"[hybridgym loop] {message}", file=sys.stderr, flush=True)
            else:
                self._log(message)

    def _description(self) -> dict[str, Any]:
        out = {"task": self.task.name, "task_kwargs": self.task.real_env_kwargs}
        record = getattr(self.task, "record", None)
        if record is not None:  # a Gymnasium env's task: id, kwargs, reward, prior specs
            out["env"] = record()
        return {**out, "loop": self.config.to_dict()}

    def _check_or_write_config(self) -> None:
        wanted = json.loads(json.dumps(self._description()))
        path = self.path("config.json")
        if path.exists():
            stored = read_json_object(path)
            diffs = [
                d
                for d in _differences(stored, wanted)
                if not d.startswith(tuple(f"loop.{k}:" for k in RESUMABLE_CHANGES))
            ]
            if diffs:
                raise ValueError(
                    f"{self.run_dir} holds a run with another configuration ({'; '.join(diffs)}); "
                    "resume it with the same settings or choose a new run directory"
                )
            if stored == wanted:
                return
        atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")

    def _read_state(self) -> dict[str, Any]:
        path = self.path("state.json")
        if not path.exists():
            return {"completed_iterations": 0}
        state = read_json_object(path)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path} has version {state.get('version')}, expected 1")
        return state

    def _check_data_against_state(self, state: dict[str, Any]) -> None:
        """The recorded episodes hold what ``state.json`` says the completed iterations used:
        at least that many episodes (an interrupted iteration may have added more), whose
        first ones add up to its real steps; else a deleted, replaced or duplicated episode
        file is named as such."""
        episodes, steps = int(state.get("real_episodes", 0)), int(state.get("real_steps", 0))
        counts = [episode.num_steps for episode in self.data.episodes]
        if len(counts) < episodes or sum(counts[:episodes]) != steps:
            raise ValueError(
                f"{self.path('data')} holds {len(counts)} episodes whose first {episodes} have "
                f"{sum(counts[:episodes])} steps, but {self.path('state.json')} records "
                f"{episodes} episodes of {steps} steps: episode files were deleted, replaced or "
                "duplicated; restore them or start a new run directory"
            )

    def _read_metrics(self, completed: int) -> list[dict[str, Any]]:
        path = self.path("metrics.csv")
        if completed == 0 or not path.exists():
            return []
        with path.open(newline="") as f:
            rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return rows[:completed]

    def _write_metrics(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})
        atomic_write_text(self.path("metrics.csv"), buffer.getvalue())

    # --- pieces --------------------------------------------------------------------------------
    def _new_model(self) -> HybridODE | Ensemble:
        cfg, task = self.config, self.task
        members = []
        for k in range(cfg.ensemble):
            torch.manual_seed(cfg.seed * 1000 + k)
            prior = task.make_prior(perturbation=cfg.prior_perturbation) if cfg.prior else None
            if prior is None and not cfg.residual:
                raise ValueError(
                    f"{task.name} has no physics prior, so the model needs the residual "
                    "network (residual=True)"
                )
            residual = (
                task.make_residual(cfg.hidden, cfg.activation, structured=cfg.prior, prior=prior)
                if cfg.residual
                else None
            )
            members.append(
                HybridODE(
                    prior,
                    residual,
                    dt=task.dt,
                    method=cfg.method,
                    substeps=cfg.substeps,
                    residual_mask=cfg.residual_mask if cfg.residual else None,
                    state_dim=task.state_dim,
                    action_dim=task.action_dim,
                )
            )
        model = members[0] if cfg.ensemble == 1 else Ensemble(members)
        return model.to(self.device)

    def _load_model(self, iteration: int) -> HybridODE | Ensemble:
        path = self.path("models", f"model_{iteration:03d}.pt")
        cfg = self.config
        # a prior that no checkpoint can rebuild (a user's class) is built here and handed in
        priors = [self.task.make_prior(cfg.prior_perturbation) for _ in range(cfg.ensemble)]
        if not cfg.prior or any(getattr(p, "rebuild_spec", None) for p in priors):
            priors = None
        elif priors[0] is None:
            priors = None
        if cfg.ensemble > 1:
            model: HybridODE | Ensemble = Ensemble.load(
                path, priors=priors, map_location=self.device
            )
        else:
            prior = priors[0] if priors else None
            model = HybridODE.load(path, prior=prior, map_location=self.device)
        task = self.task
        check_model_matches(model, task.state_dim, task.action_dim, task.dt, path, task.name)
        return model

    def _learn_task(self, iteration: int) -> float:
        """Refit the task's learned parts (a Gymnasium env's reward and termination) on all
        the data and save them as ``models/task_NNN.pt``; the seconds it took."""
        parts = self.task.learned_parts
        if not parts:
            return 0.0
        start = time.perf_counter()
        reports = self.task.learn(self.data, RewardFitConfig(seed=self.config.seed + iteration))
        save_parts(parts, self.path("models", f"task_{iteration:03d}.pt"))
        for name, report in reports.items():
            detail = (
                f"RMSE {report.rmse:.3g}"
                if report.rmse is not None
                else f"{report.terminal_states} terminal states"
                + (
                    f", recall {report.recall:.3f}, specificity {report.specificity:.3f}"
                    if report.recall is not None
                    else " (never terminates)"
                )
            )
            self._say(
                f"iteration {iteration}: learned {name} on {report.transitions} steps, {detail}"
            )
        return time.perf_counter() - start

    def _new_agent(self, model: Any) -> Any:
        cfg = self.config
        if cfg.agent == "differentiable":
            kwargs = {"seed": cfg.seed, **cfg.agent_kwargs}
            return DifferentiablePolicyAgent(self.task, PolicyTrainingConfig(**kwargs), self.device)
        if cfg.agent == "mpc":  # on the loop's device: the planner holds the loop's model
            kwargs = {"seed": cfg.seed, **self._exploration(), **cfg.agent_kwargs}
            return MPCAgent(model, self.task, **kwargs, device=self.device)
        from hybridgym.agents.sb3 import make_agent

        return make_agent(
            cfg.agent,
            self._learned_env(model),
            task=self.task,
            seed=cfg.seed,
            device=str(self.device),
            tensorboard_log=None,
            **cfg.agent_kwargs,
        )

    def _exploration(self) -> dict[str, Any]:
        """The planner's exploration bonus (``LoopConfig.exploration`` times the recorded
        rewards' range) and the state scale it is measured in (the recorded states' spread)."""
        rewards = self.data.rewards() if self.data is not None and len(self.data) else None
        if self.config.exploration == 0 or rewards is None or not len(rewards):
            return {}
        spread = self.data.states().std(0)
        scale = np.maximum(spread, 1e-6 + 1e-3 * np.abs(self.data.states()).mean(0))
        size = float(rewards.max() - rewards.min())
        return {"exploration": self.config.exploration * size, "state_scale": scale.tolist()}

    def _learned_env(self, model: Any) -> LearnedVecEnv:
        recorded = self.data is not None and len(self.data) > 0
        env = LearnedVecEnv(
            model,
            self.task,
            self.config.learned_envs,
            start="dataset" if self.config.start_fraction > 0 and recorded else "task",
            dataset=self.data if recorded else None,
            device=self.device,  # else the env would move the loop's model to the CPU
        )
        env.seed(self.config.seed)
        return env

    def _agent_path(self, iteration: int) -> pathlib.Path:
        suffix = ".zip" if self.config.agent in ("sac", "td3", "ppo") else ".pt"
        return self.path("agents", f"agent_{iteration:03d}{suffix}")

    def _load_agent(self, iteration: int, model: Any) -> Any:
        cfg = self.config
        if cfg.agent == "mpc":
            return self._new_agent(model)
        path = self._agent_path(iteration)
        if cfg.agent == "differentiable":
            return DifferentiablePolicyAgent.load(path, device=self.device)
        from hybridgym.agents.sb3 import load_agent

        return load_agent(cfg.agent, path, self._learned_env(model), device=str(self.device))

    def _save_agent(self, iteration: int) -> None:
        cfg = self.config
        if cfg.agent == "mpc":
            return
        path = self._agent_path(iteration)
        if cfg.agent == "differentiable":
            self.agent.save(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.zip")
        self.agent.save(tmp)
        os.replace(tmp, path)

    def _collect_until(self, target_steps: int, policy: Any) -> int:
        """Act in the real system until the dataset holds ``target_steps`` transitions; each
        episode is appended (one atomic file) as soon as it ends."""
        cfg, task, data = self.config, self.task, self.data
        env = task.make_real_env()
        try:
            while data.num_steps < target_steps:
                index = len(data)
                budget = target_steps - data.num_steps
                if cfg.episode_steps is not None:
                    budget = min(budget, cfg.episode_steps)
                seed = cfg.seed * 1_000_003 + 1_009 * index
                if hasattr(policy, "reseed_exploration"):
                    policy.reseed_exploration(seed)
                if hasattr(policy, "reset"):
                    policy.reset()
                actor = policy
                if policy is not None and cfg.refit_every is not None:
                    actor = _RefitWhileActing(self, policy, cfg.refit_every, index)
                chunk = TrajectoryDataset.collect(
                    env, task, actor, steps=budget, seed=seed, deterministic=False
                )
                for episode in chunk.episodes:
                    data.append(episode)
                    self._say(f"recorded episode {len(data) - 1} ({episode.num_steps} steps)")
        finally:
            env.close()
        return data.num_steps

    def _model_error(self, model: Any, fresh: TrajectoryDataset) -> float:
        """k-step prediction RMSE on data the model has not been fitted to, averaged over the
        state variables after dividing each by its spread in all the data."""
        if len(fresh) == 0:
            return float("nan")
        errors = prediction_errors(model, fresh, (self.config.error_horizon,))
        errors = errors[self.config.error_horizon]
        scale = self.data.states().std(0) + 1e-8
        values = [errors[name] / s for name, s in zip(fresh.state_names, scale, strict=True)]
        return float(np.mean(values))

    def _fit_config(self, iteration: int) -> FitConfig:
        values = {"progress": self.config.progress, **self.config.fit}
        values["seed"] = self.config.seed + iteration
        return FitConfig(**values)

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Run (or resume) until ``config.iterations`` rounds are complete."""
        self.check_settings()  # before the run directory is touched
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with DirectoryLock(self.run_dir, "run directory"):
            self._check_or_write_config()
            return self._run()

    def check_settings(self) -> None:
        """Build what the run builds from its settings alone, writing and collecting nothing:
        the model (masks, sizes, the prior), the agent with ``agent_kwargs`` (a planner's or SB3
        algorithm's keywords, their values) and the fit's config; so a wrong setting fails
        before the first real step, with the run directory as it was. ``run`` calls it first;
        torch's global random state is left as it was.

        Raises:
            TypeError, ValueError: a setting the model, the agent or the fit refuses.
        """
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            model = self._new_model()
            self._fit_config(1)
            try:
                self._new_agent(model)  # with no data yet, an SB3 agent's envs start as the task's
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"agent_kwargs ({cfg.agent}): {error}{self._keyword_hint(str(error))}"
                ) from None

    def _keyword_hint(self, message: str) -> str:
        """'; did you mean ...?' for an unexpected keyword of the planner or the differentiable
        agent close to one it takes (make_agent's own message names SB3's)."""
        match = re.search(r"unexpected keyword argument '(\w+)'", message)
        if match is None or self.config.agent not in ("mpc", "differentiable"):
            return ""
        if self.config.agent == "mpc":
            known = list(inspect.signature(MPCAgent.__init__).parameters)
        else:
            known = [f.name for f in dataclasses.fields(PolicyTrainingConfig)]
        hint = difflib.get_close_matches(match.group(1), known, n=1)
        return f"; did you mean {hint[0]!r}?" if hint else ""

    def _run(self) -> list[dict[str, Any]]:
        cfg, task = self.config, self.task
        state = self._read_state()
        done = int(state["completed_iterations"])
        self.history = self._read_metrics(done)
        if len(self.history) != done:
            raise ValueError(
                f"{self.path('metrics.csv')} has {len(self.history)} rows but state.json "
                f"says {done} iterations are complete; the run directory was edited"
            )
        data_dir = self.path("data")
        if (data_dir / "dataset.json").exists():
            self.data = TrajectoryDataset.load(data_dir)
        else:
            self.data = TrajectoryDataset(
                state_names=task.state_names,
                action_names=task.action_names,
                dt=task.dt,
                angle_dims=task.angle_dims,
            )
            self.data.save(data_dir)
        self._wall = float(self.history[-1]["wall_seconds"]) if self.history else 0.0
        evaluating = state.get("evaluating")
        if evaluating is not None and evaluating.get("iteration") != done + 1:
            raise ValueError(
                f"{self.path('state.json')} records an evaluation of iteration "
                f"{evaluating.get('iteration')} after {done} complete ones; the run directory "
                "was edited"
            )
        if done:
            self._check_data_against_state(state)
        # the models of the last complete iteration, or of the one whose evaluation was cut
        latest = done + 1 if evaluating is not None else done
        if latest:
            self.model = self._load_model(latest)
            if self.task.learned_parts:
                load_parts(self.task.learned_parts, self.path("models", f"task_{latest:03d}.pt"))
            self.agent = self._load_agent(latest, self.model)
            self._say(f"resuming {self.run_dir} after iteration {done}")
        else:
            self.model = self._new_model()
            self.task.reset_learned(cfg.seed)  # a Gymnasium env's reward and termination
        if evaluating is None and (done >= cfg.iterations or self._reached_stop()):
            self._say(f"{self.run_dir} is complete ({done} iterations)")
            return self.history
        for iteration in range(done + 1, max(cfg.iterations, done + 1) + 1):
            self._iteration(iteration, evaluating if iteration == done + 1 else None)
            if self._reached_stop():
                self._say(f"iteration {iteration}: reached stop_return {cfg.stop_return}")
                break
        return self.history

    def _reached_stop(self) -> bool:
        stop = self.config.stop_return
        return (
            bool(self.history) and stop is not None and self.history[-1]["eval_return_mean"] >= stop
        )

    def _iteration(self, iteration: int, evaluating: dict[str, Any] | None = None) -> None:
        """One round: collect, fit, train, evaluate, record. ``evaluating``: the record of an
        evaluation a kill interrupted (state.json); the round then goes on from its next
        episode with the model and agent it saved, collecting and fitting nothing again."""
        cfg = self.config
        if evaluating is None:
            evaluating = self._collect_fit_train(iteration)
            if cfg.evaluates(iteration):  # from here a kill resumes the evaluation
                self._write_state(iteration - 1, evaluating)
        else:
            self._say(
                f"iteration {iteration}: resuming its evaluation after "
                f"{len(evaluating['returns'])} of {cfg.eval_episodes} episodes"
            )
        part = evaluating["row"]
        self._wall += part["collect_seconds"] + part["fit_seconds"] + part["agent_seconds"]
        mean, std, eval_seconds = self._evaluate(iteration, evaluating)
        row = {
            "iteration": iteration,
            "real_steps": self.data.num_steps,
            "real_episodes": len(self.data),
            "eval_return_mean": mean,
            "eval_return_std": std,
            "model_error": part["model_error"],
            "fit_loss": part["fit_loss"],
            "fit_seconds": part["fit_seconds"],
            "agent_seconds": part["agent_seconds"],
            "collect_seconds": part["collect_seconds"],
            "eval_seconds": eval_seconds,
            "wall_seconds": self._wall,
        }
        self.history.append(row)
        self._write_metrics()
        self._write_tensorboard(row)
        self._plot()
        self._write_state(iteration, None)
        self._say(
            f"iteration {iteration}: real steps {row['real_steps']}, eval return "
            f"{row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f}, model error "
            f"{part['model_error']:.3g}, fit {part['fit_seconds']:.1f} s, agent "
            f"{part['agent_seconds']:.1f} s"
        )

    def _collect_fit_train(self, iteration: int) -> dict[str, Any]:
        """Collect, fit and train for ``iteration`` (saving model, learned parts and agent);
        the evaluation record to fill: the row's values so far, no episode yet."""
        cfg = self.config
        target = cfg.target_steps(iteration)
        start = time.perf_counter()
        if iteration == 1:
            self._say(f"iteration 1: collecting {cfg.initial_steps} random real steps")
            self._collect_until(target, None)
        else:
            self._say(f"iteration {iteration}: collecting real steps up to {target}")
            self._collect_until(target, self.agent)
        collect_seconds = time.perf_counter() - start
        last_fit_steps = cfg.target_steps(iteration - 1) if iteration > 1 else 0
        fresh = _episodes_after(self.data, last_fit_steps) if iteration > 1 else self.data
        model_error = self._model_error(self.model, fresh)

        self._say(f"iteration {iteration}: fitting the model to {self.data.num_steps} steps")
        start = time.perf_counter()
        report = self._fit_or_keep(self.data, self._fit_config(iteration), f"iteration {iteration}")
        self.model.save(self.path("models", f"model_{iteration:03d}.pt"))
        self._learn_task(iteration)
        fit_seconds = time.perf_counter() - start

        self._say(f"iteration {iteration}: training the {cfg.agent} agent in the model")
        start = time.perf_counter()
        updates = cfg.agent_updates
        if iteration == 1 and cfg.first_agent_updates is not None:
            updates = cfg.first_agent_updates
        self._train_agent(updates)
        agent_seconds = time.perf_counter() - start
        self._save_agent(iteration)
        row = {
            "model_error": model_error,
            "fit_loss": report.history[-1]["loss"] if report.history else float("nan"),
            "fit_seconds": fit_seconds,
            "agent_seconds": agent_seconds,
            "collect_seconds": collect_seconds,
        }
        return {"iteration": iteration, "row": row, "returns": [], "lengths": [], "seconds": 0.0}

    def _evaluate(self, iteration: int, record: dict[str, Any]) -> tuple[float, float, float]:
        """The real evaluation of ``iteration`` (mean and std of the returns, seconds), one
        episode at a time from where ``record`` stands; after each episode the record (returns,
        the planner's random state) goes to state.json, so a kill loses one episode at most and
        the resumed evaluation is the one an uninterrupted run makes."""
        cfg, task = self.config, self.task
        if not cfg.evaluates(iteration):
            return float("nan"), float("nan"), 0.0
        returns, lengths = record["returns"], record["lengths"]
        generator = getattr(self.agent, "generator", None)
        if not isinstance(generator, torch.Generator):
            generator = None
        if generator is not None and record.get("generator"):
            state = np.frombuffer(base64.b64decode(record["generator"]), dtype=np.uint8)
            generator.set_state(torch.from_numpy(state.copy()))
        if not returns:
            self._say(
                f"iteration {iteration}: evaluating on the real system ({cfg.eval_episodes} "
                f"episodes of up to {task.max_episode_steps} steps)"
            )
        start = time.perf_counter() - record["seconds"]
        for index in range(len(returns), cfg.eval_episodes):
            result = evaluate(
                self.agent, task, episodes=1, seed=cfg.eval_seed + index, progress=cfg.progress
            )
            returns.append(float(result.returns[0]))
            lengths.append(int(result.lengths[0]))
            record["seconds"] = time.perf_counter() - start
            self._say(
                f"iteration {iteration}: evaluation episode {index + 1}/{cfg.eval_episodes}: "
                f"return {returns[-1]:.2f} in {lengths[-1]} steps ({record['seconds']:.0f} s)"
            )
            if generator is not None:
                raw = generator.get_state().cpu().numpy().tobytes()
                record["generator"] = base64.b64encode(raw).decode("ascii")
            if index + 1 < cfg.eval_episodes:
                self._write_state(iteration - 1, record)
        values = np.asarray(returns, dtype=np.float64)
        return float(values.mean()), float(values.std()), float(record["seconds"])

    def _write_state(self, completed: int, evaluating: dict[str, Any] | None) -> None:
        """state.json: ``completed`` iterations (with the real steps and episodes they used)
        and, while an iteration is being evaluated, its evaluation record."""
        last = self.history[completed - 1] if completed else {}  # the data they used
        steps, episodes = int(last.get("real_steps", 0)), int(last.get("real_episodes", 0))
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "completed_iterations": completed,
            "real_steps": steps,
            "real_episodes": episodes,
            "finished": evaluating is None
            and (completed == self.config.iterations or self._reached_stop()),
        }
        if evaluating is not None:
            state["evaluating"] = evaluating
        atomic_write_text(self.path("state.json"), json.dumps(state, indent=2) + "\n")

    def _fit_or_keep(self, data: TrajectoryDataset, config: FitConfig, what: str) -> FitReport:
        """Refit the model, keeping the refit only if it holds up against the model it replaces.

        A refit is refused when any member's weights, physical constants or predictions are
        not finite, its final loss is not finite or ended above ``DIVERGED_FACTOR`` times where
        it started, or any member predicts the data (1-step and ``error_horizon``-step windows
        from every recorded state, in units of the states' spread) more than
        ``WORSE_FACTOR`` times worse than the same member did before the refit. A refused
        refit is undone and tried once more with a tenth of the learning rate and half the
        steps; if that fails too, the previous model is kept. Each failure is a warning on
        stderr and a line in the log; the loop goes on either way."""
        before = copy.deepcopy(self.model.state_dict())
        reference = self._member_errors(data)
        retry = config.cautious()
        for attempt, cfg in enumerate((config, retry)):
            report = fit(self.model, data, cfg)
            problem = _fit_problem(self.model, report) or self._worse_than(data, reference)
            if problem is None:
                return report
            self.model.load_state_dict(before)
            then = (
                "retrying with a tenth of the learning rate and half the steps"
                if attempt == 0
                else "keeping the previous model"
            )
            self._say(f"{what}: the fit failed ({problem}); {then}")
            print(
                f"[hybridgym loop] warning: {what}: fit failed ({problem}); {then}", file=sys.stderr
            )
        return report

    def _members(self) -> list[HybridODE]:
        return list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]

    def _member_errors(self, data: TrajectoryDataset) -> list[dict[int, float]]:
        """Per member: horizon -> the k-step prediction RMSE on ``data``, averaged over the
        state variables in units of each one's spread (inf where a prediction is not
        finite)."""
        members = self._members()
        scale = np.maximum(data.states().std(0), 1e-9)
        horizons = sorted({1, self.config.error_horizon})
        out = []
        with torch.no_grad():
            for member in members:
                errors = prediction_errors(member, data, horizons)
                row = {}
                for h, by_name in errors.items():
                    value = float(np.mean(np.asarray(list(by_name.values())) / scale))
                    row[h] = value if math.isfinite(value) else math.inf
                out.append(row)
        return out

    def _worse_than(self, data: TrajectoryDataset, reference: list[dict[int, float]]) -> str | None:
        """Why the refitted members predict ``data`` unacceptably worse than ``reference``
        (the same members before the refit), or None."""
        for k, member in enumerate(self._members()):
            prior = getattr(member, "prior", None)
            if prior is not None and hasattr(prior, "constants"):
                with torch.no_grad():
                    bad = [n for n, v in prior.constants().items() if not torch.isfinite(v).all()]
                if bad:
                    return f"member {k}: constants {bad} not finite"
        for k, (now, then) in enumerate(zip(self._member_errors(data), reference, strict=True)):
            for h, error in now.items():
                if not math.isfinite(error):
                    return f"member {k}: {h}-step predictions not finite"
                if math.isfinite(then[h]) and error > WORSE_FACTOR * then[h] and error > 1e-6:
                    return (
                        f"member {k}: {h}-step error {error:.3g} against {then[h]:.3g} before "
                        "the refit"
                    )
        return None

    def _train_agent(self, updates: int) -> None:
        cfg = self.config
        if self.agent is None or cfg.agent == "mpc":  # the planner: a fresh plan, nothing to train
            self.agent = self._new_agent(self.model)
        if cfg.agent == "differentiable":
            self.agent.train(
                self.model,
                updates,
                start_states=self.data.states(),
                start_fraction=cfg.start_fraction,
            )
        elif cfg.agent != "mpc":
            self.agent.set_env(self._learned_env(self.model))
            self.agent.learn(updates, reset_num_timesteps=False, progress_bar=cfg.progress)

    def _write_tensorboard(self, row: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        # purge_step: an iteration written before a kill and written again on resume replaces
        # its earlier scalars in TensorBoard's view instead of doubling them
        step = row["real_steps"]
        with SummaryWriter(str(self.path("tensorboard")), purge_step=step) as writer:
            for key in METRIC_COLUMNS[3:]:
                writer.add_scalar(f"loop/{key}", row[key], global_step=step)

    def _plot(self) -> None:
        from hybridgym.agents.plots import plot_loop_metrics

        plot_loop_metrics(self.history, self.path("plots"), self.task)


class _RefitWhileActing:
    """Wraps the planner during collection: every ``every`` steps of an episode, refits the
    loop's model (which the planner holds) on the data plus the episode so far."""

    def __init__(self, loop: ModelBasedLoop, policy: Any, every: int, index: int) -> None:
        self.loop, self.policy, self.every, self.index = loop, policy, every, index
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.refits = 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        if episode_start is not None and np.any(episode_start):
            self.observations, self.actions = [], []
        self.observations.append(np.asarray(observation, dtype=np.float64))
        steps = len(self.actions)
        if steps and steps % self.every == 0:
            self._refit()
        action, _ = self.policy.predict(
            observation, state, episode_start=episode_start, deterministic=deterministic
        )
        self.actions.append(np.asarray(action, dtype=np.float64).reshape(-1))
        return action, None

    def _refit(self) -> None:
        loop, task = self.loop, self.loop.task
        states = unwrap_angles(task.obs_to_state(np.stack(self.observations)), task.angle_dims)
        partial = loop.data.subset([])  # same names, dt and angle dims; not bound to disk
        partial.append(states, np.stack(self.actions))
        data = loop.data.merge(partial)
        self.refits += 1
        loop._say(
            f"refitting during episode {self.index} after {len(self.actions)} steps "
            f"({data.num_steps} steps in all)"
        )
        config = loop._fit_config(10_000 * self.index + self.refits)
        loop._fit_or_keep(data, config, f"episode {self.index}, step {len(self.actions)}")


#: a refit whose final loss exceeds its first by this factor counts as diverged
DIVERGED_FACTOR = 10.0
#: a refit that predicts the data (any member, 1- or error_horizon-step windows) more than this
#: factor worse than the model it replaces is refused (a refit on more data is normally better
#: on all of it; the lr-3 refit of issue 15 was 350x worse)
WORSE_FACTOR = 2.0


def _fit_problem(model: torch.nn.Module, report: FitReport) -> str | None:
    """Why a fit's result must not be used, or None."""
    params = list(model.parameters())
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        return "non-finite weights"  # (one read of the device for all the weights)
    if (report.stop_reason or "").startswith(f"{NON_FINITE_LIMIT} non-finite losses"):
        return f"the fit gave up after {NON_FINITE_LIMIT} non-finite losses"
    if not report.history:
        return None
    last = report.history[-1]
    if not math.isfinite(last["loss"]):
        return f"final loss {last['loss']}"
    # compare at the final window length (the curriculum's early, shorter windows cost less)
    same = [row["loss"] for row in report.history if row.get("horizon") == last.get("horizon")]
    if last["loss"] > DIVERGED_FACTOR * same[0] and last["loss"] > 0:
        return f"loss rose from {same[0]:.3g} to {last['loss']:.3g}"
    return None


def _episodes_after(data: TrajectoryDataset, steps: int) -> TrajectoryDataset:
    """The episodes recorded after the first ``steps`` transitions."""
    ends = np.cumsum([0] + [episode.num_steps for episode in data.episodes])
    return data.subset(i for i in range(len(data)) if ends[i] >= steps)


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def _differences(stored: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(stored) | set(wanted)):
            out += _differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    if stored != wanted:
        return [f"{prefix.rstrip('.')}: {stored!r} there, {wanted!r} now"]
    return []
