"""Sample efficiency on the real system: the model-based loop against model-free RL.

:class:`Comparison` runs each method on the same seeds with the same budget of real-system
steps and the same evaluation (deterministic episodes from the same seeds on the real
system), and keeps the results in ``OUT/results.json``, rewritten atomically after every
trial, so an interrupted comparison resumes where it stopped (the loop's own run directories,
``OUT/loop/seed_S``, resume mid-run). :meth:`Comparison.write_reports` adds ``results.md`` and
``return_vs_real_steps.png``.

A trial's work is :func:`hybridgym.agents.trials.run_trial`; :meth:`Comparison.run_trial` runs
it here, the Ray backend (:mod:`hybridgym.agents.backends`) in worker processes, and both
record the result through :meth:`Comparison.record_trial`.

Each run stops once its evaluation reaches the threshold (the task's ``return_threshold``, or
one given) or its budget is spent: the loop evaluates after every iteration, a model-free agent
every ``eval_every`` real steps (``learning_curve``). Evaluation is measurement: its steps are
not real steps and its time is kept out of ``wall_seconds`` (``total_seconds`` includes it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import pathlib
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from hybridgym.agents.loop import LoopConfig, ModelBasedLoop
from hybridgym.agents.sb3 import ALGOS, make_agent
from hybridgym.agents.trials import run_trial
from hybridgym.envs import Task, resolve_task
from hybridgym.models import __version__
from hybridgym.models.files import DirectoryLock, atomic_write_text, read_json_object

#: the model-based loop, then the model-free SB3 algorithms
METHODS = ("loop", *sorted(ALGOS))
RESULTS_VERSION = 1
#: LoopConfig fields the comparison sets itself
LOOP_FIELDS_SET_HERE = ("seed", "iterations", "stop_return", "eval_episodes", "eval_seed")
#: CompareConfig fields a resumed comparison may change (more seeds or methods extend it)
RESUMABLE_CHANGES = ("seeds", "methods")
TABLE_COLUMNS = (
    "method",
    "real steps to threshold (median)",
    "seeds reaching it",
    "final real steps (median)",
    "final return (mean +- std)",
    "wall s/seed (no eval)",
    "total s/seed",
)


@dataclass(frozen=True)
class CompareConfig:
    """What :class:`Comparison` runs.

    Attributes:
        task: a built-in task name (``hybridgym systems`` lists them) or any Gymnasium id with
            Box spaces (a :class:`~hybridgym.envs.GymTask`: the loop gets the generic
            defaults, SB3 the env's row of ``AGENT_DEFAULTS`` where it has one).
        seeds: number of seeds; seeds 0, 1, ..., ``seeds - 1``, the same for every method.
        budget: real-system steps (transitions) each method may use per seed.
        methods: ``"loop"`` (``ModelBasedLoop`` with ``LoopConfig.for_task``) and/or model-free
            ``"sac"``, ``"td3"``, ``"ppo"`` (``make_agent`` on the real system).
        eval_episodes: deterministic evaluation episodes on the real system per evaluation.
        eval_seed: seed of the first evaluation episode (the loop's default).
        eval_every: model-free methods: evaluate every this many real steps (None:
            ``budget // 16``, at least 1). The loop evaluates after every iteration.
        threshold: a return that counts as solved; None uses the task's
            ``return_threshold`` (pendulum: -200); a task without one reports no steps to
            threshold and every run spends its whole budget.
        loop: ``LoopConfig`` overrides on top of the task's defaults (not the fields the
            comparison sets: seed, iterations, stop_return, eval_episodes, eval_seed).
        model_free: SB3 constructor overrides for the model-free methods (``make_agent``).
        env_kwargs, prior, reward, terminated, max_episode_steps: a Gymnasium id's
            :class:`~hybridgym.envs.GymTask` arguments (specs as strings, e.g.
            ``"priors.py:CartPole"``); not for a built-in task.
    """

    task: str
    budget: int
    seeds: int = 3
    methods: tuple[str, ...] = ("loop", "sac")
    eval_episodes: int = 10
    eval_seed: int = 1_000_000
    eval_every: int | None = None
    threshold: float | None = None
    loop: dict[str, Any] = field(default_factory=dict)
    model_free: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prior: str | None = None
    reward: str | None = None
    terminated: str | None = None
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("prior", "reward", "terminated"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a 'file.py:NAME' string or None, got {value!r}")
        if not isinstance(self.env_kwargs, dict):
            raise TypeError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        # unknown names and ids, bad specs: ValueError with the close ones; also keeps the
        # task for what describes it (trials build their own: the loop refits its parts)
        object.__setattr__(self, "_probe", self.make_task())
        _check_int("seeds", self.seeds, 1)
        _check_int("budget", self.budget, 1)
        _check_int("eval_episodes", self.eval_episodes, 1)
        _check_int("eval_seed", self.eval_seed, 0)
        if self.eval_every is not None:
            _check_int("eval_every", self.eval_every, 1)
        methods = tuple(self.methods)
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"methods must be distinct and at least one, got {list(methods)}")
        for method in methods:
            if method not in METHODS:
                close = difflib.get_close_matches(str(method), METHODS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}{hint}")
        object.__setattr__(self, "methods", methods)
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
                raise TypeError(f"threshold must be a number, got {self.threshold!r}")
            if not math.isfinite(self.threshold):
                raise ValueError(f"threshold must be finite, got {self.threshold!r}")
        for name in ("loop", "model_free"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict of overrides, got {getattr(self, name)!r}")
        fixed = sorted(set(self.loop) & set(LOOP_FIELDS_SET_HERE))
        if fixed:
            raise ValueError(
                f"loop overrides {fixed} are set by the comparison (seeds, budget, threshold, "
                "eval_episodes); use those options instead"
            )

    def make_task(self) -> Task:
        """A new task of this comparison (each trial gets its own: a Gymnasium env's learned
        reward and termination are refitted by that trial's loop)."""
        return resolve_task(
            self.task,
            env_kwargs=self.env_kwargs,
            prior=self.prior,
            reward=self.reward,
            terminated=self.terminated,
            max_episode_steps=self.max_episode_steps,
        )

    @property
    def probe(self) -> Task:
        """The task, for its description (name, id, threshold, spaces); do not run on it."""
        return self._probe

    @property
    def seed_values(self) -> list[int]:
        return list(range(self.seeds))

    @property
    def resolved_threshold(self) -> float | None:
        """``threshold``, else the task's ``return_threshold`` (None where it has none)."""
        if self.threshold is not None:
            return float(self.threshold)
        return self.probe.return_threshold

    @property
    def resolved_eval_every(self) -> int:
        return self.eval_every if self.eval_every is not None else max(1, self.budget // 16)

    def loop_config(self, seed: int) -> LoopConfig:
        """The loop's configuration for ``seed``: as many iterations as the budget allows."""
        values = {
            **self.loop,
            "seed": seed,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.eval_seed,
            "stop_return": self.resolved_threshold,
        }
        first = LoopConfig.for_task(self.probe, **values, iterations=1)
        if first.initial_steps > self.budget:
            raise ValueError(
                f"budget {self.budget} is below the loop's first iteration on {self.task} "
                f"({first.initial_steps} random real steps); raise the budget or lower the "
                "loop's initial_steps"
            )
        iterations = 1
        while first.target_steps(iterations + 1) <= self.budget:
            iterations += 1
        return LoopConfig.for_task(self.probe, **values, iterations=iterations)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["methods"] = list(self.methods)
        return out


def machine_info() -> dict[str, Any]:
    """The machine and software a result was measured with."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "hybridgym": __version__,
    }


def aggregate_curves(
    curves: Sequence[Sequence[Sequence[float]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median, minimum and maximum over runs of (real steps, return) curves.

    At every real-step count where some run was evaluated, each run that has been evaluated
    by then contributes its latest return; a run that stopped (threshold reached or budget
    spent) keeps its last return.

    Returns:
        (steps, median, low, high), each of shape S (S: distinct evaluated step counts).
    """
    runs = [sorted((float(s), float(r)) for s, r in curve) for curve in curves if len(curve)]
    steps = np.array(sorted({s for run in runs for s, _ in run}), dtype=float)
    median, low, high = (np.empty(len(steps)) for _ in range(3))
    for i, x in enumerate(steps):
        values = [next(r for s, r in reversed(run) if s <= x) for run in runs if run[0][0] <= x]
        median[i], low[i], high[i] = np.median(values), min(values), max(values)
    return steps, median, low, high


class Comparison:
    """Run the methods of a :class:`CompareConfig` on its seeds, recording into ``out``.

    Args:
        config: what to compare.
        out: the output folder; a folder that already holds ``results.json`` is resumed
            (trials recorded there are kept) if its configuration matches (seeds and methods
            may change).
        log: called with one line per event (None: silent).

    Raises:
        ValueError: bad overrides, a budget below the loop's first iteration, or an ``out``
            holding another comparison. Nothing is written before this is checked.
    """

    def __init__(
        self,
        config: CompareConfig,
        out: str | os.PathLike[str],
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(config, CompareConfig):
            raise TypeError(f"config must be a CompareConfig, got {type(config).__name__}")
        self.config = config
        self.task: Task = config.probe
        self.out = pathlib.Path(out)
        self._log = log
        self.loop_configs = (
            {seed: config.loop_config(seed) for seed in config.seed_values}
            if "loop" in config.methods
            else {}
        )
        if self.loop_configs:  # --loop-set values, now (the seeds' configs differ in the seed)
            first = next(iter(self.loop_configs.values()))
            ModelBasedLoop(self.task, first, self.out, log=None).check_settings()
        for method in config.methods:  # unknown SB3 overrides fail now, not after the loop
            if method != "loop":
                env = self.task.make_real_env()
                make_agent(method, env, task=self.task, seed=0, **config.model_free)
                env.close()
        self.results = self._read_results()

    @property
    def path(self) -> pathlib.Path:
        return self.out / "results.json"

    def say(self, message: str) -> None:
        """Pass one line to the comparison's log (nothing when it has none)."""
        if self._log is not None:
            self._log(message)

    def _read_results(self) -> dict[str, Any]:
        fresh = {
            "version": RESULTS_VERSION,
            "config": self._config_record(),
            "machine": machine_info(),
            "backend": {"name": "local"},
            "started": _now(),
            "date": _now(),
            "trials": {},
            "summary": {},
        }
        if not self.path.exists():
            return fresh
        try:
            stored = read_json_object(self.path)
            version, config = stored["version"], stored["config"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.path} is not a hybridgym comparison ({err})") from None
        if version != RESULTS_VERSION:
            raise ValueError(f"{self.path} has version {version}, expected {RESULTS_VERSION}")
        wanted = self._config_record()
        optional = {"loop_config"}  # there only while the loop is one of the methods
        diffs = [
            f"{key}: {config.get(key)!r} there, {wanted.get(key)!r} now"
            for key in sorted(set(config) | set(wanted))
            if key not in RESUMABLE_CHANGES
            and not (key in optional and (key not in config or key not in wanted))
            and config.get(key) != wanted.get(key)
        ]
        if diffs:
            raise ValueError(
                f"{self.out} holds a comparison with other settings ({'; '.join(diffs)}); "
                "rerun it with the same settings to resume, or choose another output folder"
            )
        stored["config"] = wanted
        return stored

    def _config_record(self) -> dict[str, Any]:
        record = self.config.to_dict()
        record["threshold"] = self.config.resolved_threshold
        record["eval_every"] = self.config.resolved_eval_every
        record["real_env_id"] = self.task.real_env_id
        record["task_kwargs"] = self.task.real_env_kwargs
        if self.loop_configs:
            record["loop_config"] = next(iter(self.loop_configs.values())).to_dict()
            del record["loop_config"]["seed"]
        return json.loads(json.dumps(record))  # as it reads back from results.json

    # --- trials ----------------------------------------------------------------------------------
    def trial(self, method: str, seed: int) -> dict[str, Any] | None:
        """The recorded result of ``method`` on ``seed``, or None."""
        return self.results["trials"].get(method, {}).get(str(seed))

    def pending(self) -> list[tuple[str, int]]:
        """(method, seed) of every trial not recorded yet, in the order :meth:`run` runs them."""
        return [
            (method, seed)
            for method in self.config.methods
            for seed in self.config.seed_values
            if self.trial(method, seed) is None
        ]

    def run(self, *, backend: str = "local", address: str | None = None) -> dict[str, Any]:
        """Run every pending trial, then write the reports; returns the results.

        Args:
            backend: ``"local"`` (one trial after the other in this process) or ``"ray"``
                (every trial a Ray task; :func:`hybridgym.agents.backends.run_pending`).
            address: Ray only: the cluster to connect to (None: as ``ray.init`` does).

        Raises:
            FileExistsError: another process is running a comparison in ``out``.
        """
        from hybridgym.agents.backends import run_pending

        # one comparison at a time owns OUT; what another wrote before we got it is read again
        with DirectoryLock(self.out, "output folder"):
            self.results = self._read_results()
            run_pending(self, backend=backend, address=address)
            self.write_reports()
        return self.results

    def run_trial(self, method: str, seed: int) -> dict[str, Any]:
        """Run one trial here and record it in ``results.json`` (atomically) before returning
        it."""
        if method not in self.config.methods or seed not in self.config.seed_values:
            raise ValueError(f"({method!r}, {seed}) is not a trial of this comparison")
        self.write_settings()
        prefix = f"{method}, seed {seed}"
        self.say(f"{prefix}: running")
        log = None if self._log is None else (lambda line: self.say(f"{prefix}: {line}"))
        trial = run_trial(self.config, self.out, method, seed, log=log)
        return self.record_trial(method, seed, trial)

    def write_settings(self, backend: dict[str, Any] | None = None) -> None:
        """Write ``results.json`` as it stands, with ``backend`` (``{"name": "local"}`` when
        None) as the backend the trials run on from now; called before any trial writes its
        run directory."""
        self.results["backend"] = {"name": "local"} if backend is None else dict(backend)
        self._write_results()

    def record_trial(self, method: str, seed: int, trial: dict[str, Any]) -> dict[str, Any]:
        """Record ``trial``, the result of ``method`` on ``seed`` (from
        :func:`~hybridgym.agents.trials.run_trial`, in this process or another), in
        ``results.json`` (atomically, with the summary) and return it."""
        if method not in self.config.methods or seed not in self.config.seed_values:
            raise ValueError(f"({method!r}, {seed}) is not a trial of this comparison")
        self.results["trials"].setdefault(method, {})[str(seed)] = trial
        self.results["summary"] = self.summary()
        self._write_results()
        reached = trial["steps_to_threshold"]
        self.say(
            f"{method}, seed {seed}: final return {trial['final_return_mean']:.1f} after "
            f"{trial['final_real_steps']} real steps; threshold "
            f"{'not reached' if reached is None else f'reached at {reached} real steps'}; "
            f"{trial['wall_seconds']:.1f} s (no eval), {trial['total_seconds']:.1f} s in all"
        )
        return trial

    def _write_results(self) -> None:
        self.results["date"] = _now()
        self.results["machine"] = machine_info()
        self.results["trials"] = self._canonical_trials()
        atomic_write_text(self.path, json.dumps(self.results, indent=2) + "\n")

    def _canonical_trials(self) -> dict[str, dict[str, Any]]:
        """The recorded trials in one order, whatever order they finished in: this
        configuration's methods first, in its order, then any others by name; seeds by
        number."""
        trials = self.results["trials"]
        order = list(self.config.methods) + sorted(set(trials) - set(self.config.methods))
        return {
            method: dict(sorted(trials[method].items(), key=lambda item: int(item[0])))
            for method in order
            if method in trials
        }

    # --- reports ---------------------------------------------------------------------------------
    def label(self, method: str) -> str:
        if method == "loop":
            agent = self._loop_agent()
            return f"model-based loop ({agent})"
        return f"{method.upper()} (model-free)"

    def _loop_agent(self) -> str:
        if self.loop_configs:
            return next(iter(self.loop_configs.values())).agent
        return LoopConfig.for_task(self.task, **self.config.loop).agent

    def _recorded(self) -> dict[str, list[dict[str, Any]]]:
        """The recorded trials of this configuration's methods and seeds (``results.json``
        also keeps those of methods or seeds dropped since), in seed order."""
        out = {}
        for method in self.config.methods:
            trials = [self.trial(method, seed) for seed in self.config.seed_values]
            trials = [t for t in trials if t is not None]
            if trials:
                out[method] = trials
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method with recorded trials: how many seeds, how many reached the threshold,
        the median real steps to it (a seed that never reached it counts as infinitely many;
        None where the median is not finite), the median final real steps, the final return's
        mean and std over seeds (of each seed's final evaluation mean), and the mean seconds
        per seed without and with evaluation."""
        out = {}
        for method, trials in self._recorded().items():
            to_threshold = [
                math.inf if t["steps_to_threshold"] is None else t["steps_to_threshold"]
                for t in trials
            ]
            median = statistics.median(to_threshold)
            finals = np.array([t["final_return_mean"] for t in trials])
            out[method] = {
                "label": self.label(method),
                "seeds": len(trials),
                "reached_threshold": sum(t["steps_to_threshold"] is not None for t in trials),
                "steps_to_threshold_median": median if math.isfinite(median) else None,
                "final_real_steps_median": statistics.median(t["final_real_steps"] for t in trials),
                "final_return_mean": float(finals.mean()),
                "final_return_std": float(finals.std()),
                "wall_seconds_mean": statistics.fmean(t["wall_seconds"] for t in trials),
                "total_seconds_mean": statistics.fmean(t["total_seconds"] for t in trials),
            }
        return out

    def table_rows(self) -> list[list[str]]:
        """One row of :data:`TABLE_COLUMNS` strings per method (the printed and the markdown
        tables)."""
        threshold = self.config.resolved_threshold
        rows = []
        for s in self.summary().values():
            steps = s["steps_to_threshold_median"]
            if threshold is None:
                steps_text, reached = "no threshold", "-"
            else:
                steps_text = "not reached" if steps is None else _number(steps)
                reached = f"{s['reached_threshold']}/{s['seeds']}"
            rows.append(
                [
                    s["label"],
                    steps_text,
                    reached,
                    _number(s["final_real_steps_median"]),
                    f"{s['final_return_mean']:.1f} +- {s['final_return_std']:.1f}",
                    f"{s['wall_seconds_mean']:.1f}",
                    f"{s['total_seconds_mean']:.1f}",
                ]
            )
        return rows

    def title(self) -> str:
        cfg, threshold = self.config, self.config.resolved_threshold
        solved = "no threshold" if threshold is None else f"threshold {threshold:g}"
        return (
            f"{self.task.real_env_id}: {len(cfg.seed_values)} seeds, budget {cfg.budget} real "
            f"steps, {solved}, return: mean of {cfg.eval_episodes} evaluation "
            f"episode{'' if cfg.eval_episodes == 1 else 's'}"
        )

    def markdown(self) -> str:
        """``results.md``: the table and what its columns mean."""
        lines = [f"# Comparison on {self.task.name}", "", self.title() + ".", ""]
        lines.append("| " + " | ".join(TABLE_COLUMNS) + " |")
        lines.append("|" + "---|" * len(TABLE_COLUMNS))
        lines += ["| " + " | ".join(row) + " |" for row in self.table_rows()]
        lines += [
            "",
            "Real steps to threshold: the real-system transitions a method had used when its "
            "evaluation first reached the threshold; the median over seeds counts a seed that "
            "never reached it as infinitely many. Each run stops at the threshold or when its "
            "budget is spent; its final return is that of its last evaluation (mean over seeds "
            "+- std over seeds). Seconds: mean per seed, without and with the evaluations. "
            f"Measured {self.results['date']} {self._where()}.",
            "",
        ]
        return "\n".join(lines)

    def _where(self) -> str:
        machine, backend = self.results["machine"], self.results.get("backend", {})
        if backend.get("name") == "ray":
            return (
                f"on Ray ({backend['nodes']} node(s), {backend['cpus']:g} CPUs; one CPU and one "
                f"torch thread per trial), driven from {machine['platform']}"
            )
        return (
            f"on {machine['platform']} ({machine['cpus']} CPUs, {machine['torch_threads']} "
            "torch thread(s))"
        )

    def write_reports(self) -> list[pathlib.Path]:
        """Write ``results.json`` (with the summary), ``results.md`` and
        ``return_vs_real_steps.png``; returns the paths."""
        from hybridgym.agents.plots import plot_return_vs_real_steps

        self.results["summary"] = self.summary()
        self._write_results()
        md = atomic_write_text(self.out / "results.md", self.markdown())
        summary, threshold = self.results["summary"], self.config.resolved_threshold
        curves = {}
        for method, trials in self._recorded().items():
            label, s = self.label(method), summary[method]
            if threshold is not None:
                steps = s["steps_to_threshold_median"]
                where = (
                    "not reached" if steps is None else f"reached at median {_number(steps)} steps"
                )
                label += f": threshold {where}, {s['reached_threshold']}/{s['seeds']} seeds"
            curves[label] = aggregate_curves([t["curve"] for t in trials])
        png = plot_return_vs_real_steps(
            curves,
            self.out / "return_vs_real_steps.png",
            threshold=self.config.resolved_threshold,
            title=f"{self.task.real_env_id}: return vs real steps",
            subtitle=f"median over {len(self.config.seed_values)} seeds, band min-max",
            eval_episodes=self.config.eval_episodes,
        )
        return [self.path, md, png]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _number(value: float) -> str:
    """An integer without decimals, anything else with one."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
