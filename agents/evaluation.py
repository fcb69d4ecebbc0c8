"""Evaluate any agent with SB3's ``predict`` on a (real) environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from hybridgym.envs import Task, get_task, task_for_env_id


class Predictor(Protocol):
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]: ...


@dataclass(frozen=True)
class Episode:
    """One recorded episode. states: (T+1) x n physical states, actions: T x m, rewards: T."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum())


@dataclass(frozen=True)
class EvalResult:
    """Returns of several episodes."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


def _physical_state(env: gym.Env, task: Task, obs: np.ndarray) -> np.ndarray:
    state = getattr(env.unwrapped, "state", None)
    if state is not None and np.shape(state) == (task.state_dim,):
        return np.asarray(state, dtype=np.float64)
    return np.asarray(task.obs_to_state(np.asarray(obs, dtype=np.float64)[None])[0])


def rollout(
    agent: Predictor,
    env: gym.Env,
    task: Task,
    seed: int | None = None,
    deterministic: bool = True,
    *,
    on_step: Callable[[], None] | None = None,
) -> Episode:
    """Run one episode of ``agent`` on ``env`` and record physical states, actions, rewards;
    ``on_step`` is called after every step (progress bars)."""
    obs, _ = env.reset(seed=seed)
    states, actions, rewards = [_physical_state(env, task, obs)], [], []
    terminated = truncated = False
    episode_start = np.array([True])
    while not (terminated or truncated):
        action, _ = agent.predict(obs, episode_start=episode_start, deterministic=deterministic)
        episode_start = np.array([False])
        obs, reward, terminated, truncated, _ = env.step(action)
        states.append(_physical_state(env, task, obs))
        actions.append(np.asarray(action, dtype=np.float64).reshape(task.action_dim))
        rewards.append(float(reward))
        if on_step is not None:
            on_step()
    return Episode(np.array(states), np.array(actions), np.array(rewards), bool(terminated))


def evaluate(
    agent: Predictor,
    env_or_task: gym.Env | Task | str,
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    *,
    progress: bool = False,
    on_episode: Callable[[int, float, int], None] | None = None,
) -> EvalResult:
    """Mean and spread of ``agent``'s return over ``episodes`` episodes seeded seed, seed+1, ...

    Args:
        agent: anything with SB3's ``predict``.
        env_or_task: an env, a :class:`Task` or a task name (its real system is made).
        episodes: number of episodes (>= 1).
        seed: seed of the first episode.
        deterministic: passed to ``agent.predict``.
        progress: a tqdm bar over the real steps (on stderr), with the episode and the mean
            return so far.
        on_episode: called after each episode with (its index, its return, its length), e.g.
            to log long evaluations as they go.
    """
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if isinstance(env_or_task, gym.Env):
        env = env_or_task
        task = getattr(env.unwrapped, "task", None)
        if task is None:
            task = task_for_env_id(env.spec.id if env.spec is not None else None)
    else:
        task = get_task(env_or_task)
        env = task.make_real_env()
    limit = getattr(env.spec, "max_episode_steps", None) or task.max_episode_steps
    bar = tqdm(
        total=episodes * limit, desc="evaluate", unit="step", disable=not progress, leave=False
    )
    results = []
    try:
        for i in range(episodes):
            bar.set_postfix_str(f"episode {i + 1}/{episodes}")
            episode = rollout(
                agent, env, task, seed=seed + i, deterministic=deterministic, on_step=bar.update
            )
            results.append(episode)
            bar.update(limit * (i + 1) - bar.n)  # an episode that ended early: its rest
            mean = np.mean([ep.total_return for ep in results])
            bar.set_postfix_str(f"episode {i + 1}/{episodes}, mean return {mean:.4g}")
            if on_episode is not None:
                on_episode(i, episode.total_return, len(episode.rewards))
    finally:
        bar.close()
    return EvalResult(
        returns=np.array([ep.total_return for ep in results]),
        lengths=np.array([len(ep.rewards) for ep in results]),
    )
