"""TrajectoryDataset: validation, array/CSV/store round trips, collection from real envs, splits."""

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hybridgym.envs import get_task
from hybridgym.models import data as data_module
from hybridgym.models.data import Episode, TrajectoryDataset


def make_episode(rng, steps=5, n=2, m=1, rewards=True, t0=0.0, dt=0.1):
    return Episode.from_arrays(
        rng.normal(size=(steps + 1, n)),
        rng.normal(size=(steps, m)),
        rng.normal(size=steps) if rewards else None,
        t0 + dt * np.arange(steps + 1),
    )


def make_dataset(rng, count=3, **kwargs):
    lengths = [4 + i for i in range(count)]
    return TrajectoryDataset(
        [make_episode(rng, steps=t, **kwargs) for t in lengths],
        state_names=("a", "b"),
        action_names=("u",),
        dt=0.1,
        angle_dims=(0,),
    )


def listing(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


class ConstantPolicy:
    """Stands in for an SB3 model: predict(obs, deterministic=...) -> (action, state)."""

    def __init__(self, value):
        self.value = value
        self.deterministic_flags = []
        self.episode_starts = []

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        self.deterministic_flags.append(deterministic)
        self.episode_starts.append(bool(np.all(episode_start)))
        return np.full(1, self.value, dtype=np.float32), state


# --- episodes and arrays -------------------------------------------------------------------------
def test_episode_copies_converts_and_freezes_its_arrays():
    states = np.arange(6, dtype=np.int64).reshape(3, 2)
    actions = [[0.5], [1.5]]
    episode = Episode.from_arrays(states, actions, dt=0.25, t0=1.0)
    states[0, 0] = 99
    assert episode.states[0, 0] == 0 and episode.states.dtype == np.float64
    assert episode.num_steps == 2 and episode.rewards is None
    np.testing.assert_array_equal(episode.times, [1.0, 1.25, 1.5])
    for array in (episode.states, episode.actions, episode.times):
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        episode.states[0, 0] = 1.0
    with pytest.raises(ValueError, match="pass times"):
        Episode.from_arrays(states, actions)


def test_from_arrays_accepts_one_episode_a_ragged_list_and_3d_arrays(rng):
    x1, u1 = rng.normal(size=(4, 2)), rng.normal(size=(3, 1))
    x2, u2 = rng.normal(size=(6, 2)), rng.normal(size=(5, 1))
    one = TrajectoryDataset.from_arrays(x1, u1, rng.normal(size=3), dt=0.5)
    assert len(one) == 1 and one.num_steps == 3
    assert one.state_names == ("x0", "x1") and one.action_names == ("u0",)
    np.testing.assert_array_equal(one[0].times, [0.0, 0.5, 1.0, 1.5])

    ragged = TrajectoryDataset.from_arrays([x1, x2], [u1, u2], dt=0.1, state_names=("p", "q"))
    assert [e.num_steps for e in ragged] == [3, 5] and ragged.num_steps == 8
    np.testing.assert_array_equal(ragged.states(), np.concatenate([x1, x2]))
    np.testing.assert_array_equal(ragged.actions(), np.concatenate([u1, u2]))
    assert ragged.rewards() is None

    x3, u3 = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 4, 1))
    times = np.cumsum(rng.uniform(0.1, 1.0, size=(3, 5)), axis=1)
    cube = TrajectoryDataset.from_arrays(x3, u3, rng.normal(size=(3, 4)), times=times)
    assert len(cube) == 3 and cube.dt is None
    for i in range(3):
        np.testing.assert_array_equal(cube[i].states, x3[i])
        np.testing.assert_array_equal(cube[i].times, times[i])
    assert cube.rewards().shape == (12,)


def test_transitions_pair_consecutive_states_within_each_episode_only(rng):
    dataset = make_dataset(rng, count=2)
    x, u, x_next = dataset.transitions()
    assert x.shape == x_next.shape == (dataset.num_steps, 2) and u.shape == (dataset.num_steps, 1)
    first = dataset[0].num_steps
    np.testing.assert_array_equal(x[:first], dataset[0].states[:-1])
    np.testing.assert_array_equal(x_next[:first], dataset[0].states[1:])
    np.testing.assert_array_equal(x[first], dataset[1].states[0])  # no pair across episodes
    assert dataset.states().shape == (dataset.num_steps + len(dataset), 2)


def test_empty_dataset_has_empty_arrays():
    dataset = TrajectoryDataset(state_names=("a",), action_names=("u", "v"), dt=1.0)
    assert len(dataset) == 0 and dataset.num_steps == 0
    assert dataset.states().shape == (0, 1) and dataset.actions().shape == (0, 2)
    assert [a.shape for a in dataset.transitions()] == [(0, 1), (0, 2), (0, 1)]
    assert dataset.split() == (dataset, dataset)
    with pytest.raises(ValueError, match="empty"):
        dataset.bootstrap(0)


# --- validation ----------------------------------------------------------------------------------
def _good_second_episode():
    rng = np.random.default_rng(0)
    return {
        "states": rng.normal(size=(6, 2)),
        "actions": rng.normal(size=(5, 1)),
        "rewards": rng.normal(size=5),
        "times": 0.25 * np.arange(6),
    }


def _set(field, index, value):
    def corrupt(fields):
        fields[field] = fields[field].copy()
        fields[field][index] = value

    return corrupt


def _replace(field, value):
    def corrupt(fields):
        fields[field] = value

    return corrupt


BAD_EPISODES = [
    (
        "nan state",
        _set("states", (3, 1), np.nan),
        ValueError,
        "states has NaN at step 3, column 'b'",
    ),
    (
        "inf action",
        _set("actions", (2, 0), np.inf),
        ValueError,
        "actions has inf at step 2, column 'u'",
    ),
    ("nan reward", _set("rewards", 4, np.nan), ValueError, "rewards has NaN at step 4"),
    ("-inf time", _set("times", 1, -np.inf), ValueError, "times has -inf at index 1"),
    (
        "time repeats",
        _set("times", 2, 0.25),
        ValueError,
        r"times must be strictly increasing; times\[2\]=0.25 <= times\[1\]=0.25",
    ),
    (
        "time goes back",
        _set("times", 5, 0.0),
        ValueError,
        r"times must be strictly increasing; times\[5\]=0.0 <= times\[4\]=1.0",
    ),
    (
        "as many actions as states",
        _replace("actions", np.zeros((6, 1))),
        ValueError,
        "actions has 6 rows but states has 6; expected states to have one row more",
    ),
    (
        "zero steps",
        lambda f: f.update(
            states=np.zeros((1, 2)), actions=np.zeros((0, 1)), rewards=None, times=[0.0]
        ),
        ValueError,
        "actions has 0 rows",
    ),
    (
        "empty",
        lambda f: f.update(
            states=np.zeros((0, 2)), actions=np.zeros((0, 1)), rewards=None, times=None
        ),
        ValueError,
        "actions has 0 rows",
    ),
    ("1-D states", _replace("states", np.zeros(6)), ValueError, "states must be a 2-D array"),
    (
        "3-D actions",
        _replace("actions", np.zeros((5, 1, 1))),
        ValueError,
        "actions must be a 2-D array",
    ),
    (
        "too many state columns",
        _replace("states", np.zeros((6, 3))),
        ValueError,
        "states has 3 columns but the dataset names 2",
    ),
    (
        "no action columns",
        _replace("actions", np.zeros((5, 0))),
        ValueError,
        "actions has 0 columns but the dataset names 1",
    ),
    (
        "rewards per state",
        _replace("rewards", np.zeros(6)),
        ValueError,
        r"rewards must have shape \(5,\)",
    ),
    (
        "rewards as a column",
        _replace("rewards", np.zeros((5, 1))),
        ValueError,
        r"rewards must have shape \(5,\)",
    ),
    (
        "times per action",
        _replace("times", np.arange(5.0)),
        ValueError,
        r"times must have shape \(6,\)",
    ),
    (
        "string states",
        _replace("states", np.full((6, 2), "1.0")),
        TypeError,
        "states must hold real numbers",
    ),
    (
        "object actions",
        _replace("actions", np.array([[None]] * 5)),
        TypeError,
        "actions must hold real numbers",
    ),
    (
        "complex rewards",
        _replace("rewards", np.zeros(5, dtype=complex)),
        TypeError,
        "rewards must hold real numbers",
    ),
    (
        "boolean times",
        _replace("times", np.ones(6, dtype=bool)),
        TypeError,
        "times must hold real numbers",
    ),
    (
        "ragged states",
        _replace("states", [[0.0, 1.0]] * 5 + [[2.0]]),
        ValueError,
        "states is not a rectangular array",
    ),
    (
        "ragged actions",
        _replace("actions", [[0.0]] * 4 + [[1.0, 2.0]]),
        ValueError,
        "actions is not a rectangular array",
    ),
]


@pytest.mark.parametrize(
    "corrupt, error, message", [case[1:] for case in BAD_EPISODES], ids=[c[0] for c in BAD_EPISODES]
)
def test_bad_episodes_raise_naming_the_episode_and_field(corrupt, error, message):
    good = _good_second_episode()
    bad = dict(_good_second_episode())
    corrupt(bad)
    kwargs = {"dt": 0.25, "state_names": ("a", "b"), "action_names": ("u",)}
    with pytest.raises(error, match=f"^episode 1: {message}"):
        TrajectoryDataset.from_arrays(
            [good["states"], bad["states"]],
            [good["actions"], bad["actions"]],
            [good["rewards"], bad["rewards"]],
            times=[good["times"], bad["times"]],
            **kwargs,
        )
    # the same check guards append, as the next episode's index
    dataset = TrajectoryDataset.from_arrays(
        good["states"], good["actions"], good["rewards"], times=good["times"], **kwargs
    )
    with pytest.raises(error, match=f"^episode 1: {message}"):
        dataset.append(bad["states"], bad["actions"], bad["rewards"], bad["times"])
    assert len(dataset) == 1


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"state_names": ("a", "a")}, ValueError, "state_names must be unique"),
        ({"state_names": ("a", "")}, ValueError, "non-empty"),
        ({"state_names": ("a", 1)}, TypeError, "state_names must hold strings"),
        ({"state_names": "ab"}, TypeError, "sequence of strings"),
        ({"state_names": ()}, ValueError, "state_names is empty"),
        ({"action_names": ("a",)}, ValueError, "both state_names and action_names"),
        ({"dt": 0.0}, ValueError, "dt .* must be finite and > 0"),
        ({"dt": "0.1"}, TypeError, "dt must be a number"),
        ({"angle_dims": (2,)}, ValueError, "angle_dims holds 2, outside the 2 state dimensions"),
        ({"angle_dims": (0, 0)}, ValueError, "must not repeat"),
        ({"angle_dims": (0.0,)}, TypeError, "angle_dims must hold ints"),
    ],
)
def test_bad_dataset_options_raise(kwargs, error, message):
    options = {"state_names": ("a", "b"), "action_names": ("u",), "dt": 0.1, **kwargs}
    with pytest.raises(error, match=message):
        TrajectoryDataset(**options)


def test_episodes_must_match_the_names(rng):
    with pytest.raises(
        ValueError, match=r"^episode 1: states has 2 columns but the dataset names 3"
    ):
        TrajectoryDataset(
            [make_episode(rng, n=3), make_episode(rng, n=2)],
            state_names=("a", "b", "c"),
            action_names=("u",),
        )
    with pytest.raises(TypeError, match="episode 0: expected an Episode"):
        TrajectoryDataset([np.zeros((3, 2))], state_names=("a", "b"), action_names=("u",))


@st.composite
def arrays_for_from_arrays(draw):
    """Episodes of random (often inconsistent) shapes and values, in any accepted layout (one
    episode, a list of episodes, 3-D arrays; numpy or nested lists), and whether they are valid.
    """
    n, m = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    count = draw(st.integers(1, 3))
    finite = st.floats(-1e6, 1e6)
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    values = st.one_of(finite, special) if draw(st.integers(0, 3)) == 0 else finite
    lengths = st.sampled_from([0, 1, 2, 3, 4, 4])
    same_length = draw(st.booleans())
    steps_all = draw(lengths)
    episodes, valid, rewards_finite = [], n >= 1, True
    for _ in range(count):
        steps = steps_all if same_length else draw(lengths)
        rows = max(steps + draw(st.sampled_from([0, 0, 0, 0, 0, 1, -1])), 0)
        x = np.array(draw(st.lists(values, min_size=(steps + 1) * n, max_size=(steps + 1) * n)))
        u = np.array(draw(st.lists(values, min_size=rows * m, max_size=rows * m)))
        r = np.array(draw(st.lists(values, min_size=steps, max_size=steps)))
        episodes.append((x.reshape(steps + 1, n), u.reshape(rows, m), r))
        valid &= steps >= 1 and rows == steps and np.isfinite(x).all() and np.isfinite(u).all()
        rewards_finite &= np.isfinite(r).all()
    with_rewards = draw(st.booleans())
    valid &= rewards_finite or not with_rewards
    fields = [list(field) for field in zip(*episodes, strict=True)]
    if not with_rewards:
        fields[2] = None
    layout = draw(st.sampled_from(["single", "list", "nested lists", "3-D"]))
    if layout == "single" and count == 1:
        fields = [None if f is None else f[0] for f in fields]
    elif layout == "nested lists":
        fields = [None if f is None else [a.tolist() for a in f] for f in fields]
    elif layout == "3-D" and all(f is None or len({a.shape for a in f}) == 1 for f in fields):
        fields = [None if f is None else np.stack(f) for f in fields]
    else:
        layout = "list"
    event(f"layout {layout}, valid {valid}")
    return (*fields, [e[0] for e in episodes], valid)


@settings(max_examples=100, deadline=None)
@given(arrays_for_from_arrays())
def test_from_arrays_loads_valid_input_and_rejects_the_rest_with_value_or_type_error(case):
    states, actions, rewards, expected_states, valid = case
    try:
        dataset = TrajectoryDataset.from_arrays(states, actions, rewards, dt=0.5)
    except (ValueError, TypeError) as error:
        assert not valid, f"valid input was rejected: {error}"
        assert str(error).startswith(("episode", "state_names", "states")), str(error)
        return
    assert valid, "invalid input was accepted"
    assert len(dataset) == len(expected_states)
    for episode, x in zip(dataset, expected_states, strict=True):
        np.testing.assert_array_equal(episode.states, x)
        np.testing.assert_allclose(np.diff(episode.times), 0.5)
        assert (episode.rewards is None) == (rewards is None)


# --- the append-only store -----------------------------------------------------------------------
def test_save_load_round_trip_and_binding(rng, tmp_path):
    dataset = make_dataset(rng, count=3)
    dataset.append(make_episode(rng, rewards=False))  # mixed: one episode without rewards
    assert dataset.directory is None
    dataset.save(tmp_path / "data")
    assert dataset.directory == tmp_path / "data"
    assert listing(tmp_path / "data") == ["dataset.json", "episodes"] + [
        f"episodes/episode_{i:06d}.npz" for i in range(4)
    ]
    loaded = TrajectoryDataset.load(tmp_path / "data")
    assert loaded == dataset and loaded.directory == tmp_path / "data"
    assert loaded.angle_dims == (0,) and loaded.dt == 0.1 and loaded[3].rewards is None
    with np.load(tmp_path / "data/episodes/episode_000000.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["actions", "rewards", "states", "times"]


def test_append_writes_exactly_one_file_and_a_failed_append_changes_nothing(rng, tmp_path):
    dataset = make_dataset(rng, count=2)
    dataset.save(tmp_path)
    before = listing(tmp_path)
    stored = dataset.append(make_episode(rng))
    assert listing(tmp_path) == [*before, "episodes/episode_000002.npz"]
    assert len(dataset) == 3 and TrajectoryDataset.load(tmp_path)[2] == stored

    states = rng.normal(size=(4, 2))
    states[2, 0] = np.nan
    after_good = listing(tmp_path)
    with pytest.raises(ValueError, match=r"^episode 3: states has NaN at step 2, column 'a'"):
        dataset.append(states, rng.normal(size=(3, 1)))
    assert listing(tmp_path) == after_good and len(dataset) == 3
    assert len(TrajectoryDataset.load(tmp_path)) == 3

    # arrays without times get them from dt
    dataset.append(rng.normal(size=(3, 2)), rng.normal(size=(2, 1)))
    np.testing.assert_allclose(TrajectoryDataset.load(tmp_path)[3].times, [0.0, 0.1, 0.2])


def test_a_crash_during_a_write_leaves_the_old_state(rng, tmp_path, monkeypatch):
    dataset = make_dataset(rng, count=1)
    dataset.save(tmp_path)
    before = listing(tmp_path)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(data_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        dataset.append(make_episode(rng))
    monkeypatch.undo()
    assert listing(tmp_path) == before and len(dataset) == 1


def test_load_ignores_leftover_temporary_files_and_names_bad_files(rng, tmp_path):
    dataset = make_dataset(rng, count=2)
    dataset.save(tmp_path)
    (tmp_path / "episodes/.episode_000002.npz.1a2b3c4d.tmp").write_bytes(b"half a zip")
    assert TrajectoryDataset.load(tmp_path) == dataset

    (tmp_path / "episodes/episode_000002.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"episode_000002\.npz is not a readable episode file"):
        TrajectoryDataset.load(tmp_path)

    bad = make_episode(rng)
    states = bad.states.copy()
    states[1, 1] = np.inf
    np.savez(
        tmp_path / "episodes/episode_000002.npz",
        states=states,
        actions=bad.actions,
        times=bad.times,
    )
    with pytest.raises(
        ValueError,
        match=r"episode 2 \(.*episode_000002.npz\): states has inf at step 1, column 'b'",
    ):
        TrajectoryDataset.load(tmp_path)

    np.savez(tmp_path / "episodes/episode_000002.npz", states=states, actions=bad.actions)
    with pytest.raises(ValueError, match=r"episode_000002.npz must hold .* missing \['times'\]"):
        TrajectoryDataset.load(tmp_path)

    os.remove(tmp_path / "episodes/episode_000002.npz")
    os.remove(tmp_path / "episodes/episode_000000.npz")
    with pytest.raises(ValueError, match=r"lacks episode_000000\.npz"):
        TrajectoryDataset.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset\.json does not exist"):
        TrajectoryDataset.load(tmp_path / "nowhere")


def test_save_refuses_a_different_dataset_and_resumes_the_same_one(rng, tmp_path):
    dataset = make_dataset(rng, count=3)
    dataset.subset([0, 1]).save(tmp_path)  # as if a save had stopped after two episodes
    dataset.save(tmp_path)
    assert TrajectoryDataset.load(tmp_path) == dataset
    dataset.save(tmp_path)  # saving again changes nothing
    assert len(list((tmp_path / "episodes").iterdir())) == 3

    other_names = TrajectoryDataset(
        dataset.episodes, state_names=("p", "q"), action_names=("u",), dt=0.1, angle_dims=(0,)
    )
    with pytest.raises(FileExistsError, match="holds a different dataset"):
        other_names.save(tmp_path)
    with pytest.raises(FileExistsError, match="not the first episodes of this dataset"):
        make_dataset(rng, count=3).save(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("hello")
    with pytest.raises(FileExistsError, match=r"holds no dataset\.json"):
        dataset.save(tmp_path / "other")
    assert TrajectoryDataset.load(tmp_path) == dataset


# --- CSV -----------------------------------------------------------------------------------------
def test_csv_round_trip_needs_no_arguments(rng, tmp_path):
    dataset = make_dataset(rng, count=2)
    dataset.append(make_episode(rng, rewards=False, t0=3.0))
    dataset.to_csv(tmp_path / "d.csv")
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[0].startswith("# hybridgym.TrajectoryDataset {")
    assert lines[1] == "episode,t,a,b,u,reward,terminated"
    assert lines[2 + dataset[0].num_steps].endswith(",,,0")  # the last row of episode 0
    assert len(lines) == 2 + sum(e.num_steps + 1 for e in dataset)
    assert TrajectoryDataset.from_csv(tmp_path / "d.csv") == dataset  # exact, not approximate


@pytest.mark.parametrize("name", ["x ", " x", "x\t"])
def test_names_with_surrounding_whitespace_are_refused(name, tmp_path):
    # a CSV header is read stripped, so such a name could not come back from to_csv (found by
    # the Minari fuzz property: state name "_ " came back as "_")
    with pytest.raises(ValueError, match="state_names must not start or end with whitespace"):
        TrajectoryDataset(state_names=[name], action_names=["u"], dt=0.1)
    with pytest.raises(ValueError, match="action_names must not start or end with whitespace"):
        TrajectoryDataset(state_names=["x"], action_names=[name], dt=0.1)
    inner = TrajectoryDataset(state_names=["cart x"], action_names=["u"], dt=0.1)
    inner.append(np.zeros((3, 1)), np.zeros((2, 1)))
    inner.to_csv(tmp_path / "d.csv")
    assert TrajectoryDataset.from_csv(tmp_path / "d.csv") == inner  # inner spaces are fine


def test_a_hand_written_csv_with_its_own_column_names(tmp_path):
    (tmp_path / "plant.csv").write_text(
        "run,time_s,valve,temp,pressure,note,gain\n"
        "A,0.0,0.5,20.0,1.0,start,3.0\n"
        "A,0.5,0.25,21.0,1.5,,1.0\n"
        "A,1.5,,22.5,1.25,end,\n"
        "B,10,1.0,19.0,0.5,,-1\n"
        "B,11,,19.5,0.75,,\n"
    )
    columns = {"episode_column": "run", "time_column": "time_s"}
    dataset = TrajectoryDataset.from_csv(
        tmp_path / "plant.csv",
        state_columns=["temp", "pressure"],
        action_columns=["valve"],
        reward_column=None,
        **columns,
    )
    assert dataset.state_names == ("temp", "pressure") and dataset.action_names == ("valve",)
    assert [e.num_steps for e in dataset] == [2, 1] and dataset.dt is None
    np.testing.assert_array_equal(dataset[0].states, [[20.0, 1.0], [21.0, 1.5], [22.5, 1.25]])
    np.testing.assert_array_equal(dataset[0].actions, [[0.5], [0.25]])
    np.testing.assert_array_equal(dataset[1].times, [10.0, 11.0])
    assert dataset[0].rewards is None

    columns["reward_column"] = "gain"
    rewarded = TrajectoryDataset.from_csv(
        tmp_path / "plant.csv", state_columns=["temp"], action_columns=["valve"], **columns
    )
    np.testing.assert_array_equal(rewarded[0].rewards, [3.0, 1.0])
    np.testing.assert_array_equal(rewarded[1].rewards, [-1.0])
    with pytest.raises(
        ValueError, match=r"plant\.csv line 2, column 'note': the cell holds 'start'"
    ):
        TrajectoryDataset.from_csv(
            tmp_path / "plant.csv", state_columns=["temp"], action_columns=["note"], **columns
        )


PLAIN = {"state_columns": ["a"], "action_columns": ["u"]}
ONE_EPISODE = {**PLAIN, "episode_column": None, "time_column": None, "reward_column": None}


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("a,u\n1,2\n2,\n", {}, "was not written by TrajectoryDataset.to_csv.*pass state_columns"),
        ("a,u\n1,2\n2,\n", {**PLAIN, "state_columns": ["x"]}, r"no column 'x' .*\['a', 'u'\]"),
        ("a,u\n1,2\n2,\n", PLAIN, "no column 'episode'.*episode_column=None"),
        (
            "a,u\n1,oops\n2,\n",
            {**ONE_EPISODE, "dt": 1.0},
            "line 2, column 'u': the cell holds 'oops'",
        ),
        ("a,u\n1,2\n2\n", {**ONE_EPISODE, "dt": 1.0}, "line 3: 1 cells, but the header has 2"),
        (
            "e,t,a,u\n0,0,1,1\n0,0,2,\n",
            {**PLAIN, "episode_column": "e", "reward_column": None},
            r"episode 0 \(id '0' in x\.csv\): times must be strictly increasing",
        ),
        ("a,u\n1,2\n2,\n", ONE_EPISODE, "no dt is set; pass times"),
    ],
)
def test_bad_csv_files_raise_naming_the_problem(tmp_path, text, kwargs, message):
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        TrajectoryDataset.from_csv(tmp_path / "x.csv", **kwargs)


# --- collecting from real envs -------------------------------------------------------------------
def test_collect_random_pendulum_counts_rewards_and_times():
    task = get_task("pendulum")
    by_episodes = TrajectoryDataset.collect(task.make_real_env(), task, episodes=2, seed=3)
    assert [e.num_steps for e in by_episodes] == [200, 200]
    assert by_episodes.state_names == ("theta", "thetadot") and by_episodes.dt == 0.05
    assert by_episodes.angle_dims == (0,)
    episode = by_episodes[0]
    np.testing.assert_allclose(episode.times, 0.05 * np.arange(201))
    assert np.all(np.abs(episode.actions) <= 2.0)
    # rewards are Gymnasium's: the task's formula on the state before each step
    expected = task.reward(episode.states[:-1], episode.actions, episode.states[1:])
    np.testing.assert_allclose(episode.rewards, expected, rtol=1e-5, atol=1e-5)
    # the first state is the reset observation's state
    env = task.make_real_env()
    obs, _ = env.reset(seed=3)
    np.testing.assert_allclose(episode.states[0], task.obs_to_state(obs[None].astype(float))[0])

    by_steps = TrajectoryDataset.collect(task.make_real_env(), task, steps=250, seed=3)
    assert [e.num_steps for e in by_steps] == [200, 50] and by_steps.num_steps == 250
    assert by_steps[0] == by_episodes[0]  # same seed, same data


def test_collect_is_deterministic_for_a_seed():
    task = get_task("pendulum")
    first = TrajectoryDataset.collect(task.make_real_env(), task, steps=30, seed=7)
    again = TrajectoryDataset.collect(task.make_real_env(), task, steps=30, seed=7)
    other = TrajectoryDataset.collect(task.make_real_env(), task, steps=30, seed=8)
    assert first == again
    assert not np.allclose(first[0].states[0], other[0].states[0])
    assert not np.allclose(first[0].actions, other[0].actions)


def test_collect_with_a_policy_unwraps_a_spinning_pendulum():
    task = get_task("pendulum")
    policy = ConstantPolicy(2.0)
    dataset = TrajectoryDataset.collect(
        task.make_real_env(), task, policy, episodes=1, seed=0, deterministic=True
    )
    theta = dataset[0].states[:, 0]
    assert theta.max() - theta.min() > 4 * math.pi  # it goes round at least twice
    assert np.all(np.abs(np.diff(theta)) < math.pi)  # and the stored angle is continuous
    wrapped = (theta + math.pi) % (2 * math.pi) - math.pi
    assert np.any(np.abs(np.diff(wrapped)) > math.pi)  # as the observations alone would not be
    np.testing.assert_array_equal(dataset[0].actions, 2.0)
    assert policy.deterministic_flags == [True] * 200
    assert policy.episode_starts == [True] + [False] * 199  # SB3's episode_start
    TrajectoryDataset.collect(task.make_real_env(), task, policy, steps=250, seed=0)
    assert policy.episode_starts[200:] == [True] + [False] * 199 + [True] + [False] * 49


@pytest.mark.parametrize(
    "name, kwargs",
    [("lotka_volterra", {}), ("cartpole_swingup", {}), ("datacenter", {"num_zones": 2})],
)
def test_collect_on_our_own_systems_uses_the_tasks_names(name, kwargs):
    task = get_task(name, **kwargs)
    dataset = TrajectoryDataset.collect(task.make_real_env(), task, steps=12, seed=1)
    assert dataset.state_names == task.state_names and dataset.action_names == task.action_names
    assert dataset.num_steps == 12 and dataset.angle_dims == task.angle_dims
    x, u, _ = dataset.transitions()
    assert x.shape == (12, task.state_dim) and u.shape == (12, task.action_dim)


def test_collect_rejects_bad_budgets_and_policies():
    task = get_task("pendulum")
    env = task.make_real_env()
    with pytest.raises(ValueError, match=r"exactly one of episodes= .* or steps="):
        TrajectoryDataset.collect(env, task)
    with pytest.raises(ValueError, match="exactly one"):
        TrajectoryDataset.collect(env, task, episodes=1, steps=5)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrajectoryDataset.collect(env, task, steps=0)
    with pytest.raises(TypeError, match="episodes must be an int"):
        TrajectoryDataset.collect(env, task, episodes=1.5)
    with pytest.raises(TypeError, match="SB3's predict"):
        TrajectoryDataset.collect(env, task, lambda obs: obs, steps=3)


# --- selections ----------------------------------------------------------------------------------
def test_split_is_by_episode_seeded_and_disjoint(rng, tmp_path):
    dataset = make_dataset(rng, count=10)
    dataset.save(tmp_path)
    train, val = dataset.split(0.3, seed=1)
    assert (len(train), len(val)) == (7, 3)
    assert train.directory is None and val.directory is None
    ids = {id(e): i for i, e in enumerate(dataset)}
    train_ids, val_ids = [ids[id(e)] for e in train], [ids[id(e)] for e in val]
    assert set(train_ids).isdisjoint(val_ids) and sorted(train_ids + val_ids) == list(range(10))
    assert train_ids == sorted(train_ids)  # the original order is kept
    assert dataset.split(0.3, seed=1) == (train, val)
    assert dataset.split(0.3, seed=2)[1] != val
    assert len(dataset.split(0.01)[1]) == 1  # a positive fraction gives at least one

    single = dataset.subset([4])
    single_train, single_val = single.split(0.5)
    assert len(single_train) == 1 and len(single_val) == 0
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        dataset.split(1.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        dataset.split(0.2, seed=None)


def test_bootstrap_draws_with_replacement_and_is_seeded(rng):
    dataset = make_dataset(rng, count=10)
    sample = dataset.bootstrap(seed=0)
    assert len(sample) == 10 and sample.directory is None
    ids = [id(e) for e in sample]
    assert len(set(ids)) < 10  # something was drawn twice
    assert set(ids) <= {id(e) for e in dataset}
    assert dataset.bootstrap(seed=0) == sample and dataset.bootstrap(seed=1) != sample


def test_subset_merge_and_add(rng):
    dataset = make_dataset(rng, count=4)
    picked = dataset.subset([3, 1, 1])
    assert [e.num_steps for e in picked] == [7, 5, 5]
    assert dataset.subset([0, 1]) + dataset.subset([2, 3]) == dataset
    with pytest.raises(IndexError, match="episode 4 out of range"):
        dataset.subset([4])
    other = TrajectoryDataset(state_names=("a", "b"), action_names=("v",), dt=0.1, angle_dims=(0,))
    with pytest.raises(ValueError, match="different systems"):
        dataset.merge(other)


# --- Minari (optional dependency) ----------------------------------------------------------------
def test_minari_without_minari_says_how_to_install_it(rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # makes `import minari` fail
    with pytest.raises(ImportError, match=r"pip install hybridgym\[minari\]"):
        make_dataset(rng).to_minari("hybridgym/test-v0")
    with pytest.raises(ImportError, match=r"pip install hybridgym\[minari\]"):
        TrajectoryDataset.from_minari("hybridgym/test-v0")


def test_minari_round_trip_needs_no_arguments(rng, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = make_dataset(rng, count=3)
    written = dataset.to_minari("hybridgym/round-trip-v0", description="three episodes")
    assert written.total_episodes == 3 and written.total_steps == dataset.num_steps
    assert TrajectoryDataset.from_minari("hybridgym/round-trip-v0") == dataset
    assert TrajectoryDataset.from_minari(written) == dataset

    dataset.append(make_episode(rng, rewards=False))
    with pytest.raises(ValueError, match="episode 3: rewards is None"):
        dataset.to_minari("hybridgym/no-rewards-v0")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Minari's advice on metadata left out
def test_from_minari_with_a_task_maps_observations_to_unwrapped_states(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    task = get_task("pendulum")
    real = TrajectoryDataset.collect(task.make_real_env(), task, ConstantPolicy(2.0), episodes=1)
    episode = real[0]
    buffer = EpisodeBuffer(
        id=0,
        observations=task.state_to_obs(episode.states).astype(np.float32),
        actions=episode.actions.astype(np.float32),
        rewards=episode.rewards.tolist(),
        terminations=[False] * episode.num_steps,
        truncations=[False] * (episode.num_steps - 1) + [True],
    )
    env = task.make_real_env()
    spinning = minari.create_dataset_from_buffers(
        "pendulum/spinning-v0",
        [buffer],
        observation_space=env.observation_space,
        action_space=env.action_space,
    )
    loaded = TrajectoryDataset.from_minari(spinning, task=task)
    assert loaded.state_names == task.state_names and loaded.angle_dims == (0,)
    np.testing.assert_allclose(loaded[0].states, episode.states, atol=1e-5)  # float32 obs
    assert np.ptp(loaded[0].states[:, 0]) > 4 * math.pi  # unwrapped, as collect stores it
    np.testing.assert_allclose(loaded[0].times, episode.times)
    with pytest.raises(TypeError, match="a task and names"):
        TrajectoryDataset.from_minari(spinning, task=task, dt=0.1)
