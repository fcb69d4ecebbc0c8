"""Reward and termination learned from recorded data, for systems that do not state them.

:class:`RewardModel` is ``r(s, a, s')``, a small MLP regressed on the rewards a dataset
recorded; :class:`TerminationModel` is ``p(terminated | s')``, a classifier of the states that
ended an episode by termination (:attr:`Episode.terminated <hybridgym.models.Episode>`).
Inputs and the reward target are normalised inside each module, so they work in any units.

Both are refitted as data arrives, warm-started: when a refit brings new normalisation
statistics, the first and last layers are rescaled so the network computes the same function
as before (Adam then continues from there rather than from a model that suddenly predicts
something else). Both are batched over any leading dimensions and cheap to evaluate: a planner
calls them on tens of thousands of rows per decision.

This module knows no task: it reads transitions from anything shaped like a
:class:`~hybridgym.models.TrajectoryDataset`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridgym.models.residual import _build_network, _check_dim, _check_network, _NetworkResidual

#: a termination explained by thresholds on single state variables (a "box": the episode ends
#: when a variable leaves its range, as Gymnasium's envs define it) is used instead of the
#: classifier once at least this many terminal states were recorded and every one of them lies
#: beyond a threshold that no other recorded state crosses. Measured on InvertedPendulum-v5
#: (1,000 real steps, 33 terminal states): the classifier, fitted on terminal states recorded
#: near the rail's middle, called a pole leaning 0.3 rad "alive" with the cart 0.5 m off centre
#: (the env ends the episode at 0.2 rad anywhere); the box finds |angle| > 0.2 alone.
BOX_MIN_TERMINALS = 5


@dataclass(frozen=True)
class RewardFitConfig:
    """How :func:`fit_reward` and :func:`fit_termination` train (every field has a working
    default).

    Attributes:
        iterations: Adam steps per fit (a refit continues from the last weights).
        learning_rate: Adam's learning rate.
        batch_size: transitions per step; None uses all of them.
        weight_decay: decoupled weight decay (AdamW).
        seed: seeds the mini-batches.
    """

    iterations: int = 1_000
    learning_rate: float = 3e-3
    batch_size: int | None = 512
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("iterations", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"RewardFitConfig.{name} must be an int >= {minimum}, got {value!r}"
                )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(
                f"RewardFitConfig.batch_size must be an int >= 1 or None, got {self.batch_size!r}"
            )
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"RewardFitConfig.{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"RewardFitConfig.{name} must be finite and >= 0, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"RewardFitConfig.learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class RewardFitReport:
    """What a fit did: Adam steps, the final training loss (normalised units), the RMSE (reward
    model, in reward units) or accuracy on the two classes (termination model) over all the
    transitions, how many there were, and seconds."""

    iterations: int
    loss: float
    rmse: float | None
    transitions: int
    wall_time: float
    terminal_states: int | None = None
    recall: float | None = None
    specificity: float | None = None


class _NormalisedMLP(_NetworkResidual):
    """An MLP on normalised inputs, ``network(z) * output_scale + output_shift``, whose
    normalisation can be renewed without changing the function it computes."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.hidden = _check_network(hidden, activation)
        self.activation = activation
        _build_network(self, in_dim, out_dim)
        self.register_buffer("output_shift", torch.zeros(out_dim))

    def evaluate(self, z: torch.Tensor) -> torch.Tensor:
        """The network's outputs for features z (... x in_dim), ... x out_dim."""
        return self.network(z) + self.output_shift

    @torch.no_grad()
    def renormalise(
        self,
        z: torch.Tensor,
        target: tuple[torch.Tensor, torch.Tensor] | None = None,
        trained: torch.Tensor | None = None,
    ) -> None:
        """New input statistics from features z (N x in_dim) and, with ``target``, new output
        statistics (shift, scale; out_dim each), with the first and last layers rescaled so
        that :meth:`evaluate` is unchanged.

        On the first call there is no function to keep (the weights are their initial ones):
        the statistics are simply set. ``trained`` (out_dim bools) marks the outputs whose
        function is kept; the others (e.g. a head that had no data yet) start afresh at the
        new shift (their last-layer row zeroed)."""
        first, last = self.net[0], self.net[-1]
        shift, scale = _statistics(z)
        keep = bool(self.statistics_set)
        if keep:  # W (z - s) / c + b == W' (z - s') / c' + b'  for every z
            first.bias.add_(first.weight @ ((shift - self.input_shift) / self.input_scale))
            first.weight.mul_(scale / self.input_scale)
        self.input_shift.copy_(shift)
        self.input_scale.copy_(scale)
        if target is not None:
            out_shift, out_scale = target
            if keep:  # (W h + b) o + m == (W' h + b') o' + m'
                last.bias.mul_(self.output_scale).add_(self.output_shift - out_shift)
                last.bias.div_(out_scale)
                last.weight.mul_((self.output_scale / out_scale)[:, None])
            fresh = ~trained if trained is not None else torch.zeros_like(out_shift, dtype=bool)
            if not keep:
                fresh = torch.ones_like(fresh)
            last.weight[fresh] = 0.0
            last.bias[fresh] = 0.0
            self.output_shift.copy_(out_shift)
            self.output_scale.copy_(out_scale)
        self.statistics_set.fill_(True)
        self._workspaces = {}


def _statistics(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread of each column of z (N x d); the spread is at least a thousandth of the
    column's typical magnitude (and 1e-6), so a constant column does not blow up."""
    mean = z.mean(0)
    std = z.std(0) if len(z) > 1 else torch.zeros_like(mean)
    return mean, torch.maximum(std, 1e-3 * mean.abs() + 1e-6)


class RewardModel(nn.Module):
    """A learned reward ``r(s, a, s')``.

    The network sees the state, the action, the next state and the change of state (normalised
    inside the module) and has two outputs (normalised inside the module too): the reward of a
    transition that continues the episode and that of one that ends it by termination. Rewards
    often jump where an episode ends (0 instead of 1 when the pole falls, +100 at the goal): a
    termination model (or function) picks the head, so the jump is as sharp as the
    classifier's boundary instead of smeared by a regression.

    Args:
        state_dim: n.
        action_dim: m.
        hidden: hidden layer widths.
        activation: as for :class:`~hybridgym.models.MLPResidual`.

    ``model(state, action, next_state, terminal=None)`` takes tensors of shape ... x n,
    ... x m, ... x n (any leading dimensions, e.g. members x batch) and optionally whether each
    transition is terminal (..., bool; None: none is) and returns ... (one reward per row).
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.action_dim = _check_dim("action_dim", action_dim)
        self.mlp = _NormalisedMLP(3 * state_dim + action_dim, 2, hidden, activation)
        #: whether the terminal head has been trained (else it copies the continuing one)
        self.register_buffer("terminal_seen", torch.tensor(False))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, as plain types."""
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden": list(self.mlp.hidden),
            "activation": self.mlp.activation,
        }

    def features(
        self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor
    ) -> torch.Tensor:
        """[s, a, s', s' - s], ... x (3n + m)."""
        return torch.cat([state, action, next_state, next_state - state], dim=-1)

    def forward(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        next_state: torch.Tensor,
        terminal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        heads = self.mlp.evaluate(self.features(state, action, next_state))
        if terminal is None or not _flag(self, "terminal_seen"):
            return heads[..., 0]
        return torch.where(terminal, heads[..., 1], heads[..., 0])


class TerminationModel(nn.Module):
    """A learned termination ``p(terminated | s')``.

    Trained on the states that ended episodes by termination (positives) against every other
    recorded state; with no terminal state in the data it never terminates (:attr:`seen` is
    False and the network is not run). Where thresholds on single state variables separate the
    terminal states from all others (at least :data:`BOX_MIN_TERMINALS` of them), those
    thresholds decide instead (:attr:`boxed`; :attr:`box_low` / :attr:`box_high`, infinite where
    a variable is free).

    Args:
        state_dim: n.
        hidden, activation: the classifier's network.

    ``model(next_state)`` returns logits (...), :meth:`probability` the probabilities and
    :meth:`terminated` booleans (probability above one half).
    """

    def __init__(
        self, state_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.mlp = _NormalisedMLP(state_dim, 1, hidden, activation)
        self.register_buffer("seen", torch.tensor(False))
        self.register_buffer("boxed", torch.tensor(False))
        self.register_buffer("box_low", torch.full((self.state_dim,), -math.inf))
        self.register_buffer("box_high", torch.full((self.state_dim,), math.inf))

    def config(self) -> dict[str, Any]:
        """Constructor arguments, as plain types."""
        return {
            "state_dim": self.state_dim,
            "hidden": list(self.mlp.hidden),
            "activation": self.mlp.activation,
        }

    def forward(self, next_state: torch.Tensor) -> torch.Tensor:
        return self.mlp.evaluate(next_state)[..., 0]

    @property
    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor the model's answers depend on (weights, normalisation, :attr:`seen`);
        their version counters tell a cache that the model changed."""
        tensors = self.__dict__.get("_state_tensors")
        if tensors is None:  # built once: the module's tensors are changed in place only
            tensors = [*self.parameters(), *self.buffers()]
            self.__dict__["_state_tensors"] = tensors
        return tensors

    def _apply(self, fn, recurse=True):  # .to(): new tensors
        self.__dict__.pop("_state_tensors", None)
        return super()._apply(fn, recurse)

    def probability(self, next_state: torch.Tensor) -> torch.Tensor:
        """p(terminated | s') per row, ... (zeros while no terminal state was seen; 0 or 1
        with a box)."""
        if not _flag(self, "seen"):
            shape, device = next_state.shape[:-1], next_state.device
            return torch.zeros(shape, dtype=next_state.dtype, device=device)
        if _flag(self, "boxed"):
            return self._outside(next_state).to(next_state.dtype)
        return torch.sigmoid(self(next_state))

    def terminated(self, next_state: torch.Tensor) -> torch.Tensor:
        """Whether each row is terminal, ... (bool)."""
        if not _flag(self, "seen"):
            return torch.zeros(next_state.shape[:-1], dtype=torch.bool, device=next_state.device)
        if _flag(self, "boxed"):
            return self._outside(next_state)
        return self(next_state) > 0

    def _outside(self, next_state: torch.Tensor) -> torch.Tensor:
        low, high = self.box_low.to(next_state.dtype), self.box_high.to(next_state.dtype)
        return ((next_state < low) | (next_state > high)).any(-1)


def _flag(module: nn.Module, name: str) -> bool:
    """The bool buffer ``name`` of ``module`` as a Python bool, read from the device only after
    it changed (a planner asks at every step; on a GPU each read would wait for the device)."""
    buffer = getattr(module, name)
    key = (buffer._version, buffer.device, id(buffer))
    cache = module.__dict__.setdefault("_flag_cache", {})
    if cache.get(name, (None,))[0] != key:
        cache[name] = (key, bool(buffer))
    return cache[name][1]


# --- fitting -------------------------------------------------------------------------------------
def reward_transitions(
    data: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, s', r, terminal) of every transition of the episodes that recorded rewards: N x n,
    N x m, N x n, N and N (bool: the transition ended its episode by termination).

    Raises:
        ValueError: no episode has rewards.
    """
    episodes = [ep for ep in data.episodes if ep.rewards is not None]
    if not episodes:
        raise ValueError(
            "the data has no rewards to learn a reward from (no episode recorded them); record "
            "rewards, or give the task a reward function"
        )
    x = np.concatenate([ep.states[:-1] for ep in episodes])
    u = np.concatenate([ep.actions for ep in episodes])
    x_next = np.concatenate([ep.states[1:] for ep in episodes])
    r = np.concatenate([ep.rewards for ep in episodes])
    return x, u, x_next, r, np.concatenate([_terminal_flags(ep) for ep in episodes])


def _terminal_flags(episode: Any) -> np.ndarray:
    """Per transition of ``episode``: whether it is the terminal one (T, bool)."""
    flags = np.zeros(len(episode.states) - 1, dtype=bool)
    flags[-1] = bool(getattr(episode, "terminated", False))
    return flags


def termination_labels(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every recorded state after the first of its episode (N x n) and whether it is terminal
    (N, bool): the last state of an episode that ended by termination."""
    states = [ep.states[1:] for ep in data.episodes]
    labels = [_terminal_flags(ep) for ep in data.episodes]
    if not states:
        raise ValueError("the data has no episodes to learn termination from")
    return np.concatenate(states), np.concatenate(labels)


def _parameters_of(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    param = next(model.parameters())
    return param.dtype, param.device


def _adam(
    model: nn.Module,
    loss_of: Any,
    count: int,
    config: RewardFitConfig,
    device: torch.device,
) -> float:
    """Adam (AdamW) for ``config.iterations`` steps on batches of row indices; the final loss."""
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    loss_value = math.nan
    try:
        for _ in range(config.iterations):
            if config.batch_size is None or config.batch_size >= count:
                rows = torch.arange(count, device=device)
            else:
                rows = torch.randint(
                    count, (config.batch_size,), generator=generator, device=device
                )
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            loss_value = float(loss.detach())
    finally:
        for p in params:  # users of the model (planners, policies) need no gradient of it
            p.requires_grad_(False)
    return loss_value


def fit_reward(
    model: RewardModel, data: Any, config: RewardFitConfig | None = None
) -> RewardFitReport:
    """Regress ``model`` on the recorded rewards of ``data`` (in place, from its weights).

    The continuing head learns from the transitions that do not end an episode by
    termination, the terminal head from those that do (while there are none, it is set to
    the continuing head's statistics and left untrained).

    Args:
        model: a :class:`RewardModel` of the data's state and action sizes.
        data: a ``TrajectoryDataset`` (anything with ``episodes`` of states, actions, rewards
            and ``terminated`` flags).
        config: :class:`RewardFitConfig` (defaults when None).

    Returns:
        A :class:`RewardFitReport` with the RMSE over all recorded transitions (each through
        the head of its kind).
    """
    config = config or RewardFitConfig()
    start = time.perf_counter()
    x, u, x_next, r, terminal = reward_transitions(data)
    if x.shape[1] != model.state_dim or u.shape[1] != model.action_dim:
        raise ValueError(
            f"the data has {x.shape[1]} states and {u.shape[1]} actions, the reward model "
            f"{model.state_dim} and {model.action_dim}"
        )
    dtype, device = _parameters_of(model)
    x_t, u_t, next_t, r_t = (
        torch.as_tensor(a, dtype=dtype, device=device) for a in (x, u, x_next, r)
    )
    head = torch.as_tensor(terminal, device=device).long()
    features = model.features(x_t, u_t, next_t)
    continuing = _statistics(r_t[head == 0][:, None]) if bool((head == 0).any()) else None
    ending = _statistics(r_t[head == 1][:, None]) if bool((head == 1).any()) else None
    first = continuing or ending
    stats = [(continuing or first)[k] for k in range(2)], [(ending or first)[k] for k in range(2)]
    trained = torch.stack([model.mlp.statistics_set, model.terminal_seen])
    model.mlp.renormalise(
        features,
        (torch.cat([stats[0][0], stats[1][0]]), torch.cat([stats[0][1], stats[1][1]])),
        trained,
    )
    model.terminal_seen.fill_(ending is not None)
    mlp = model.mlp
    target = (r_t - mlp.output_shift[head]) / mlp.output_scale[head]
    terminal_rows = torch.nonzero(head == 1).squeeze(1)

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        # every terminal transition in every batch: there are few of them (one per episode
        # at most), and random batches would mostly miss them
        rows = torch.cat([rows[head[rows] == 0], terminal_rows])
        normalised = mlp.net((features[rows] - mlp.input_shift) / mlp.input_scale)
        chosen = normalised.gather(1, head[rows, None])[:, 0]
        return ((chosen - target[rows]) ** 2).mean()

    loss = _adam(model, loss_of, len(r), config, device)
    with torch.no_grad():
        predicted = model(x_t, u_t, next_t, head.bool())
        rmse = float(((predicted - r_t) ** 2).mean().sqrt())
    return RewardFitReport(
        iterations=config.iterations,
        loss=loss,
        rmse=rmse,
        transitions=len(r),
        wall_time=time.perf_counter() - start,
        terminal_states=int(terminal.sum()),
    )


def fit_box(
    states: np.ndarray, labels: np.ndarray, min_terminals: int = BOX_MIN_TERMINALS
) -> tuple[np.ndarray, np.ndarray] | None:
    """Thresholds on single state variables that tell the terminal states (``labels``) from the
    others: (low, high), n each (-inf / +inf where a side is not used), or None where no such
    thresholds exist or fewer than ``min_terminals`` terminal states were recorded.

    A side of a variable can explain the terminal states beyond every other state on that side.
    Sides are taken greedily, the one explaining most of the terminal states left first (a tie:
    the larger gap, in units of the variable's spread), until every terminal state is
    explained; each threshold lies halfway between the last other state and the nearest
    terminal state it explains.
    """
    states = np.asarray(states, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = states[labels], states[~labels]
    if len(positives) < min_terminals or not len(negatives):
        return None
    n = states.shape[1]
    spread = np.maximum(states.std(0), 1e-12)
    top, bottom = negatives.max(0), negatives.min(0)
    beyond = {("high", i): positives[:, i] > top[i] for i in range(n)}
    beyond.update({("low", i): positives[:, i] < bottom[i] for i in range(n)})
    low, high = np.full(n, -np.inf), np.full(n, np.inf)
    left = np.ones(len(positives), dtype=bool)
    while left.any():
        best, best_key = None, None
        for key, mask in beyond.items():
            count = int((mask & left).sum())
            if not count:
                continue
            side, i = key
            values = positives[mask, i]
            gap = (values.min() - top[i]) if side == "high" else (bottom[i] - values.max())
            score = (count, gap / spread[i])
            if best is None or score > best:
                best, best_key = score, key
        if best_key is None:
            return None  # a terminal state inside every range: not a box
        side, i = best_key
        mask = beyond.pop(best_key)
        values = positives[mask, i]
        if side == "high":
            high[i] = (top[i] + values.min()) / 2
        else:
            low[i] = (bottom[i] + values.max()) / 2
        left &= ~mask
    return low, high


def fit_termination(
    model: TerminationModel,
    data: Any,
    config: RewardFitConfig | None = None,
    *,
    box: bool = True,
) -> RewardFitReport:
    """Train ``model`` to tell the terminal states of ``data`` from the others (in place).

    The two classes are weighted equally whatever their counts (an episode has at most one
    terminal state). Without any terminal state in the data nothing is trained and the model
    never terminates. With ``box`` (the default), thresholds on single variables that separate
    the classes (:func:`fit_box`) decide instead of the classifier (which is trained all the
    same, for data a box no longer explains).
    """
    config = config or RewardFitConfig()
    start = time.perf_counter()
    states, labels = termination_labels(data)
    if states.shape[1] != model.state_dim:
        raise ValueError(
            f"the data has {states.shape[1]} states, the termination model {model.state_dim}"
        )
    dtype, device = _parameters_of(model)
    positives = int(labels.sum())
    model.seen.fill_(positives > 0)
    found = fit_box(states, labels) if box else None
    model.boxed.fill_(found is not None)
    if found is not None:
        for buffer, values in zip((model.box_low, model.box_high), found, strict=True):
            buffer.copy_(torch.as_tensor(values, dtype=buffer.dtype))
    if positives == 0:
        return RewardFitReport(0, math.nan, None, len(labels), time.perf_counter() - start, 0)
    x = torch.as_tensor(states, dtype=dtype, device=device)
    y = torch.as_tensor(labels, dtype=dtype, device=device)
    model.mlp.renormalise(x)
    negatives = len(labels) - positives
    positive_rows = torch.nonzero(y > 0).squeeze(1)

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        # the two classes weigh the same, and every terminal state is in every batch (there
        # are few of them: random batches would mostly miss them)
        rows = torch.cat([rows[y[rows] == 0], positive_rows])
        losses = nn.functional.binary_cross_entropy_with_logits(
            model(x[rows]), y[rows], reduction="none"
        )
        positive = y[rows] > 0
        if not bool((~positive).any()):
            return losses.mean()
        return 0.5 * losses[positive].mean() + 0.5 * losses[~positive].mean()

    loss = _adam(model, loss_of, len(labels), config, device)
    with torch.no_grad():
        said = model.terminated(x)
        recall = float(said[y > 0].float().mean())
        specificity = float((~said[y == 0]).float().mean()) if negatives else math.nan
    return RewardFitReport(
        iterations=config.iterations,
        loss=loss,
        rmse=None,
        transitions=len(labels),
        wall_time=time.perf_counter() - start,
        terminal_states=positives,
        recall=recall,
        specificity=specificity,
    )


# --- files ---------------------------------------------------------------------------------------
PARTS_FORMAT = "hybridgym.LearnedParts"


def save_parts(parts: dict[str, nn.Module], path: Any) -> Any:
    """Write learned modules (name -> :class:`RewardModel` / :class:`TerminationModel`) with
    their configs to one file, atomically; returns the path."""
    from hybridgym.models.hybrid import atomic_torch_save

    payload = {
        "format": PARTS_FORMAT,
        "version": 1,
        "parts": {
            name: {
                "class": type(module).__name__,
                "config": module.config(),
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            }
            for name, module in parts.items()
        },
    }
    return atomic_torch_save(payload, path)


def load_parts(parts: dict[str, nn.Module], path: Any) -> None:
    """Load the weights :func:`save_parts` wrote into ``parts`` (the same names, classes and
    configs), executing no code from the file.

    Raises:
        ValueError: the file holds other parts, or is not such a file.
    """
    from hybridgym.models.hybrid import read_checkpoint

    payload = read_checkpoint(path, PARTS_FORMAT)
    stored = payload.get("parts", {})
    if set(stored) != set(parts):
        raise ValueError(
            f"{path} holds the learned parts {sorted(stored)}, expected {sorted(parts)}"
        )
    for name, module in parts.items():
        entry = stored[name]
        if entry.get("class") != type(module).__name__ or entry.get("config") != module.config():
            raise ValueError(
                f"{path}: the {name} part was saved as {entry.get('class')} {entry.get('config')}, "
                f"but is now {type(module).__name__} {module.config()}"
            )
        device = next(module.buffers()).device
        # files written before a buffer existed (the termination box) load with its default
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        state.update({k: v.to(device) for k, v in entry["state_dict"].items()})
        module.load_state_dict(state)
