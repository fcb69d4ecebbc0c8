"""A task for any Gymnasium environment with Box spaces: :class:`GymTask`.

Built-in tasks know their system (reward, termination, observation maps, textbook prior). A
foreign env comes with none of that, so a :class:`GymTask` takes what the env itself says and
learns the rest from the data:

- the state is the observation (a 1-D ``Box``), the actions are the ``Box`` action space
  (finite bounds required);
- the control interval is the env's ``dt`` (``env.unwrapped.dt``, e.g. MuJoCo and
  ``Pendulum-v1``) or ``tau`` (``CartPole``), else 1.0 with the time unit "steps";
- the episode length is the env's time limit (``max_episode_steps`` of its spec);
- episodes start where the real env's resets start them: a pool of reset observations with
  fixed seeds, from which :meth:`GymTask.sample_initial_states` draws;
- the reward and the termination are given as batched torch functions, or learned from the
  recorded data (:class:`~hybridgym.models.reward_model.RewardModel`,
  :class:`~hybridgym.models.reward_model.TerminationModel`, refitted by :meth:`GymTask.learn`);
- the physics prior is a user's :class:`~hybridgym.models.PhysicsPrior` (or none: the model is
  then a plain neural ODE, a black box).

:func:`resolve_task` turns what a user names (a task name, a Gymnasium id, a Task) into a Task.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.task import Task, get_task, task_names
from hybridgym.envs.user_code import check_prior, load_function, load_prior_factory
from hybridgym.models import PhysicsPrior
from hybridgym.models.arrays import Array
from hybridgym.models.reward_model import (
    RewardFitConfig,
    RewardFitReport,
    RewardModel,
    TerminationModel,
    fit_reward,
    fit_termination,
)

#: state and action names of a few well-known envs (their docs' observation tables); any
#: other env gets ``x0, x1, ...`` and ``u0, ...``
KNOWN_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pendulum-v1": (("cos_theta", "sin_theta", "theta_dot"), ("torque",)),
    "MountainCarContinuous-v0": (("position", "velocity"), ("force",)),
    "InvertedPendulum-v5": (
        ("cart_position", "pole_angle", "cart_velocity", "pole_angular_velocity"),
        ("force",),
    ),
}
#: how many reset observations make the start-state pool
START_POOL = 100
#: what make_real_env refuses, and what the message suggests
SUPPORTED = "a 1-D Box observation space and a Box action space with finite bounds"

RewardFunction = Callable[[Array, Array, Array], Array]
TerminationFunction = Callable[[Array], Array]


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` with errors a user can act on (``ValueError``): an
    unknown id (with close registered ids and task names), a missing optional dependency (with
    the install command) or an env that fails to build."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise ValueError(
            f"a task or Gymnasium env id must be a non-empty string, got {env_id!r}; see "
            "`hybridgym systems`"
        )
    module, colon, name = env_id.rpartition(":")
    if colon and not (module.strip() and name.strip()):
        raise ValueError(
            f"no task or Gymnasium env {env_id!r}: an env of another package is named "
            "'package.module:Id', with both parts (e.g. 'gymnasium.envs.classic_control:"
            "Pendulum-v1'); see `hybridgym systems`"
        )
    kwargs = dict(env_kwargs or {})
    try:
        return gym.make(env_id, **kwargs, **extra)
    except gym.error.DependencyNotInstalled as error:
        extra_name = "mujoco" if "mujoco" in str(error).lower() else None
        fix = f"pip install 'hybridgym[{extra_name}]'" if extra_name else "install it"
        raise ValueError(
            f"{env_id} needs a package that is not installed ({error}); {fix}"
        ) from None
    except (gym.error.NameNotFound, gym.error.VersionNotFound, gym.error.NamespaceNotFound) as e:
        tasks = difflib.get_close_matches(env_id.lower(), task_names(), n=1, cutoff=0.5)
        close = difflib.get_close_matches(env_id, list(gym.registry), n=2, cutoff=0.6)
        hints = [f"{t!r} (the built-in task: hybridgym loop {t})" for t in tasks]
        hints += [repr(c) for c in close]
        hint = f" Did you mean {' or '.join(hints)}?" if hints else ""
        raise ValueError(
            f"no task or Gymnasium env {env_id!r} ({e}).{hint} An env of another package is "
            "named 'package.module:Id' (importing the module registers it)"
        ) from None
    except gym.error.Error as error:
        raise ValueError(f"gym.make({env_id!r}) failed (no such task or env?): {error}") from None
    except ModuleNotFoundError as error:
        raise ValueError(
            f"no task or Gymnasium env {env_id!r}: gym.make could not import "
            f"{error.name or str(error)!r}; is the package that registers it installed?"
        ) from None
    except ImportError as error:
        raise ValueError(f"no task or Gymnasium env {env_id!r}: {error}") from None
    except TypeError as error:
        raise ValueError(
            f"gym.make({env_id!r}, **{kwargs}) failed: {error}; check --env-kwargs"
        ) from None


def check_spaces(env: gym.Env, env_id: str) -> tuple[spaces.Box, spaces.Box]:
    """The env's observation and action spaces, or a ``ValueError`` naming the space that is
    not supported and what is."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, spaces.Box):
        raise ValueError(
            f"{env_id} has the observation space {obs} ({type(obs).__name__}); hybridgym models "
            f"systems with {SUPPORTED}. Flatten a Dict/Tuple observation in a wrapper "
            "(gymnasium.wrappers.FlattenObservation) and register the wrapped env"
        )
    if len(obs.shape) != 1 or not np.issubdtype(obs.dtype, np.number):
        raise ValueError(
            f"{env_id} has the observation space {obs}; hybridgym needs {SUPPORTED} (a flat "
            "vector of numbers; images and matrices are not supported)"
        )
    if not isinstance(act, spaces.Box):
        raise ValueError(
            f"{env_id} has the action space {act} ({type(act).__name__}); hybridgym controls "
            f"systems with {SUPPORTED} (continuous actions: the model is a differential "
            "equation driven by them). For discrete actions use a model-free method"
        )
    if len(act.shape) != 1:
        raise ValueError(f"{env_id} has the action space {act}; hybridgym needs {SUPPORTED}")
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        raise ValueError(
            f"{env_id} has unbounded actions ({act}); hybridgym needs {SUPPORTED} (the planner "
            "samples inside them): register the env wrapped in "
            "gymnasium.wrappers.ClipAction or RescaleAction, or pass --env-kwargs that bound it"
        )
    return obs, act


def _control_interval(env: gym.Env) -> tuple[float, str]:
    """(dt, time unit): the env's ``dt`` or ``tau`` in seconds, else 1.0 step."""
    unwrapped = env.unwrapped
    for attribute in ("dt", "tau"):
        try:
            value = getattr(unwrapped, attribute, None)
        except Exception:  # a property that needs a model it lacks
            value = None
        if isinstance(value, int | float | np.floating) and not isinstance(value, bool):
            if np.isfinite(value) and value > 0:
                return float(value), "s"
    return 1.0, "steps"


def _spec_text(value: Any) -> str | None:
    """What config files record for a reward, termination or prior: the spec string as given,
    else ``module:qualname`` of a function or class, else None."""
    if value is None or isinstance(value, str):
        return value
    module = getattr(value, "__module__", "?")
    name = getattr(value, "__qualname__", type(value).__qualname__)
    return f"{module}:{name}"


class GymTask(Task):
    """The task of any Gymnasium env with Box spaces (see the module docstring).

    Args:
        env_id: a registered id (``"MountainCarContinuous-v0"``; ``"package.module:Id"``
            imports the package that registers it).
        env_kwargs: keyword arguments of ``gym.make``.
        reward: ``reward(state, action, next_state) -> B`` on torch batches (B x n, B x m,
            B x n), a ``"file.py:function"`` / ``"module:function"`` naming one, or None (the
            default): learned from the recorded rewards (:meth:`learn`).
        terminated: ``terminated(next_state) -> B`` (bool) likewise; None learns it from the
            episodes that ended by termination (an env never seen to terminate never does).
        prior: the known physics: a ``"file.py:Class"`` / ``"module:Class"`` naming a
            ``PhysicsPrior`` subclass built with no arguments, such a class, or None (the
            default: no prior, a black-box model).
        max_episode_steps: the episode length; None takes the env's time limit (an env
            without one needs this).
        state_names, action_names: names of the observation (= state) and action entries;
            None uses :data:`KNOWN_NAMES` or ``x0, ...`` / ``u0, ...``.
        angle_dims: state dimensions that are angles (wrapped in state differences).
        start_pool: how many reset observations (seeds 0, 1, ...) start states are drawn from.
        reward_hidden: hidden widths of the learned reward and termination networks.

    Raises:
        ValueError: an unknown id, a space that is not supported, no time limit, user code
            that fails its checks; the message says what was expected and how to fix it.

    Before :meth:`learn` has seen data, a learned reward is 0 and a learned termination never
    ends an episode.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        *,
        reward: RewardFunction | str | None = None,
        terminated: TerminationFunction | str | None = None,
        prior: type[torch.nn.Module] | Callable[[], torch.nn.Module] | str | None = None,
        max_episode_steps: int | None = None,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        angle_dims: Sequence[int] = (),
        start_pool: int = START_POOL,
        reward_hidden: Sequence[int] = (32, 32),
    ) -> None:
        if env_kwargs is not None and not isinstance(env_kwargs, dict):
            raise TypeError(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
        if isinstance(start_pool, bool) or not isinstance(start_pool, int) or start_pool < 1:
            raise ValueError(f"start_pool must be an int >= 1, got {start_pool!r}")
        self.name = env_id
        self.real_env_id = env_id
        self._env_kwargs = dict(env_kwargs or {})
        env = make_env(env_id, self._env_kwargs)
        try:
            obs_space, act_space = check_spaces(env, env_id)
            self.dt, self.time_unit = _control_interval(env)
            spec_steps = env.spec.max_episode_steps if env.spec is not None else None
            self.max_episode_steps = _episode_steps(env_id, max_episode_steps, spec_steps)
            self._limit_given = max_episode_steps is not None and max_episode_steps != spec_steps
            threshold = env.spec.reward_threshold if env.spec is not None else None
            self.return_threshold = None if threshold is None else float(threshold)
            self._pool = _reset_pool(env, start_pool)
        finally:
            env.close()
        n, m = int(obs_space.shape[0]), int(act_space.shape[0])
        known_states, known_actions = KNOWN_NAMES.get(env_id, ((), ()))
        self._state_names = _names(
            "state_names", state_names, known_states if len(known_states) == n else None, "x", n
        )
        self._action_names = _names(
            "action_names", action_names, known_actions if len(known_actions) == m else None, "u", m
        )
        self.angle_dims = tuple(int(i) for i in angle_dims)
        if any(not 0 <= i < n for i in self.angle_dims):
            raise ValueError(f"angle_dims must be state dimensions 0 ... {n - 1}, got {angle_dims}")
        self._observation_space = spaces.Box(
            obs_space.low.astype(np.float32), obs_space.high.astype(np.float32), dtype=np.float32
        )
        self._action_space = spaces.Box(
            act_space.low.astype(np.float32), act_space.high.astype(np.float32), dtype=np.float32
        )
        self._reward_spec, self._terminated_spec, self._prior_spec = reward, terminated, prior
        self._reward = _function(reward, "reward", n, m, "reward")
        self._terminated = _function(terminated, "terminated", n, m, "terminated")
        self._prior_factory = self._prior(prior)
        self._reward_hidden = tuple(reward_hidden)
        self.reset_learned(0)
        learned = [
            k for k, f in (("reward", self._reward), ("termination", self._terminated)) if f is None
        ]
        self.summary = (
            f"{env_id}: {n} states, {m} actions, dt {self.dt:g} {self.time_unit}, "
            f"{'learned ' + ' and '.join(learned) if learned else 'given reward'}, "
            f"{'prior ' + str(_spec_text(prior)) if prior is not None else 'black box'}"
        )

    # --- description -------------------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        return self._state_names

    @property
    def action_names(self) -> tuple[str, ...]:
        return self._action_names

    @property
    def observation_space(self) -> spaces.Box:
        return self._observation_space

    @property
    def action_space(self) -> spaces.Box:
        return self._action_space

    @property
    def real_env_kwargs(self) -> dict[str, Any]:
        return dict(self._env_kwargs)

    @property
    def start_states(self) -> np.ndarray:
        """The pool of reset observations start states are drawn from, K x n (a copy)."""
        return self._pool.copy()

    def record(self) -> dict[str, Any]:
        """What identifies this task, as plain types (a run's ``config.json`` holds it):
        env id and kwargs, episode length, and the reward, termination and prior as the specs
        they were given as (a function or class as ``module:qualname``; None: learned / none).
        """
        return {
            "env_id": self.real_env_id,
            "env_kwargs": self.real_env_kwargs,
            "max_episode_steps": self.max_episode_steps,
            "reward": _spec_text(self._reward_spec),
            "terminated": _spec_text(self._terminated_spec),
            "prior": _spec_text(self._prior_spec),
            "state_names": list(self.state_names),
            "action_names": list(self.action_names),
            "angle_dims": list(self.angle_dims),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GymTask:
        """The task :meth:`record` describes (its reward, termination and prior specs are
        loaded again; a function recorded as ``module:qualname`` must be importable)."""
        return cls(
            record["env_id"],
            record.get("env_kwargs") or {},
            reward=record.get("reward"),
            terminated=record.get("terminated"),
            prior=record.get("prior"),
            max_episode_steps=record.get("max_episode_steps"),
            state_names=record.get("state_names"),
            action_names=record.get("action_names"),
            angle_dims=record.get("angle_dims", ()),
        )

    def make_real_env(self, **kwargs: Any) -> gym.Env:
        """``gym.make`` the env, with this task's time limit where it was given."""
        extra = {"max_episode_steps": self.max_episode_steps} if self._limit_given else {}
        return make_env(self.real_env_id, {**self._env_kwargs, **kwargs}, **extra)

    # --- maps: the observation is the state --------------------------------------------------
    def obs_to_state(self, obs: Array) -> Array:
        return obs * 1  # a copy, of the same kind

    def state_to_obs(self, state: Array) -> Array:
        return state * 1

    # --- the control problem -----------------------------------------------------------------
    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        if self._reward is not None:
            return self._reward(state, action, next_state)
        terminal = self.terminated(next_state)  # picks the head of ending transitions
        return _through_torch(self.reward_model, state, action, next_state, terminal)

    def terminated(self, next_state: Array) -> Array:
        if self._terminated is not None:
            return self._terminated(next_state)
        model = self.termination_model
        if isinstance(next_state, torch.Tensor):
            # a planner asks reward() (which picks its head by termination) and then
            # terminated() of the same states: the second answer is the first one's
            last = self.__dict__.get("_last_terminated")
            key = (_version(next_state), id(model), *(t._version for t in model.state_tensors))
            if last is not None and last[0] is next_state and last[1] == key:
                return last[2]
            out = _on_model(model, next_state)(model.terminated)
            self.__dict__["_last_terminated"] = (next_state, key, out)
            return out
        x = torch.as_tensor(np.asarray(next_state), dtype=torch.float32)
        with torch.no_grad():
            return _on_model(model, x)(model.terminated).cpu().numpy()

    def sample_initial_states(
        self,
        n: int,
        generator: np.random.Generator | torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Array:
        """n states drawn (with replacement) from the pool of the real env's reset
        observations."""
        if isinstance(generator, np.random.Generator):
            return self._pool[generator.integers(len(self._pool), size=n)].copy()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                "generator must be a numpy.random.Generator, a torch.Generator or None, "
                f"got {type(generator).__name__}"
            )
        where = generator.device if generator is not None else device
        rows = torch.randint(len(self._pool), (n,), generator=generator, device=where)
        pool = torch.as_tensor(self._pool, dtype=dtype, device=rows.device)
        return pool[rows]

    # --- learned parts -------------------------------------------------------------------------
    @property
    def learned_parts(self) -> dict[str, torch.nn.Module]:
        parts = {"reward": self.reward_model, "termination": self.termination_model}
        return {name: model for name, model in parts.items() if model is not None}

    def reset_learned(self, seed: int = 0) -> None:
        """New learned reward and termination models (those not given), initial weights drawn
        with ``seed``; they know nothing until :meth:`learn`."""
        n, m, hidden = self.state_dim, self.action_dim, self._reward_hidden
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.reward_model = RewardModel(n, m, hidden) if self._reward is None else None
            self.termination_model = (
                TerminationModel(n, hidden) if self._terminated is None else None
            )
        finally:
            torch.random.set_rng_state(state)  # the caller's random stream is not touched
        for model in (self.reward_model, self.termination_model):
            if model is not None:
                model.requires_grad_(False)  # trained by learn() only

    def learn(self, data: Any, config: RewardFitConfig | None = None) -> dict[str, RewardFitReport]:
        """Refit the learned reward and termination on ``data`` (warm-started), in place.

        Args:
            data: a ``TrajectoryDataset`` of this task (rewards and ``terminated`` flags
                recorded, as ``TrajectoryDataset.collect`` does).
            config: the fits' settings (:class:`RewardFitConfig`).

        Returns:
            ``{"reward": report, "termination": report}`` for the parts that are learned.
        """
        reports = {}
        self.__dict__.pop("_last_terminated", None)  # the termination model changes now
        if self.reward_model is not None:
            reports["reward"] = fit_reward(self.reward_model, data, config)
        if self.termination_model is not None:
            reports["termination"] = fit_termination(self.termination_model, data, config)
        return reports

    # --- dynamics ----------------------------------------------------------------------------
    def make_prior(self, perturbation: float | None = None) -> PhysicsPrior | None:
        """A fresh instance of the user's prior, or None without one (a black-box model).

        ``perturbation`` does not apply: a user's prior starts from the constants its class
        sets."""
        if self._prior_factory is None:
            return None
        return self._prior_factory()

    def _make_prior(self, scale: float) -> PhysicsPrior:  # make_prior is overridden
        raise NotImplementedError

    def _prior(self, prior: Any) -> Callable[[], torch.nn.Module] | None:
        if prior is None:
            return None
        if isinstance(prior, str):
            return load_prior_factory(prior, self.state_dim, self.action_dim)
        if not callable(prior):
            raise TypeError(
                "prior must be a 'file.py:Class' string, a class or None, got "
                f"{type(prior).__name__}"
            )
        check_prior(prior(), self.state_dim, self.action_dim, option="prior")
        return prior

    def __repr__(self) -> str:
        kwargs = f", {self._env_kwargs!r}" if self._env_kwargs else ""
        return f"GymTask({self.real_env_id!r}{kwargs})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GymTask):
            return NotImplemented
        callables = [self._reward_spec, self._terminated_spec, self._prior_spec]
        theirs = [other._reward_spec, other._terminated_spec, other._prior_spec]
        same_code = all(
            a is b or (isinstance(a, str) and a == b)
            for a, b in zip(callables, theirs, strict=True)
        )
        return same_code and self.record() == other.record()

    def __hash__(self) -> int:
        return hash((GymTask, self.real_env_id))


def _episode_steps(env_id: str, given: int | None, from_spec: int | None) -> int:
    steps = given if given is not None else from_spec
    if steps is None:
        raise ValueError(
            f"{env_id} has no time limit (its spec has no max_episode_steps); give one, e.g. "
            "--max-episode-steps 1000 (GymTask(max_episode_steps=...))"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"max_episode_steps must be an int >= 1, got {steps!r}")
    return steps


def _reset_pool(env: gym.Env, count: int) -> np.ndarray:
    """Observations of ``env.reset(seed=k)`` for k = 0 ... count - 1, count x n float64."""
    pool = np.stack([np.asarray(env.reset(seed=k)[0], dtype=np.float64) for k in range(count)])
    if not np.all(np.isfinite(pool)):
        raise ValueError("the env's reset gave a non-finite observation")
    return pool


def _names(
    label: str, given: Sequence[str] | None, known: tuple[str, ...] | None, prefix: str, size: int
) -> tuple[str, ...]:
    if given is None:
        return known if known else tuple(f"{prefix}{i}" for i in range(size))
    names = tuple(given)
    if len(names) != size or not all(isinstance(x, str) and x for x in names):
        raise ValueError(f"{label} must be {size} non-empty strings, got {given!r}")
    if len(set(names)) != size:
        raise ValueError(f"{label} must be distinct, got {names}")
    return names


def _function(value: Any, what: str, n: int, m: int, kind: str) -> Callable[..., Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return load_function(value, f"--{what}", n, m, kind)
    if not callable(value):
        raise TypeError(f"{what} must be a function, a 'module:function' string or None")
    return value


def _version(x: torch.Tensor) -> int | None:
    """The tensor's version counter (None for an inference-mode tensor, which has none: it
    cannot be changed in place outside inference mode either)."""
    return None if x.is_inference() else x._version


def _on_model(model: torch.nn.Module, x: torch.Tensor) -> Callable[..., Any]:
    """A caller of ``model``'s methods with its parameters on ``x``'s device and dtype (moved
    once when they differ), whose result comes back in ``x``'s dtype where it is floating."""
    param = model.mlp.input_shift  # (an attribute: walking the parameters costs more)
    if param.device != x.device:
        model.to(x.device)
        param = model.mlp.input_shift

    def call(method: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        args = (x, *args)
        out = method(*(a.to(param.dtype) if a.is_floating_point() else a for a in args))
        return out.to(x.dtype) if out.is_floating_point() else out

    return call


def _through_torch(
    model: torch.nn.Module, state: Array, action: Array, next_state: Array, terminal: Array
) -> Array:
    """``model(state, action, next_state, terminal)`` for torch tensors or numpy arrays (the
    same kind out)."""
    if isinstance(state, torch.Tensor):
        return _on_model(model, state)(model, action, next_state, terminal)
    x, u, x_next = (
        torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (state, action, next_state)
    )
    flags = torch.as_tensor(np.asarray(terminal, dtype=bool))
    with torch.no_grad():
        return _on_model(model, x)(model, u, x_next, flags).double().cpu().numpy()


def resolve_task(
    system: Task | str,
    *,
    env_kwargs: dict[str, Any] | None = None,
    prior: Any = None,
    reward: Any = None,
    terminated: Any = None,
    max_episode_steps: int | None = None,
) -> Task:
    """The task of what a user names: a :class:`Task` as it is, a built-in task name through
    :func:`get_task` (``env_kwargs`` become its keyword arguments), anything else as a
    Gymnasium id through :class:`GymTask`.

    Raises:
        ValueError: a built-in task with a prior, reward or termination (those are the task's
            own), or what :class:`GymTask` refuses.
    """
    foreign = {"prior": prior, "reward": reward, "terminated": terminated}
    given = sorted(k for k, v in foreign.items() if v is not None)
    if isinstance(system, Task):
        if given or env_kwargs or max_episode_steps is not None:
            raise ValueError(f"a Task ({system!r}) is used as it is; build it with {given}")
        return system
    if not isinstance(system, str):
        raise TypeError(f"a system is a task name, a Gymnasium id or a Task, got {system!r}")
    if system in task_names():
        if given or max_episode_steps is not None:
            raise ValueError(
                f"{system!r} is a built-in task with its own reward, termination and prior; "
                f"{', '.join(given) or 'max_episode_steps'} apply to Gymnasium ids (--env)"
            )
        return get_task(system, **(env_kwargs or {}))
    return GymTask(system, env_kwargs, max_episode_steps=max_episode_steps, **foreign)
