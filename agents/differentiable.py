"""Policy training by differentiating the task reward through model rollouts.

A deterministic policy network is improved by backpropagating the discounted reward of short,
batched rollouts of a (hybrid) model, ended by a learned value (the short-horizon actor-critic
of Xu et al. 2022, "Accelerated Policy Learning with Parallel Differentiable Simulation"). The
model is differentiable end to end, so one update uses ``batch_size x horizon`` model steps
with exact gradients instead of one replay minibatch: this is what makes a model-based loop
fast in wall-clock time and not only in real samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import pathlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridgym.envs import Task, get_task
from hybridgym.models.hybrid import atomic_torch_save, read_checkpoint

FORMAT = "hybridgym.DifferentiablePolicyAgent"


@dataclass(frozen=True)
class PolicyTrainingConfig:
    """How :class:`DifferentiablePolicyAgent` trains.

    Attributes:
        iterations: policy updates per :meth:`DifferentiablePolicyAgent.train` call.
        batch_size: model rollouts run side by side.
        horizon: model steps differentiated through per update; rollouts carry on across
            updates and restart (from task start states or given states) when an episode ends.
        gamma: discount.
        lam: TD(lambda) weight of the value targets.
        hidden: hidden widths of the policy and value networks.
        policy_lr, value_lr: Adam learning rates.
        value_epochs: passes over each rollout when fitting the value network.
        value_minibatches: minibatches per pass.
        target_tau: weight of the new value network in the target network's soft update.
        use_value: end rollouts with the learned value (False: a fixed horizon, no critic).
        grad_clip: maximum gradient norm of a policy update.
        exploration_std: std of the Gaussian noise that ``predict(deterministic=False)`` adds,
            as a fraction of the action range.
        seed: seeds the networks and the start states.
        progress: show a progress bar.
    """

    iterations: int = 400
    batch_size: int = 256
    horizon: int = 32
    gamma: float = 0.99
    lam: float = 0.95
    hidden: tuple[int, ...] = (64, 64)
    policy_lr: float = 2e-3
    value_lr: float = 2e-3
    value_epochs: int = 4
    value_minibatches: int = 4
    target_tau: float = 0.2
    use_value: bool = True
    grad_clip: float = 1.0
    exploration_std: float = 0.1
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "horizon", "value_epochs", "value_minibatches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("gamma", "lam", "target_tau"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        for name in ("policy_lr", "value_lr", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not isinstance(self.exploration_std, int | float) or self.exploration_std < 0:
            raise ValueError(f"exploration_std must be >= 0, got {self.exploration_std!r}")
        widths = tuple(self.hidden)
        bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int) or w < 1]
        if not widths or bad:
            raise ValueError(f"hidden must be positive ints, got {self.hidden!r}")
        object.__setattr__(self, "hidden", widths)


@dataclass
class PolicyTrainingReport:
    """What one :meth:`DifferentiablePolicyAgent.train` call did.

    ``mean_reward``: mean model reward per step of each update's rollouts; ``value_loss``: the
    value network's last loss per update; ``skipped``: updates dropped for non-finite gradients.
    """

    mean_reward: list[float] = field(default_factory=list)
    value_loss: list[float] = field(default_factory=list)
    iterations: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class _Normaliser(nn.Module):
    """Running mean/std of observations (updated while training, frozen in ``predict``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold the finite rows of a batch into the running statistics, on the device and
        without reading it (rows with a non-finite entry are left out by weights, not by
        indexing, whose result size the host would have to wait for)."""
        x = x.reshape(-1, x.shape[-1])
        finite = torch.isfinite(x).all(-1)
        n = finite.sum().to(self.count.dtype)
        kept = torch.where(finite[:, None], x, torch.zeros_like(x))
        weight = finite[:, None].to(x.dtype)
        mean = kept.sum(0) / n.clamp_min(1.0)
        var = ((kept - mean) ** 2 * weight).sum(0) / n.clamp_min(1.0)
        every = finite.all()  # then exactly the plain statistics of the whole batch
        mean = torch.where(every, x.mean(0), mean)
        var = torch.where(every, x.var(0, unbiased=False), var)
        count = self.count
        total = count + n
        delta = mean - self.mean
        new_mean = self.mean + delta * n / total
        m2 = self.var * count + var * n
        m2 = m2 + delta**2 * count * n / total
        some = n > 0  # an all-non-finite batch changes nothing
        self.mean.copy_(torch.where(some, new_mean, self.mean))
        self.var.copy_(torch.where(some, m2 / total, self.var))
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + 1e-6)).clamp(-10.0, 10.0)


class _Policy(nn.Module):
    def __init__(self, obs_dim: int, low: np.ndarray, high: np.ndarray, hidden: Sequence[int]):
        super().__init__()
        self.normaliser = _Normaliser(obs_dim)
        self.net = _mlp([obs_dim, *hidden, len(low)])
        self.register_buffer("centre", torch.as_tensor((high + low) / 2, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor((high - low) / 2, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.centre + self.half_range * torch.tanh(self.net(self.normaliser(obs)))


class DifferentiablePolicyAgent:
    """A deterministic policy trained by backpropagation through a differentiable model.

    Args:
        task: a Task or its name (reward, termination, start states, spaces).
        config: see :class:`PolicyTrainingConfig`.
        device: where the networks (and the model, during ``train``) live.

    ``train(model)`` improves the policy in the model; ``predict(obs, state=None,
    episode_start=None, deterministic=True) -> (action, None)`` is SB3's signature, so every
    evaluator and :meth:`TrajectoryDataset.collect` accept the agent. ``deterministic=False``
    adds Gaussian exploration noise (``config.exploration_std``). Training again continues
    from the current networks (warm start).
    """

    def __init__(
        self,
        task: Task | str,
        config: PolicyTrainingConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.task = get_task(task)
        self.config = config or PolicyTrainingConfig()
        self.device = torch.device(device)
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        low = np.asarray(self.action_space.low, dtype=np.float64)
        high = np.asarray(self.action_space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(
                f"task {self.task.name!r} has an unbounded action space; a squashed policy "
                "needs finite bounds"
            )
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.config.seed)
        hidden = self.config.hidden
        self.policy = _Policy(self.task.obs_dim, low, high, hidden).to(self.device)
        self.value = _mlp([self.task.obs_dim, *hidden, 1]).to(self.device)
        torch.random.set_rng_state(generator_state)
        self.value_target = _mlp([self.task.obs_dim, *hidden, 1]).to(self.device)
        self.value_target.load_state_dict(self.value.state_dict())
        for p in self.value_target.parameters():
            p.requires_grad_(False)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), self.config.policy_lr)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), self.config.value_lr)
        self.reward_scale: float | None = None  # set from the first rollout
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self._noise = np.random.default_rng(self.config.seed)
        self._x: torch.Tensor | None = None
        self._t: torch.Tensor | None = None
        self._low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(high, dtype=torch.float32, device=self.device)

    # --- acting --------------------------------------------------------------------------------
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        batch, single = self.task.observation_batch(observation)
        with torch.no_grad():
            obs = torch.as_tensor(batch, device=self.device)
            action = self.policy(obs).cpu().numpy()
        if not deterministic and self.config.exploration_std > 0:
            span = self.action_space.high - self.action_space.low
            noise = self._noise.normal(0.0, self.config.exploration_std, action.shape)
            action = action + noise * span
            action = np.clip(action, self.action_space.low, self.action_space.high)
        action = action.astype(self.action_space.dtype)
        return (action[0] if single else action), None

    def reseed_exploration(self, seed: int) -> None:
        """Restart the exploration noise of ``predict(deterministic=False)`` from ``seed``."""
        self._noise = np.random.default_rng(seed)

    def actions(self, states: torch.Tensor) -> torch.Tensor:
        """Differentiable policy actions for a batch of model states (B x n -> B x m)."""
        return self.policy(self.task.state_to_obs(states).to(torch.float32))

    # --- training ------------------------------------------------------------------------------
    def _starts(self, n: int, start_states: torch.Tensor | None) -> torch.Tensor:
        if start_states is not None and len(start_states) > 0:
            pick = torch.randint(
                len(start_states), (n,), generator=self.generator, device=self.device
            )
            return start_states[pick.to(start_states.device)].to(self.device)
        return self.task.sample_initial_states(
            n, self.generator, dtype=torch.float32, device=self.device
        )

    def train(
        self,
        model: nn.Module,
        iterations: int | None = None,
        *,
        start_states: torch.Tensor | np.ndarray | None = None,
        start_fraction: float = 0.5,
    ) -> PolicyTrainingReport:
        """Improve the policy through ``model`` (anything with a differentiable ``step``).

        Args:
            model: e.g. a HybridODE or Ensemble; its parameters are not changed.
            iterations: updates (default ``config.iterations``).
            start_states: optional states (K x n), e.g. recorded real states; restarted
                rollouts begin from one of them with probability ``start_fraction``, else from
                the task's start distribution.
        """
        cfg = self.config
        iterations = cfg.iterations if iterations is None else iterations
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
        if not 0 <= start_fraction <= 1:
            raise ValueError(f"start_fraction must be in [0, 1], got {start_fraction!r}")
        pool = None
        if start_states is not None:
            pool = torch.as_tensor(np.asarray(start_states), dtype=torch.float32)
            if pool.ndim != 2 or pool.shape[1] != self.task.state_dim:
                raise ValueError(
                    f"start_states must be K x {self.task.state_dim} ({self.task.state_names}), "
                    f"got {tuple(pool.shape)}"
                )
            pool = pool[torch.isfinite(pool).all(1)].to(self.device)
        model_state = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        was_training = model.training
        model.eval()
        report = PolicyTrainingReport()
        start = time.perf_counter()
        bar = _progress(iterations, cfg.progress)
        try:
            for _ in range(iterations):
                reward, value_loss, ok = self._update(model, pool, start_fraction)
                report.mean_reward.append(reward)
                report.value_loss.append(value_loss)
                report.skipped += not ok
                report.iterations += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{reward:.3g}")
        finally:
            if bar is not None:
                bar.close()
            for p, flag in zip(model.parameters(), model_state, strict=True):
                p.requires_grad_(flag)
            model.train(was_training)
        report.seconds = time.perf_counter() - start
        return report

    def _restart(self, done: torch.Tensor, x: torch.Tensor, pool, fraction, n: int) -> torch.Tensor:
        """``x`` with the ``n`` rows marked in ``done`` replaced by fresh start states."""
        fresh = self._starts(n, None)
        if pool is not None and len(pool) > 0 and fraction > 0:
            from_pool = torch.rand(n, generator=self.generator, device=self.device) < fraction
            if bool(from_pool.any()):
                fresh[from_pool] = self._starts(int(from_pool.sum()), pool)
        out = x.detach().clone()
        out[done] = fresh.to(out.dtype)
        return out

    def _update(self, model: nn.Module, pool, fraction: float) -> tuple[float, float, bool]:
        cfg, task = self.config, self.task
        b, h = cfg.batch_size, cfg.horizon
        if self._x is None or len(self._x) != b:
            everyone = torch.ones(b, dtype=torch.bool, device=self.device)
            blank = torch.zeros(b, task.state_dim, device=self.device)
            self._x = self._restart(everyone, blank, pool, fraction, b)
            self._t = torch.zeros(b, dtype=torch.long, device=self.device)
        x, t = self._x.detach(), self._t
        gamma = cfg.gamma
        discount = torch.ones(b, device=self.device)
        segment = torch.zeros(b, device=self.device)
        total = torch.zeros((), device=self.device)
        obs_k, rew_k, done_k, next_obs_k = [], [], [], []
        reward_sum = torch.zeros((), device=self.device)  # read once per update, not per step
        for _ in range(h):
            obs = task.state_to_obs(x).to(torch.float32)
            self.policy.normaliser.update(obs.detach())
            action = self.policy(obs)
            x_next = model.step(x, action)
            finite = torch.isfinite(x_next).all(-1)
            safe_next = torch.where(finite[:, None], x_next, x.detach())
            r = task.reward(x, action, safe_next)
            r = torch.where(finite, r, torch.zeros_like(r))
            if self.reward_scale is None:
                self.reward_scale = 1.0 / max(float(r.detach().abs().mean()), 1e-6)
            r = r * self.reward_scale
            terminated = task.terminated(safe_next) | ~finite
            t = t + 1
            truncated = (t >= task.max_episode_steps) & ~terminated
            done = terminated | truncated
            next_obs = task.state_to_obs(safe_next).to(torch.float32)
            segment = segment + discount * r
            discount = discount * gamma
            # the one read of the device per model step: how many rollouts restart (the
            # number of start states drawn, which keeps the seeded stream what it always was)
            finished = int(done.sum())
            if finished:
                if cfg.use_value:
                    v_end = self.value_target(next_obs).squeeze(-1)
                    segment = segment + torch.where(truncated, discount * v_end, 0.0)
                total = total + torch.where(done, segment, torch.zeros_like(segment)).sum()
                segment = torch.where(done, torch.zeros_like(segment), segment)
                discount = torch.where(done, torch.ones_like(discount), discount)
                safe_next = self._restart(done, safe_next, pool, fraction, finished)
                t = torch.where(done, torch.zeros_like(t), t)
            obs_k.append(obs.detach())
            rew_k.append(r.detach())
            done_k.append((done, terminated))
            next_obs_k.append(next_obs.detach())
            reward_sum = reward_sum + r.detach().mean()
            x = safe_next
        if cfg.use_value:
            end_obs = task.state_to_obs(x).to(torch.float32)
            segment = segment + discount * self.value_target(end_obs).squeeze(-1)
        total = total + segment.sum()
        loss = -total / (b * h)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # a NaN or infinite gradient anywhere makes the total norm non-finite
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        ok = bool(torch.isfinite(norm))
        if ok:
            self.policy_optimizer.step()
        self._x, self._t = x.detach(), t
        value_loss = self._fit_value(obs_k, rew_k, done_k, next_obs_k) if cfg.use_value else 0.0
        return float(reward_sum) / (self.reward_scale * h), value_loss, ok

    def _fit_value(self, obs_k, rew_k, done_k, next_obs_k) -> float:
        cfg = self.config
        with torch.no_grad():
            next_values = self.value_target(torch.stack(next_obs_k)).squeeze(-1)  # H x B
            targets = torch.empty_like(next_values)
            later = next_values[-1]
            for k in reversed(range(len(rew_k))):
                done, terminated = done_k[k]
                v_next = torch.where(terminated, torch.zeros_like(later), next_values[k])
                blended = (1 - cfg.lam) * v_next + cfg.lam * later
                if k == len(rew_k) - 1:
                    blended = v_next
                targets[k] = rew_k[k] + cfg.gamma * torch.where(done, v_next, blended)
                later = targets[k]
        obs = torch.stack(obs_k).reshape(-1, self.task.obs_dim)
        targets = targets.reshape(-1)
        n = len(obs)
        size = max(1, n // cfg.value_minibatches)
        last_loss = None
        for _ in range(cfg.value_epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            for i in range(0, n, size):
                pick = order[i : i + size]
                loss = (self.value(obs[pick]).squeeze(-1) - targets[pick]).pow(2).mean()
                self.value_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.value.parameters(), 10.0)
                self.value_optimizer.step()
                last_loss = loss.detach()
        loss_value = math.nan if last_loss is None else float(last_loss)  # read once
        with torch.no_grad():
            tau = cfg.target_tau
            for target, source in zip(
                self.value_target.parameters(), self.value.parameters(), strict=True
            ):
                target.mul_(1 - tau).add_(source, alpha=tau)
        return loss_value

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write config and network weights to one file (atomic), loadable with weights_only."""
        config = dataclasses.asdict(self.config)
        config["hidden"] = list(config["hidden"])
        payload = {
            "format": FORMAT,
            "version": 1,
            "task": self.task.name,
            "task_kwargs": dict(self.task.real_env_kwargs),
            "config": config,
            "reward_scale": self.reward_scale,
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "value_target": self.value_target.state_dict(),
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> DifferentiablePolicyAgent:
        """Rebuild an agent written by :meth:`save` (executes nothing from the file)."""
        payload = read_checkpoint(path, FORMAT, device)
        config = dict(payload["config"])
        config["hidden"] = tuple(config["hidden"])
        task = get_task(payload["task"], **payload["task_kwargs"])
        agent = cls(task, PolicyTrainingConfig(**config), device=device)
        agent.policy.load_state_dict(payload["policy"])
        agent.value.load_state_dict(payload["value"])
        agent.value_target.load_state_dict(payload["value_target"])
        agent.reward_scale = payload["reward_scale"]
        return agent


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="policy", unit="update", leave=False)
