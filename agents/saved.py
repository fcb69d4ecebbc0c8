"""Controllers in files, loaded by what the file holds.

- an SB3 zip (:func:`~hybridgym.agents.sb3.save_agent` or ``agent.save``): SAC, TD3 or PPO,
  the algorithm read from the zip;
- a ``hybridgym.DifferentiablePolicyAgent`` checkpoint (``DifferentiablePolicyAgent.save``);
- a planner JSON file (:func:`save_planner`): an :class:`MPCAgent` planning through the model
  checkpoint it names.

:func:`load_controller` also accepts ``"random"`` (uniform random actions).
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile
from typing import Any

import numpy as np
import torch

from hybridgym.agents.baselines import RandomController
from hybridgym.agents.differentiable import FORMAT as POLICY_FORMAT
from hybridgym.agents.differentiable import DifferentiablePolicyAgent
from hybridgym.agents.mpc import MPCAgent
from hybridgym.agents.sb3 import load_agent, saved_algo
from hybridgym.envs import Task, get_task, load_model
from hybridgym.envs.learned import check_model
from hybridgym.models.files import atomic_write_text
from hybridgym.models.hybrid import check_tag, read_checkpoint

PLANNER_FORMAT = "hybridgym.MPCAgent"
PLANNER_VERSION = 1


def save_planner(
    path: str | os.PathLike[str],
    model: str | os.PathLike[str],
    task: Task | str,
    **planner_kwargs: Any,
) -> pathlib.Path:
    """Write a JSON file that rebuilds ``MPCAgent(model, task, **planner_kwargs)``.

    The planner is built once first, so a bad argument or a model of another task fails here
    and not when the file is loaded. The model path is stored relative to the JSON file's
    folder (absolute when they are on different drives), so the two can move together.

    Args:
        path: the JSON file to write (atomically).
        model: a HybridODE or Ensemble checkpoint.
        task: the task the planner controls.
        **planner_kwargs: :class:`MPCAgent` keyword arguments (``horizon``, ``samples``,
            ``method``, ``seed``, ...); plain JSON values.
    """
    task = get_task(task)
    model_path = pathlib.Path(model)
    check_model(load_model(model_path), task)
    MPCAgent(model_path, task, **planner_kwargs)
    path = pathlib.Path(path)
    try:
        stored = os.path.relpath(model_path.resolve(), path.resolve().parent)
    except ValueError:  # another drive (Windows)
        stored = str(model_path.resolve())
    payload = {
        "format": PLANNER_FORMAT,
        "version": PLANNER_VERSION,
        "task": task.name,
        "task_kwargs": dict(task.real_env_kwargs),
        "model": stored,
        "planner": planner_kwargs,
    }
    try:
        text = json.dumps(payload, indent=2)
    except TypeError as err:
        raise TypeError(f"planner arguments must be plain JSON values: {err}") from None
    return atomic_write_text(path, text + "\n")


def load_planner(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> MPCAgent:
    """The :class:`MPCAgent` described by a file from :func:`save_planner`."""
    path = pathlib.Path(path)
    payload = _planner_json(path)
    missing = sorted({"task", "model", "planner"} - set(payload))
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    model_path = path.parent / payload["model"]
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{path} plans through the model {model_path}, which does not exist; keep the "
            "model file where it was when the planner was saved"
        )
    task = get_task(payload["task"], **payload.get("task_kwargs", {}))
    model = load_model(model_path, device)
    check_model(model, task)
    return MPCAgent(model, task, device=device, **payload["planner"])


def load_controller(
    source: str | os.PathLike[str],
    task: Task | str,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Any:
    """A controller with SB3's ``predict`` for ``task``, from a file or ``"random"``.

    Args:
        source: ``"random"``, an SB3 zip, a DifferentiablePolicyAgent checkpoint or a planner
            JSON file (see the module docstring); the kind is read from the file's contents.
        task: the task the controller must act in; a controller of another task (other
            observation or action space, or another task named in the file) is an error.
        device: where its networks or model live.
        seed: seeds the random controller.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is none of these kinds, or belongs to another task.
    """
    task = get_task(task)
    if isinstance(source, str) and source == "random":
        return RandomController(task, seed=seed)
    path = pathlib.Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"no agent file at {path} (give a saved agent or 'random')"
            if not path.is_dir()
            else f"{path} is a folder; give a saved agent file or 'random'"
        )
    if _is_sb3_zip(path):
        agent = load_agent(saved_algo(path), path, device=str(device))
        _check_spaces(agent, task, path)
        return agent
    if _looks_like_json(path):
        agent = load_planner(path, device)
    else:
        try:
            read_checkpoint(path, POLICY_FORMAT, device)
        except ValueError:
            raise ValueError(
                f"{path} is not an agent file: expected an SB3 zip, a "
                f"{POLICY_FORMAT} checkpoint or a {PLANNER_FORMAT} JSON file"
            ) from None
        agent = DifferentiablePolicyAgent.load(path, device=device)
    if agent.task != task:
        raise ValueError(
            f"{path} holds a controller of task {agent.task.name!r}, not {task.name!r}; "
            f"use it with task {agent.task.name!r} or give an agent made for {task.name!r}"
        )
    return agent


def _planner_json(path: pathlib.Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no planner file at {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON: {err}") from None
    return check_tag(payload, path, PLANNER_FORMAT, PLANNER_VERSION, "file")


def _is_sb3_zip(path: pathlib.Path) -> bool:
    """An SB3 zip holds ``data`` and ``policy.pth`` (a torch checkpoint is a zip too)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return {"data", "policy.pth"} <= set(archive.namelist())


def _looks_like_json(path: pathlib.Path) -> bool:
    with path.open("rb") as f:
        return f.read(64).lstrip().startswith(b"{")


def _check_spaces(agent: Any, task: Task, path: pathlib.Path) -> None:
    """An SB3 agent names no task: its observation and action spaces must be the task's."""
    for label, theirs, ours in (
        ("observation", agent.observation_space, task.observation_space),
        ("action", agent.action_space, task.action_space),
    ):
        same = theirs.shape == ours.shape and np.allclose(theirs.low, ours.low)
        if not (same and np.allclose(theirs.high, ours.high)):
            raise ValueError(
                f"{path} is an agent with {label} space {theirs}, but task {task.name!r} has "
                f"{ours}; use an agent trained for {task.name!r}"
            )
