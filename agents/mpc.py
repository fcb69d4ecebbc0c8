"""Model-predictive control through a (batched) learned model: CEM or MPPI.

Every candidate action sequence of every environment (and, with an ensemble, every member)
is rolled out in one tensor computation per planning step; the plan is warm-started by
shifting the previous one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from hybridgym.envs import Task, get_task, load_model
from hybridgym.models import Ensemble

METHODS = ("cem", "mppi")


#: the most model steps (horizon x samples x iterations) one decision may take: about 10^9 is
#: minutes to hours per action on a CPU, never a setting anyone wants
MAX_DECISION_STEPS = 10**9


class MPCAgent:
    """Plan ``horizon`` steps ahead through ``model`` and apply the first action.

    Args:
        model: a HybridODE, an Ensemble (returns are averaged over members, each rolling out
            its own trajectory), anything with ``step(x, u)``, or a checkpoint path.
        task: a Task or its name (reward, termination, obs -> state, action bounds).
        horizon: planning horizon in control steps.
        method: ``"cem"`` (cross-entropy method) or ``"mppi"`` (path-integral weighting).
        samples: candidate action sequences per environment and iteration.
        iterations: refinement iterations per decision.
        elites: CEM: how many best candidates refit the distribution (default: a tenth of
            ``samples``, at least 2).
        temperature: MPPI: softmax temperature on returns.
        init_std: initial std of the sampling distribution, as a fraction of the action range.
        momentum: weight of the previous mean/std when refitting (0: none).
        noise_hold: the sampling noise is held for this many steps (piecewise constant), so
            candidates vary slowly: long horizons are searched with few degrees of freedom.
        exploration: with an Ensemble, while collecting data (``predict(...,
            deterministic=False)``), add this times the members' disagreement to every step's
            reward (optimism where the model is uncertain; 0: off). The disagreement of a step
            is the std over members of the predicted next states, divided by ``state_scale``,
            averaged over the state variables and capped at 1: the bonus per step is at most
            ``exploration``, reached where the members disagree by a typical state size.
            Deterministic predictions (evaluation) never add it.
        state_scale: the typical size of each state variable (n numbers; default ones), for
            ``exploration``.
        seed: seeds the sampling (deterministic plans).
        device: where planning runs.

    ``predict(obs, state=None, episode_start=None, deterministic=True) -> (action, None)``
    accepts one observation or a batch (B x obs_dim); each row gets its own plan.
    ``last_plan_seconds`` holds the wall time of the last decision.

    On a GPU, planning runs entirely on the device: ``predict`` copies the observations there
    once and the chosen first actions back once; :meth:`plan` itself reads nothing from the
    device (it returns before the device has finished, so ``last_plan_seconds`` set by
    ``plan`` alone counts the work queued, while ``predict`` counts through the copy back).
    """

    def __init__(
        self,
        model: Any,
        task: Task | str,
        horizon: int = 30,
        method: str = "cem",
        samples: int = 500,
        iterations: int = 5,
        *,
        elites: int | None = None,
        temperature: float = 1.0,
        init_std: float = 0.5,
        momentum: float = 0.1,
        noise_hold: int = 1,
        exploration: float = 0.0,
        state_scale: Any = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if elites is None and isinstance(samples, int):
            elites = max(2, samples // 10)
        for name, value in (
            ("horizon", horizon),
            ("samples", samples),
            ("iterations", iterations),
            ("elites", elites),
            ("noise_hold", noise_hold),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if elites > samples:
            raise ValueError(f"elites ({elites}) must not exceed samples ({samples})")
        if horizon * samples * iterations > MAX_DECISION_STEPS:
            raise ValueError(
                f"horizon x samples x iterations = {horizon * samples * iterations:,} model steps "
                f"per decision is more than {MAX_DECISION_STEPS:,} (hours per action); lower one "
                "of them"
            )
        for name, value in (("temperature", temperature), ("init_std", init_std)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if isinstance(exploration, bool) or not (
            isinstance(exploration, int | float) and 0 <= exploration < float("inf")
        ):
            raise ValueError(f"exploration must be a finite number >= 0, got {exploration!r}")
        self.task = get_task(task)
        self.device = torch.device(device)
        self.model = load_model(model, self.device)
        if isinstance(self.model, torch.nn.Module):
            self.model = self.model.to(self.device).eval()
        self.horizon, self.method, self.samples = horizon, method, samples
        self.iterations, self.elites = iterations, elites
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.noise_hold, self.exploration = noise_hold, float(exploration)
        n = self.task.state_dim
        scale = np.ones(n) if state_scale is None else np.asarray(state_scale, dtype=np.float64)
        if scale.shape != (n,) or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ValueError(
                f"state_scale must be {n} finite numbers > 0 (one per state variable), got "
                f"{state_scale!r}"
            )
        self.state_scale = torch.as_tensor(scale, dtype=torch.float32, device=self.device)
        space = self.task.action_space
        self.observation_space = self.task.observation_space
        self.action_space = space
        self.low = torch.as_tensor(space.low, device=self.device)
        self.high = torch.as_tensor(space.high, device=self.device)
        self.init_std = init_std * (self.high - self.low)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._plan: torch.Tensor | None = None  # B x H x m, the warm start
        self.last_plan_seconds = 0.0

    def reset(self) -> None:
        """Forget the previous plan (call at the start of an episode)."""
        self._plan = None

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        batch, single = self.task.observation_batch(observation)
        if episode_start is not None and np.any(episode_start):
            self.reset()
        start = time.perf_counter()
        x0 = self.task.obs_to_state(torch.as_tensor(batch, device=self.device))
        explore = not deterministic and self.exploration > 0
        action = self.plan(x0, explore=explore)[:, 0].cpu().numpy()  # the one copy back
        self.last_plan_seconds = time.perf_counter() - start
        return (action[0] if single else action), None

    @torch.inference_mode()
    def plan(self, x0: torch.Tensor, *, explore: bool = False) -> torch.Tensor:
        """Best action sequences (B x H x m) from states x0 (B x n); ``explore`` adds the
        ``exploration`` bonus to the rewards."""
        start = time.perf_counter()
        b, m, h, s = x0.shape[0], self.task.action_dim, self.horizon, self.samples
        mean = self._warm_start(b)
        std = self.init_std.expand(b, h, m).clone()
        knots = -(-h // self.noise_hold)
        for _ in range(self.iterations):
            noise = torch.randn((b, s, knots, m), generator=self.generator, device=self.device)
            if self.noise_hold > 1:
                noise = noise.repeat_interleave(self.noise_hold, dim=2)[:, :, :h]
            candidates = mean[:, None] + std[:, None] * noise
            candidates[:, 0] = mean  # always re-evaluate the current plan
            candidates = torch.clamp(candidates, min=self.low, max=self.high)
            returns = self._returns(x0, candidates, explore=explore)  # B x S
            if self.method == "cem":
                top = returns.topk(self.elites, dim=1).indices
                elite = candidates.gather(1, top[:, :, None, None].expand(-1, -1, h, m))
                new_mean, new_std = elite.mean(1), elite.std(1)
            else:
                weights = torch.softmax(
                    (returns - returns.max(1, keepdim=True).values) / self.temperature, dim=1
                )
                new_mean = (weights[:, :, None, None] * candidates).sum(1)
                new_std = (
                    (weights[:, :, None, None] * (candidates - new_mean[:, None]) ** 2)
                    .sum(1)
                    .sqrt()
                )
            mean = self.momentum * mean + (1 - self.momentum) * new_mean
            std = self.momentum * std + (1 - self.momentum) * new_std
        self._plan = mean
        self.last_plan_seconds = time.perf_counter() - start
        return mean

    def _warm_start(self, b: int) -> torch.Tensor:
        m, h = self.task.action_dim, self.horizon
        centre = ((self.low + self.high) / 2).expand(b, h, m)
        if self._plan is None or self._plan.shape[0] != b:
            return centre.clone()
        return torch.cat([self._plan[:, 1:], self._plan[:, -1:]], dim=1)

    def _returns(
        self, x0: torch.Tensor, candidates: torch.Tensor, *, explore: bool = False
    ) -> torch.Tensor:
        """Sum of task rewards of every candidate (B x S x H x m) from x0; B x S (plus the
        exploration bonus with ``explore``)."""
        b, s, h, m = candidates.shape
        model = self.model
        tensors = (
            [*model.parameters(), *model.buffers()] if isinstance(model, torch.nn.Module) else []
        )
        dtype = tensors[0].dtype if tensors else x0.dtype
        x = x0.to(dtype)[:, None].expand(b, s, -1).reshape(b * s, -1)
        actions = candidates.to(dtype).reshape(b * s, h, m)
        ensemble = isinstance(self.model, Ensemble)
        if ensemble:
            k = self.model.num_members
            x = x[None].expand(k, -1, -1)
        total = torch.zeros(x.shape[:-1], dtype=dtype, device=self.device)
        alive = torch.ones_like(total)  # 1 until a candidate's episode ends, then 0
        explore = explore and ensemble and self.exploration > 0 and self.model.num_members > 1
        scale = self.state_scale.to(dtype) if explore else None
        for t in range(h):
            u = actions[:, t]
            if ensemble:
                x_next = self.model.member_steps(x, u)
                reward = self.task.reward(x, u[None].expand(k, -1, -1), x_next)
                if explore:  # the same bonus for every member's trajectory
                    spread = (x_next.std(0) / scale).mean(-1)
                    spread = torch.nan_to_num(spread, nan=1.0, posinf=1.0).clamp_(0.0, 1.0)
                    reward = reward + self.exploration * spread
            else:
                x_next = self.model.step(x, u)
                reward = self.task.reward(x, u, x_next)
            reward = torch.nan_to_num(reward, nan=-1e6, posinf=-1e6, neginf=-1e6)
            total = total.addcmul(reward, alive)
            alive = alive.masked_fill(self.task.terminated(x_next), 0.0)
            x = x_next
        if ensemble:
            total = total.mean(0)
        return total.reshape(b, s)
