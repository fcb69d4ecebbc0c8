"""RewardModel and TerminationModel: warm starts keep the function, the terminal head, a model
that never saw a termination never terminates, configs are checked."""

import numpy as np
import pytest
import torch

from hybridgym.models import (
    Episode,
    RewardFitConfig,
    RewardModel,
    TerminationModel,
    TrajectoryDataset,
    fit_reward,
    fit_termination,
)
from hybridgym.models.reward_model import (
    fit_box,
    load_parts,
    save_parts,
    termination_labels,
)


def _data(rng, episodes=20, steps=30, terminate_beyond=None):
    """Random walks x' = x + 0.1 u with reward -x'^2 - 0.1 u^2 (10 at termination, when
    |x'| > terminate_beyond)."""
    made = []
    for _ in range(episodes):
        x = [rng.uniform(-0.5, 0.5, size=2)]
        u = rng.uniform(-1, 1, size=(steps, 1))
        rewards, ended = [], False
        for k in range(steps):
            x.append(x[-1] + 0.1 * np.array([u[k, 0], -u[k, 0]]))
            ended = terminate_beyond is not None and abs(x[-1][0]) > terminate_beyond
            rewards.append(10.0 if ended else -(x[-1][0] ** 2) - 0.1 * u[k, 0] ** 2)
            if ended:
                break
        k = len(rewards)
        made.append(Episode.from_arrays(np.array(x), u[:k], rewards, dt=0.1, terminated=ended))
    return TrajectoryDataset(made, state_names=("a", "b"), action_names=("u",), dt=0.1)


def test_renormalising_keeps_the_function(rng):
    """A refit on data of another scale first renormalises the inputs and outputs; the network
    computes the same rewards right after (a warm start starts where the last fit ended)."""
    torch.manual_seed(0)
    model = RewardModel(2, 1, (16, 16))
    fit_reward(model, _data(rng), RewardFitConfig(iterations=50))
    x = torch.randn(64, 2)
    u = torch.rand(64, 1) * 2 - 1
    x_next = x + 0.1 * torch.randn(64, 2)
    with torch.no_grad():
        before = model(x, u, x_next)
        features = model.features(x, u, x_next) * 7.0 + 3.0
        target = (torch.full((2,), -40.0), torch.full((2,), 25.0))
        model.mlp.renormalise(features, target)
        after = model(x, u, x_next)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert torch.allclose(model.mlp.output_scale, torch.full((2,), 25.0))


def test_a_reward_fit_learns_and_reports_its_error(rng):
    torch.manual_seed(0)
    model = RewardModel(2, 1, (32, 32))
    data = _data(rng, episodes=40)
    report = fit_reward(model, data, RewardFitConfig(iterations=400))
    rewards = data.rewards()
    assert report.transitions == len(rewards) and report.terminal_states == 0
    assert report.rmse < 0.1 * rewards.std()
    assert not any(p.requires_grad for p in model.parameters())  # only fits train it


def test_the_terminal_head_learns_the_reward_of_ending_transitions(rng):
    torch.manual_seed(0)
    model = RewardModel(2, 1, (32, 32))
    data = _data(rng, episodes=60, terminate_beyond=0.5)
    assert sum(ep.terminated for ep in data.episodes) >= 10
    report = fit_reward(model, data, RewardFitConfig(iterations=400))
    assert report.terminal_states == sum(ep.terminated for ep in data.episodes)
    x = torch.tensor([[0.35, -0.35], [0.5, -0.5]])
    x_next = torch.tensor([[0.4, -0.4], [0.55, -0.55]])
    u = torch.full((2, 1), 0.5)
    reward = model(x, u, x_next, torch.tensor([False, True]))
    assert reward[0] == pytest.approx(-0.16 - 0.025, abs=0.1)  # the continuing head
    assert reward[1] == pytest.approx(10.0, abs=0.5)  # the ending head
    assert model(x, u, x_next)[0] == reward[0]  # no terminal flags: the continuing head


def test_termination_without_terminal_states_never_terminates(rng):
    model = TerminationModel(2)
    report = fit_termination(model, _data(rng))
    assert report.terminal_states == 0 and report.iterations == 0
    assert not model.terminated(torch.randn(100, 2) * 100).any()
    assert (model.probability(torch.randn(5, 3, 2)) == 0).all()


def test_termination_is_learned_from_ending_states(rng):
    torch.manual_seed(0)
    model = TerminationModel(2, (32, 32))
    report = fit_termination(model, _data(rng, episodes=80, terminate_beyond=0.5))
    assert report.recall >= 0.95 and report.specificity >= 0.97
    grid = torch.tensor([[0.0, 0.0], [0.3, -0.3], [1.2, -1.2], [-1.3, 1.3]])
    assert model.terminated(grid).tolist() == [False, False, True, True]
    assert model.terminated(grid[None].expand(3, -1, -1)).shape == (3, 4)  # any leading dims


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("iterations", -1, "iterations must be an int >= 0"),
        ("batch_size", 0, "batch_size must be an int >= 1 or None"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("weight_decay", float("nan"), "weight_decay must be finite"),
    ],
)
def test_the_fit_config_is_checked(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        RewardFitConfig(**{field: value})


def test_data_without_rewards_is_refused(rng):
    data = _data(rng, episodes=2)
    plain = TrajectoryDataset(
        [Episode(ep.states, ep.actions, None, ep.times) for ep in data.episodes],
        state_names=("a", "b"),
        action_names=("u",),
        dt=0.1,
    )
    with pytest.raises(ValueError, match="no rewards to learn a reward from"):
        fit_reward(RewardModel(2, 1), plain)


# --- the termination box ------------------------------------------------------------------
def _leaning_pole_data(rng, episodes=60):
    """States (x, theta): the cart stays within |x| < 0.2 while the pole leans at random; the
    episode ends when |theta| > 0.2 (reward 1 per step, 0 for the fall)."""
    made = []
    for _ in range(episodes):
        x = [np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.05, 0.05)])]
        rewards, ended = [], False
        for _ in range(40):
            step = np.array([rng.uniform(-0.02, 0.02), rng.normal(0.0, 0.04)])
            x.append(np.array([np.clip(x[-1][0] + step[0], -0.2, 0.2), x[-1][1] + step[1]]))
            ended = abs(x[-1][1]) > 0.2
            rewards.append(0.0 if ended else 1.0)
            if ended:
                break
        u = np.zeros((len(rewards), 1))
        made.append(Episode.from_arrays(np.array(x), u, rewards, dt=0.1, terminated=ended))
    return TrajectoryDataset(made, state_names=("x", "theta"), action_names=("u",), dt=0.1)


def test_a_box_explains_terminations_by_one_variable_and_holds_everywhere(rng):
    """Terminal states recorded only near x = 0 (|x| < 0.2): the thresholds on theta alone
    explain them, and decide beyond the recorded x too, where a classifier has no data."""
    data = _leaning_pole_data(rng)
    states, labels = termination_labels(data)
    assert labels.sum() >= 10
    low, high = fit_box(states, labels)
    assert np.isinf(low[0]) and np.isinf(high[0])  # x is not used
    below = states[~labels, 1]
    assert below.max() < high[1] < states[labels, 1][states[labels, 1] > 0].min()
    assert states[labels, 1][states[labels, 1] < 0].max() < low[1] < below.min()
    model = TerminationModel(2, (16, 16))
    report = fit_termination(model, data, RewardFitConfig(iterations=100))
    assert bool(model.boxed) and report.recall == 1.0 and report.specificity == 1.0
    far = torch.tensor([[0.9, 0.25], [-0.9, -0.25], [0.9, 0.1], [-0.9, 0.0]])
    assert model.terminated(far).tolist() == [True, True, False, False]
    assert model.probability(far[None].expand(3, -1, -1)).shape == (3, 4)


def test_no_box_where_no_single_variable_explains_the_terminal_states(rng):
    """Ending when x + theta > 0.3 (a diagonal boundary): terminal states lie inside the
    others' ranges of both variables, so the classifier decides; too few terminal states
    give no box either."""
    states = rng.uniform(-0.3, 0.3, size=(2_000, 2))
    labels = states.sum(1) > 0.3
    assert fit_box(states, labels) is None
    model = TerminationModel(2, (32, 32))
    episodes = [
        Episode.from_arrays(
            np.stack([np.zeros(2), s]), np.zeros((1, 1)), [0.0], dt=0.1, terminated=bool(flag)
        )
        for s, flag in zip(states, labels, strict=True)
    ]
    data = TrajectoryDataset(episodes, state_names=("x", "theta"), action_names=("u",), dt=0.1)
    fit_termination(model, data, RewardFitConfig(iterations=300))
    assert not bool(model.boxed)
    few = np.zeros(len(states), dtype=bool)
    few[np.argsort(states[:, 1])[-4:]] = True  # the 4 largest theta: a box, but too few
    assert fit_box(states, few) is None
    assert fit_box(states, few, min_terminals=4) is not None


def test_parts_saved_before_the_box_existed_still_load(rng, tmp_path):
    model = TerminationModel(2, (16, 16))
    fit_termination(model, _data(rng, episodes=80, terminate_beyond=0.5))
    save_parts({"termination": model}, tmp_path / "parts.pt")
    payload = torch.load(tmp_path / "parts.pt", weights_only=True)
    state = payload["parts"]["termination"]["state_dict"]
    for key in ("boxed", "box_low", "box_high"):
        del state[key]
    torch.save(payload, tmp_path / "old.pt")
    again = TerminationModel(2, (16, 16))
    load_parts({"termination": again}, tmp_path / "old.pt")
    grid = torch.tensor([[0.0, 0.0], [1.2, -1.2]])
    assert not bool(again.boxed)
    assert again.terminated(grid).tolist() == [False, True]
