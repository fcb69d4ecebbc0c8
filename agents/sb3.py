"""Stable-baselines3 agents with per-task defaults: :func:`make_agent`.

The defaults of every algorithm and task live in two tables below, :data:`BASE_DEFAULTS` (per
algorithm) and :data:`AGENT_DEFAULTS` (per task and algorithm, on top of the base); nothing
else in hybridgym re-types a hyperparameter. Values are SB3 constructor keyword arguments, with
one shorthand: ``action_noise`` may be a float, the std of Gaussian exploration noise in SB3's
normalised action space [-1, 1].
"""

from __future__ import annotations

import base64
import copy
import difflib
import importlib
import inspect
import io
import json
import os
import pathlib
import pickle
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from hybridgym.envs import Task, get_task, task_for_env_id, task_names
from hybridgym.models.files import atomic_write_bytes

#: algorithm name -> SB3 class
ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}

#: the policy every algorithm gets unless ``policy=`` overrides it
POLICY = "MlpPolicy"

#: per algorithm, under every task (and alone where no task is known): small networks, since
#: these systems are low-dimensional and training often runs on a CPU; TD3 explores with
#: Gaussian noise of std 0.1 (SB3 has none by default)
BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sac": {"policy_kwargs": {"net_arch": [64, 64]}},
    "td3": {"action_noise": 0.1, "policy_kwargs": {"net_arch": [64, 64]}},
    "ppo": {"policy_kwargs": {"net_arch": [64, 64]}},
}

#: task name -> algorithm -> SB3 keyword arguments, merged over :data:`BASE_DEFAULTS`
#: (``policy_kwargs`` merge key by key). gamma follows each task's horizon: an effective
#: horizon 1 / (1 - gamma) of a few seconds for the pendulum, one or two predator-prey cycles
#: for Lotka-Volterra (period about 16 steps), a few hours of a data-centre day (thermal time
#: constants are minutes to an hour) and most of a swing-up episode for the cart-pole.
AGENT_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # Pendulum-v1: 200 steps of 0.05 s. SAC and PPO follow rl-baselines3-zoo's tuned values.
    "pendulum": {
        "sac": {
            "learning_rate": 1e-3,
            "gamma": 0.98,
            "buffer_size": 50_000,
            "learning_starts": 1_000,
        },
        "td3": {
            "learning_rate": 1e-3,
            "gamma": 0.98,
            "buffer_size": 50_000,
            "learning_starts": 1_000,
        },
        "ppo": {
            "learning_rate": 1e-3,
            "gamma": 0.9,
            "gae_lambda": 0.95,
            "n_steps": 1_024,
            "batch_size": 64,
            "n_epochs": 10,
            "use_sde": True,
            "sde_sample_freq": 4,
        },
    },
    # hybridgym/LotkaVolterra-v0: 100 steps of 0.25 time units.
    "lotka_volterra": {
        "sac": {
            "learning_rate": 1e-3,
            "gamma": 0.97,
            "buffer_size": 50_000,
            "learning_starts": 1_000,
        },
        "td3": {
            "learning_rate": 1e-3,
            "gamma": 0.97,
            "buffer_size": 50_000,
            "learning_starts": 1_000,
        },
        "ppo": {
            "learning_rate": 3e-4,
            "gamma": 0.97,
            "gae_lambda": 0.95,
            "n_steps": 1_024,
            "batch_size": 64,
            "n_epochs": 10,
        },
    },
    # hybridgym/DataCenter-v0: 288 steps of 5 minutes (one day); one action per zone.
    "datacenter": {
        "sac": {
            "learning_rate": 3e-4,
            "gamma": 0.97,
            "buffer_size": 100_000,
            "learning_starts": 1_440,
        },
        "td3": {
            "learning_rate": 3e-4,
            "gamma": 0.97,
            "buffer_size": 100_000,
            "learning_starts": 1_440,
        },
        "ppo": {
            "learning_rate": 3e-4,
            "gamma": 0.97,
            "gae_lambda": 0.95,
            "n_steps": 1_152,
            "batch_size": 64,
            "n_epochs": 10,
        },
    },
    # hybridgym/CartPoleSwingUp-v0: 200 steps of 0.05 s; swing-up then balance, a harder
    # policy than the others, hence the wider networks.
    "cartpole_swingup": {
        "sac": {
            "learning_rate": 1e-3,
            "gamma": 0.99,
            "buffer_size": 100_000,
            "learning_starts": 1_000,
            "policy_kwargs": {"net_arch": [128, 128]},
        },
        "td3": {
            "learning_rate": 1e-3,
            "gamma": 0.99,
            "buffer_size": 100_000,
            "learning_starts": 1_000,
            "policy_kwargs": {"net_arch": [128, 128]},
        },
        "ppo": {
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "n_steps": 2_048,
            "batch_size": 64,
            "n_epochs": 10,
            "policy_kwargs": {"net_arch": [128, 128]},
        },
    },
}

#: Gymnasium ids -> algorithm -> SB3 keyword arguments, for those envs run as Gymnasium envs
#: (``GymTask``: ``hybridgym loop --env``, ``hybridgym compare --env``), merged over
#: :data:`BASE_DEFAULTS` like the task rows. rl-baselines3-zoo's tuned values
#: (hyperparams/sac.yml, snapshot of 2026-04-23), with ``policy_kwargs`` spelled out where the zoo
#: keeps SB3's defaults (net_arch [256, 256]) that BASE_DEFAULTS would otherwise narrow.
AGENT_DEFAULTS_BY_ENV: dict[str, dict[str, dict[str, Any]]] = {
    # zoo: n_timesteps 20,000
    "Pendulum-v1": {"sac": {"learning_rate": 1e-3, "policy_kwargs": {"net_arch": [256, 256]}}},
    # zoo ("Tuned"): n_timesteps 50,000
    "MountainCarContinuous-v0": {
        "sac": {
            "learning_rate": 3e-4,
            "buffer_size": 50_000,
            "batch_size": 512,
            "ent_coef": 0.1,
            "train_freq": 32,
            "gradient_steps": 32,
            "gamma": 0.9999,
            "tau": 0.01,
            "learning_starts": 0,
            "use_sde": True,
            "policy_kwargs": {"log_std_init": -3.67, "net_arch": [64, 64]},
        }
    },
    # the zoo has no SAC entry for any InvertedPendulum version (its sac.yml lists MuJoCo -v4
    # envs such as HalfCheetah-v4 under one "mujoco-defaults" block, n_timesteps 1e6): that
    # block, SB3's defaults with learning_starts 10,000
    "InvertedPendulum-v5": {
        "sac": {"learning_starts": 10_000, "policy_kwargs": {"net_arch": [256, 256]}}
    },
}
#: make_agent's own arguments (never SB3 overrides)
_OWN_ARGUMENTS = ("seed", "tensorboard_log", "device", "verbose")
#: policy arguments SB3 fills in itself
_SET_BY_SB3 = {"observation_space", "action_space", "lr_schedule", "use_sde"}


def default_hyperparameters(task: str | Task | None, algo: str) -> dict[str, Any]:
    """The SB3 keyword arguments :func:`make_agent` uses for ``algo`` on ``task``.

    Args:
        task: a task name or :class:`Task` (its row of :data:`AGENT_DEFAULTS`, if it has one;
            a Gymnasium env's task, or a Gymnasium id: its row of
            :data:`AGENT_DEFAULTS_BY_ENV`), or None for the algorithm's base defaults alone.
        algo: ``"sac"``, ``"td3"`` or ``"ppo"`` (any case).

    Returns:
        A fresh dict (a deep copy: changing it changes no table).
    """
    name = _algo_name(algo)
    key = None if task is None else _task_key(task)
    rows = AGENT_DEFAULTS.get(key) or AGENT_DEFAULTS_BY_ENV.get(key) or {}
    row = rows.get(name, {})
    return copy.deepcopy(_merge(BASE_DEFAULTS[name], row))


def _task_key(task: str | Task) -> str:
    """The key of ``task``'s row in :data:`AGENT_DEFAULTS` or :data:`AGENT_DEFAULTS_BY_ENV`: a
    task's name (a Gymnasium env's task is named by its id), or a Gymnasium id as given."""
    if isinstance(task, str) and task not in task_names() and task in gym.registry:
        return task
    return get_task(task).name  # unknown names: a ValueError with the close ones


def make_agent(
    algo: str,
    env: gym.Env | VecEnv | str,
    *,
    task: str | Task | None = None,
    seed: int | None = 0,
    tensorboard_log: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    verbose: int = 0,
    **overrides: Any,
) -> BaseAlgorithm:
    """An SB3 agent for ``env`` with hybridgym's defaults for its task.

    Args:
        algo: ``"sac"``, ``"td3"`` or ``"ppo"`` (any case). SAC and TD3 need a Box action
            space; use PPO for a discrete one.
        env: a ``gymnasium.Env``, an SB3 ``VecEnv`` (e.g. a ``LearnedVecEnv``, wrapped or
            not), a registered Gymnasium id (``"Pendulum-v1"``,
            ``"hybridgym/CartPoleSwingUp-v0"``) or a task name (``"pendulum"``: the task's
            real system is made).
        task: which row of :data:`AGENT_DEFAULTS` to use. None infers it from the env (the
            ``task`` of a hybridgym env or learned VecEnv, else the env's Gymnasium id); an
            env of no known task gets :data:`BASE_DEFAULTS` only.
        seed: seeds SB3 (networks, exploration, the env); None leaves it unseeded.
        tensorboard_log: a folder for TensorBoard event files (needs ``tensorboard``).
        device: where the networks live, ``"cpu"`` by default (small MLPs run faster there).
        verbose: SB3's verbosity (0 silent, 1 info, 2 debug).
        **overrides: SB3 constructor keyword arguments; they replace the table's values, except
            ``policy_kwargs``, which merge into the table's key by key. ``policy`` replaces
            ``"MlpPolicy"``. ``action_noise`` may be a float (Gaussian noise std in the
            normalised action space) or an SB3 ``ActionNoise``.

    Returns:
        The SB3 algorithm, ready for ``learn``.

    Raises:
        ValueError: unknown algorithm, env id, task or keyword argument, or SAC/TD3 on a
            non-Box action space.
        TypeError: ``algo`` or ``env`` of a type it cannot be.
        ImportError: ``tensorboard_log`` is set but TensorBoard is not installed.
    """
    name = _algo_name(algo)
    cls = ALGOS[name]
    env = _resolve_env(env)
    task_of = task if task is not None else _infer_task(env)
    if name in ("sac", "td3") and not isinstance(env.action_space, spaces.Box):
        raise ValueError(
            f"{name.upper()} needs a continuous (Box) action space, but this env's is "
            f"{env.action_space}; use make_agent('ppo', ...) for discrete actions"
        )
    kwargs = _merge(default_hyperparameters(task_of, name), overrides)
    policy = kwargs.pop("policy", POLICY)
    _check_kwargs(name, cls, policy, kwargs)
    if isinstance(kwargs.get("action_noise"), int | float):
        kwargs["action_noise"] = _gaussian_noise(kwargs["action_noise"], env.action_space)
    if tensorboard_log is not None:
        _require_tensorboard()
        tensorboard_log = os.fspath(tensorboard_log)
    try:
        return cls(
            policy,
            env,
            seed=seed,
            tensorboard_log=tensorboard_log,
            device=device,
            verbose=verbose,
            **kwargs,
        )
    except AssertionError as error:  # SB3 checks some values with assert
        given = {k: overrides[k] for k in overrides if k != "policy"}
        raise ValueError(f"{name.upper()} refused its settings {given}: {error}") from None


def load_agent(
    algo: str,
    path: str | os.PathLike[str],
    env: gym.Env | VecEnv | str | None = None,
    *,
    device: str = "cpu",
) -> BaseAlgorithm:
    """Load an SB3 agent saved with ``agent.save(path)`` (a zip), attached to ``env``.

    The replay buffer is not part of the file: an off-policy agent continues with an empty
    one. The file is treated as untrusted: its pickled fields (spaces, schedules, policy
    class, ...) are read with an unpickler that builds only the SB3, Gymnasium and NumPy
    classes an agent made by :func:`make_agent` holds, and its tensors with
    ``torch.load(weights_only=True)``; anything else is refused with a ``ValueError`` before
    it runs.
    """
    cls = ALGOS[_algo_name(algo)]
    if not os.path.exists(path):
        raise FileNotFoundError(f"no saved {algo} agent at {path}")
    safe = _safe_serialized_fields(path)  # SB3 itself would cloudpickle.loads these fields
    env = _resolve_env(env) if env is not None else None
    try:
        return cls.load(os.fspath(path), env=env, device=device, custom_objects=safe)
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) of a .pth entry
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{path} holds weights that are not plain tensors (unpickling them could run code; "
            f"nothing was run): {first_line}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as err:  # a damaged entry
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{path} is not a whole {algo} agent (damaged or truncated: {first_line}); save it "
            "again or train a new one"
        ) from None


def save_agent(agent: BaseAlgorithm, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``agent.save`` to exactly ``path`` (SB3 would add ``.zip`` to a name without a
    suffix), atomically: a crash leaves the old file or the whole new one."""
    buffer = io.BytesIO()
    agent.save(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def saved_algo(path: str | os.PathLike[str]) -> str:
    """``"sac"``, ``"td3"`` or ``"ppo"``: the algorithm of an agent saved by SB3, read from the
    zip's metadata (nothing is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an SB3 zip, or holds another algorithm.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved agent at {path}")
    data = _zip_data(path)
    module = str((data.get("policy_class") or {}).get("__module__", ""))
    for name in ("sac", "td3"):
        if module.startswith(f"stable_baselines3.{name}."):
            return name
    if module.startswith("stable_baselines3.common.") and {"clip_range", "n_epochs"} <= set(data):
        return "ppo"
    raise ValueError(
        f"{path} holds an SB3 agent with policy from {module or 'an unknown module'}; "
        f"hybridgym loads {', '.join(sorted(ALGOS))}"
    )


#: (module, name) of every global a pickled field of an agent saved by hybridgym may name
_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {(c.__module__, c.__qualname__) for a in ALGOS.values() for c in a.policy_aliases.values()}
    | {
        ("gymnasium.spaces.box", "Box"),
        ("collections", "deque"),  # ep_info_buffer, ep_success_buffer of a trained agent
        ("numpy", "dtype"),
        *(("numpy", name) for name in ("float16", "float32", "float64", "int32", "int64")),
        *(("numpy", name) for name in ("bool_", "uint8", "ndarray")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("_core", "core")),
        *(
            (f"numpy.{core}.multiarray", n)
            for core in ("_core", "core")
            for n in ("_reconstruct", "scalar")
        ),
        *(("numpy.random._pickle", n) for n in ("__generator_ctor", "__bit_generator_ctor")),
        ("numpy.random._pickle", "__randomstate_ctor"),
        *(("numpy.random._pcg64", n) for n in ("PCG64", "PCG64DXSM")),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("numpy.random.bit_generator", "SeedSequence"),
        *(("stable_baselines3.common.buffers", n) for n in ("ReplayBuffer", "RolloutBuffer")),
        *(
            ("stable_baselines3.common.buffers", n)
            for n in ("DictReplayBuffer", "DictRolloutBuffer")
        ),
        *(
            ("stable_baselines3.common.type_aliases", n)
            for n in ("TrainFreq", "TrainFrequencyUnit")
        ),
        *(
            ("stable_baselines3.common.utils", n)
            for n in ("FloatSchedule", "ConstantSchedule", "LinearSchedule")
        ),
        *(
            ("stable_baselines3.common.noise", n)
            for n in ("NormalActionNoise", "OrnsteinUhlenbeckActionNoise", "VectorizedActionNoise")
        ),
    }
)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    """Builds only the classes in :data:`_SAFE_GLOBALS` (no functions, no code objects)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _safe_serialized_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fields SB3 stores cloudpickled in the zip's ``data``, unpickled safely."""
    data = _zip_data(path)
    fields = {}
    for key, item in data.items():
        if not (isinstance(item, dict) and ":serialized:" in item):
            continue
        try:
            raw = base64.b64decode(str(item[":serialized:"]).encode())
            fields[key] = _SafeUnpickler(io.BytesIO(raw)).load()
        except _RefusedGlobal as err:
            raise ValueError(
                f"{path}: field {key!r} of the saved agent refers to {err}, which hybridgym does "
                "not load from agent files (unpickling it could run code; nothing was run). "
                "Load only agents saved by hybridgym with its SB3 algorithms and MlpPolicy"
            ) from None
        except Exception as err:  # untrusted bytes: any failure means a bad field
            raise ValueError(
                f"{path}: field {key!r} of the saved agent is unreadable: {err}"
            ) from None
    return fields


def _zip_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON ``data`` entry of an SB3 zip (read as text; nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a stable-baselines3 agent (a zip written by agent.save): {err}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a stable-baselines3 agent: its data is not a dict")
    return data


def _algo_name(algo: str) -> str:
    """The lower-case key of ``algo`` in :data:`ALGOS`, or a ValueError with close names."""
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a string such as 'sac', got {type(algo).__name__}")
    name = algo.lower()
    if name not in ALGOS:
        close = difflib.get_close_matches(name, ALGOS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algo {algo!r}; known: {', '.join(sorted(ALGOS))}.{hint}")
    return name


def _resolve_env(env: gym.Env | VecEnv | str) -> gym.Env | VecEnv:
    """An env object for ``env``: objects as they are, ids through ``gym.make``, task names
    through the task's real system."""
    if isinstance(env, gym.Env | VecEnv):
        return env
    if not isinstance(env, str):
        raise TypeError(
            "env must be a gymnasium.Env, an SB3 VecEnv, a Gymnasium id or a task name, "
            f"got {type(env).__name__}"
        )
    if env in task_names():
        return get_task(env).make_real_env()
    if env in gym.registry or ":" in env:  # "module:id" imports the module that registers id
        return gym.make(env)
    close = difflib.get_close_matches(env, [*task_names(), *gym.registry], n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"env {env!r} is neither a registered Gymnasium id nor a task name "
        f"(tasks: {', '.join(task_names())}).{hint}"
    )


def _infer_task(env: gym.Env | VecEnv) -> Task | str | None:
    """The task behind ``env`` (a ``CustomTask`` too); else the env's Gymnasium id where
    :data:`AGENT_DEFAULTS_BY_ENV` has a row for it; else None."""
    if isinstance(env, VecEnv):
        task = env.get_attr("task", [0])[0] if env.has_attr("task") else None
        spec = env.get_attr("spec", [0])[0] if task is None and env.has_attr("spec") else None
    else:
        task = getattr(env.unwrapped, "task", None)
        spec = env.spec
    if isinstance(task, Task):
        return task
    if spec is None:
        return None
    try:
        return task_for_env_id(spec.id)
    except ValueError:
        return spec.id if spec.id in AGENT_DEFAULTS_BY_ENV else None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra`` (a new dict); ``policy_kwargs`` merge key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if key == "policy_kwargs" and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _accepted(function: Any) -> set[str] | None:
    """Keyword names ``function`` accepts (without private ones), or None if it takes any."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if not p.name.startswith("_")} - {"self"}


def _reject(what: str, unknown: set[str], accepted: set[str]) -> None:
    """Raise ValueError naming the ``unknown`` keyword arguments of ``what``, if any."""
    if not unknown:
        return
    names = sorted(unknown)
    close = difflib.get_close_matches(names[0], accepted, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"{what} got unexpected keyword argument(s) {', '.join(map(repr, names))}.{hint} "
        f"Accepted: {', '.join(sorted(accepted))}."
    )


def _check_kwargs(name: str, cls: type[BaseAlgorithm], policy: Any, kwargs: dict[str, Any]) -> None:
    """Raise ValueError for keyword arguments that ``cls`` or its policy would reject."""
    accepted = (_accepted(cls.__init__) or set()) - {"policy", "env", *_OWN_ARGUMENTS}
    _reject(f"{name.upper()} ({cls.__module__}.{cls.__name__})", set(kwargs) - accepted, accepted)
    policy_kwargs = kwargs.get("policy_kwargs") or {}
    if not isinstance(policy_kwargs, dict):
        raise ValueError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
    policy_cls = cls.policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
    if not inspect.isclass(policy_cls):
        raise ValueError(
            f"unknown policy {policy!r} for {name.upper()}; known: {', '.join(cls.policy_aliases)}"
        )
    accepted = _accepted(policy_cls.__init__)
    if accepted is not None:
        accepted -= _SET_BY_SB3
        _reject(f"policy_kwargs of {policy_cls.__name__}", set(policy_kwargs) - accepted, accepted)


def _gaussian_noise(std: float, action_space: spaces.Space) -> NormalActionNoise:
    """Gaussian exploration noise of ``std`` per action dimension (SB3 adds it to actions
    scaled to [-1, 1], so ``std`` is a fraction of the half-range)."""
    if isinstance(std, bool) or not std > 0:
        raise ValueError(f"action_noise as a number must be a std > 0, got {std!r}")
    m = int(np.prod(action_space.shape))
    return NormalActionNoise(mean=np.zeros(m), sigma=np.full(m, float(std)))


def _require_tensorboard() -> None:
    """Import what SB3 logs with, or say how to install it."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError as error:
        raise ImportError(
            "tensorboard_log needs TensorBoard, which is not installed: "
            "`pip install tensorboard` (or pass tensorboard_log=None)"
        ) from error


@dataclass
class LearningCurve:
    """Evaluation returns of an SB3 agent against the real steps it had learned from.

    ``points``: (real steps, mean return); ``train_seconds``: learning time without the
    evaluations; ``steps_to_target`` / ``seconds_to_target``: when the mean first reached the
    target (None if never).
    """

    points: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    steps_to_target: int | None = None
    seconds_to_target: float | None = None


class _EvaluateEvery(BaseCallback):
    def __init__(self, task: Task, every: int, episodes: int, seed: int, target: float | None):
        super().__init__()
        self.task, self.every, self.episodes, self.seed = task, every, episodes, seed
        self.target = target
        self.curve = LearningCurve()
        self.eval_seconds = 0.0
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every:
            return True
        from hybridgym.agents.evaluation import evaluate

        begin = time.perf_counter()
        result = evaluate(self.model, self.task, self.episodes, seed=self.seed)
        self.eval_seconds += time.perf_counter() - begin
        self.curve.points.append((self.num_timesteps, result.mean))
        self.curve.train_seconds = time.perf_counter() - self.start - self.eval_seconds
        if self.target is not None and result.mean >= self.target:
            self.curve.steps_to_target = self.num_timesteps
            self.curve.seconds_to_target = self.curve.train_seconds
            return False
        return True

    def _on_training_end(self) -> None:
        if self.curve.steps_to_target is None:  # the steps after the last evaluation count too
            self.curve.train_seconds = time.perf_counter() - self.start - self.eval_seconds


def learning_curve(
    agent: BaseAlgorithm,
    task: str | Task,
    total_steps: int,
    every: int,
    *,
    episodes: int = 10,
    seed: int = 0,
    target: float | None = None,
    progress: bool = False,
) -> LearningCurve:
    """``agent.learn(total_steps)`` on its (real) env, evaluating every ``every`` steps on
    ``task``'s real system (``episodes`` deterministic episodes from ``seed``); stops early
    once the mean return reaches ``target``. Evaluation time is kept out of ``train_seconds``.
    """
    for name, value in (("total_steps", total_steps), ("every", every), ("episodes", episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    callback = _EvaluateEvery(get_task(task), every, episodes, seed, target)
    agent.learn(total_steps, callback=callback, progress_bar=progress)
    return callback.curve
