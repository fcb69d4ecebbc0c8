"""Property tests of TrajectoryDataset's entry points: arrays, CSV and Minari.

Every input either builds a valid dataset (that survives a save/load and a CSV round trip
unchanged) or raises ``ValueError``/``TypeError`` naming the offending field, column or
episode. Arrays stay tiny so that 500 examples per property run in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridgym.models import TrajectoryDataset

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("states", "actions", "rewards", "times")

# --- strategies --------------------------------------------------------------------------------
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e308, -0.0, 5e-324]
DTYPES = ["float64", "float32", "int64", "int8", "bool", "object", "complex128"]


def _array(draw: st.DrawFn, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Small numbers of ``dtype``, with an occasional special float (NaN, inf, 1e300)."""
    values = np.array(
        draw(
            st.lists(st.integers(-5, 5), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
        ),
        dtype=np.float64,
    ).reshape(shape)
    if values.size and dtype.startswith("float") and draw(st.booleans()):
        index = tuple(draw(st.integers(0, s - 1)) for s in shape)
        values[index] = draw(st.sampled_from(SPECIAL))
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "object":
            return values.astype(object)
        return values.astype(dtype)


@st.composite
def episode_fields(draw: st.DrawFn, n: int, m: int) -> dict[str, object]:
    """One episode's keyword fields, possibly broken in one way (the key ``broken`` says which)."""
    steps = draw(st.integers(0, 4))
    broken = draw(
        st.sampled_from(
            ["none", "none", "none", "dtype", "rows", "columns", "ndim", "times", "rewards"]
        )
    )
    dtypes = dict.fromkeys(FIELDS, "float64")
    if broken == "dtype":
        dtypes[draw(st.sampled_from(FIELDS))] = draw(st.sampled_from(DTYPES))
    rows = {"states": steps + 1, "actions": steps}
    cols = {"states": n, "actions": m}
    if broken == "rows":
        rows[draw(st.sampled_from(["states", "actions"]))] += draw(st.sampled_from([-1, 1, 2]))
    if broken == "columns":
        cols[draw(st.sampled_from(["states", "actions"]))] += draw(st.sampled_from([-1, 1]))
    # steps == 0 is broken too, whatever ``broken`` says: an episode needs a transition
    out: dict[str, object] = {"broken": broken, "steps": steps}
    for field in ("states", "actions"):
        shape = (max(rows[field], 0), max(cols[field], 0))
        out[field] = _array(draw, shape, dtypes[field])
    if broken == "ndim":
        field = draw(st.sampled_from(["states", "actions"]))
        out[field] = np.asarray(out[field]).reshape(-1)
    out["rewards"] = (
        _array(draw, (steps + (broken == "rewards"),), dtypes["rewards"])
        if draw(st.booleans()) or dtypes["rewards"] != "float64" or broken == "rewards"
        else None
    )
    if draw(st.booleans()) and broken != "times" and dtypes["times"] == "float64":
        out["times"] = None
    else:
        times = np.cumsum(np.abs(_array(draw, (steps + 1,), "float64")) + 0.5)
        if dtypes["times"] != "float64":
            with np.errstate(invalid="ignore", over="ignore"):
                times = times.astype(dtypes["times"])
        if broken == "times":
            how = draw(st.sampled_from(["duplicate", "reverse", "special", "length"]))
            if how == "duplicate" and times.size >= 2:
                times[1] = times[0]
            elif how == "reverse" and times.size >= 2:
                times = times[::-1].copy()
            elif how == "special":  # non-finite: a huge finite time can still be increasing
                non_finite = st.sampled_from([np.nan, np.inf, -np.inf])
                times[draw(st.integers(0, times.size - 1))] = draw(non_finite)
            else:
                times = np.append(times, times[-1] + 1.0)
        out["times"] = times
    return out


NAMES = st.one_of(
    st.none(),
    st.lists(st.text(alphabet="abxyz_ ", max_size=3), max_size=3),
    st.lists(st.integers(0, 2), min_size=1, max_size=2),
    st.text(max_size=3),
)
DTS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.05, 1, 0, -1, 1e308, True, "0.1"]),
)
ANGLE_DIMS = st.one_of(
    st.just(()), st.lists(st.integers(-2, 4), max_size=3), st.sampled_from([0, "0", [0.0]])
)


# --- helpers -------------------------------------------------------------------------------------
def _names_ok(names: object, count: int) -> bool:
    return (
        isinstance(names, list)
        and len(names) == count
        and all(isinstance(c, str) and c.strip() and c == c.strip() for c in names)
        and len(set(names)) == len(names)
    )


def _assert_clear_error(error: BaseException, words: list[str]) -> None:
    """A ValueError/TypeError whose message names at least one of ``words``."""
    assert isinstance(error, ValueError | TypeError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert any(word in message for word in words), f"{message!r} names none of {words}"


def _round_trips(dataset: TrajectoryDataset) -> None:
    """save/load and to_csv/from_csv give the dataset back; a second save adds nothing."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "store"
        dataset.save(target)
        assert TrajectoryDataset.load(target) == dataset
        before = sorted(os.listdir(target / "episodes"))
        dataset.save(target)  # idempotent: the same dataset is already there
        assert sorted(os.listdir(target / "episodes")) == before
        clash = {"episode", "t", "reward"} & {*dataset.state_names, *dataset.action_names}
        if not clash:
            csv_path = Path(folder) / "data.csv"
            dataset.to_csv(csv_path)
            assert TrajectoryDataset.from_csv(csv_path) == dataset


def _non_finite(fields: dict[str, object]) -> list[str]:
    """The fields of an episode holding a NaN or an infinity (any field may draw one)."""
    out = []
    for name in FIELDS:
        try:
            if fields[name] is not None and not np.isfinite(np.asarray(fields[name])).all():
                out.append(name)
        except TypeError:  # object, bool or complex: a broken dtype, named as such
            pass
    return out


def _is_broken(fields: dict[str, object]) -> bool:
    """Whether the library must refuse this episode: broken on purpose, no transition, or a
    non-finite value drawn into one of its fields."""
    return fields["broken"] != "none" or fields["steps"] == 0 or bool(_non_finite(fields))


def _expected_words(fields: dict[str, object], index: int | None) -> list[str]:
    broken = fields["broken"]
    words = {
        "dtype": list(FIELDS),
        "rows": ["states", "actions"],
        "columns": ["states", "actions"],
        "ndim": ["states", "actions"],
        "times": ["times"],
        "rewards": ["rewards"],
        "none": list(FIELDS),
    }[broken]
    if fields["steps"] == 0:  # the error may name the missing transition instead
        words = [*words, "states", "actions"]
    words = [*words, *_non_finite(fields)]  # special values drawn into any field break it too
    if index is not None:
        words = [f"episode {index}: {w}" for w in words] + [f"{w} has" for w in words]
    return [*words, "dt", "state_names", "action_names", "angle_dims"]


# --- properties ----------------------------------------------------------------------------------
@SETTINGS
@example(  # dt * arange(T+1) overflows: the error names dt (it used to say "times has inf")
    data=None,
    n=1,
    m=1,
    count=1,
    layout="huge dt",
    state_names=None,
    action_names=None,
    dt=1e308,
    angle_dims=(),
)
@given(
    data=st.data(),
    n=st.integers(0, 3),
    m=st.integers(0, 2),
    count=st.integers(1, 3),
    layout=st.sampled_from(["single", "list"]),
    state_names=NAMES,
    action_names=NAMES,
    dt=DTS,
    angle_dims=ANGLE_DIMS,
)
def test_from_arrays_builds_a_valid_dataset_or_names_the_field(
    data, n, m, count, layout, state_names, action_names, dt, angle_dims
):
    if layout == "huge dt":
        with pytest.raises(ValueError, match=r"episode 0: dt=1e\+308 and t0=0.0 give times"):
            TrajectoryDataset.from_arrays(np.zeros((3, n)), np.zeros((2, m)), dt=dt)
        return
    count = 1 if layout == "single" else count
    episodes = [data.draw(episode_fields(n, m)) for _ in range(count)]
    if layout == "single":
        kwargs = {f: episodes[0][f] for f in FIELDS}
    else:
        kwargs = {f: [e[f] for e in episodes] for f in FIELDS}
        for f in ("rewards", "times"):  # a list of None is not a field: all or none
            if any(v is None for v in kwargs[f]):
                kwargs[f] = None
                for e in episodes:  # left out: what was wrong with the field no longer is
                    e[f] = None
                    e["broken"] = "none" if e["broken"] == f else e["broken"]
        if data.draw(st.booleans()):  # one field with another number of episodes
            field = data.draw(st.sampled_from(["actions", "rewards", "times"]))
            if kwargs[field] is not None:
                kwargs[field] = kwargs[field][:-1]
    try:
        dataset = TrajectoryDataset.from_arrays(
            **kwargs,
            dt=dt,
            state_names=state_names,
            action_names=action_names,
            angle_dims=angle_dims,
        )
    except Exception as error:  # the property is about the type
        broken = [(i, e) for i, e in enumerate(episodes) if _is_broken(e)]
        index, fields = broken[0] if broken else (None, episodes[0])
        words = _expected_words(fields, index if layout == "list" else None)
        _assert_clear_error(error, [*words, "episodes", "episode 0", "per episode"])
        return
    # built: every input was valid, and the dataset holds exactly the given numbers
    assert len(dataset) == count
    assert all(e["broken"] in ("none", "dtype", "columns") for e in episodes)  # columns: if unnamed
    for fields in episodes:
        assert all(
            np.asarray(fields[f]).dtype.kind in "iuf" for f in FIELDS if fields[f] is not None
        )
    for episode, fields in zip(dataset, episodes, strict=True):
        np.testing.assert_array_equal(episode.states, np.asarray(fields["states"], np.float64))
        np.testing.assert_array_equal(episode.actions, np.asarray(fields["actions"], np.float64))
        assert np.all(np.isfinite(episode.states)) and np.all(np.diff(episode.times) > 0)
        assert episode.num_steps >= 1
    if state_names is not None:
        assert _names_ok(state_names, dataset.state_dim)
    _round_trips(dataset)


# --- CSV -----------------------------------------------------------------------------------------
CELLS = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e300", "1e999", "abc", "0x10", "1_0", "--1"]),
    st.text(max_size=3),
)
COLUMNS = st.sampled_from(["episode", "t", "x", "y", "u", "reward", "", "x ", "z"])


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """A CSV file: maybe a metadata line, a header, rows; mostly near-valid, sometimes junk."""
    kind = draw(st.sampled_from(["table", "table", "table", "junk", "empty", "header"]))
    if kind == "junk":
        return draw(st.text(max_size=60))
    if kind == "empty":
        return draw(st.sampled_from(["", "\n", "# a comment\n", "\n\n"]))
    meta = ""
    if draw(st.booleans()):
        spec = draw(
            st.one_of(
                st.just({"state_names": ["x", "y"], "action_names": ["u"], "dt": 0.1}),
                st.fixed_dictionaries(
                    {"state_names": NAMES, "action_names": NAMES},
                    optional={"dt": DTS, "angle_dims": ANGLE_DIMS},
                ),
                st.sampled_from(["[1, 2]", "{broken", "null"]),
            )
        )
        text = spec if isinstance(spec, str) else json.dumps({"version": 1, **spec})
        meta = f"# hybridgym.TrajectoryDataset {text}\n"
    if draw(st.booleans()):
        header = ["episode", "t", "x", "y", "u", "reward"]
    else:
        header = draw(st.lists(COLUMNS, min_size=1, max_size=7))
    if kind == "header":
        return meta + ",".join(header) + "\n"
    lines = []
    episodes = draw(st.lists(st.integers(0, 2), min_size=1, max_size=8))
    times = sorted(
        draw(st.lists(st.integers(0, 9), min_size=len(episodes), max_size=len(episodes)))
    )
    if draw(st.booleans()):
        times = times[::-1]
    for episode, t in zip(episodes, times, strict=True):
        row = []
        for column in header:
            if column == "episode":
                row.append(str(episode))
            elif column == "t":
                row.append(str(t))
            else:
                row.append(draw(st.integers(-3, 3).map(str)))
        if draw(st.integers(0, 5)) == 0 and row:  # one odd cell
            row[draw(st.integers(0, len(row) - 1))] = draw(CELLS)
        if draw(st.integers(0, 9)) == 0:  # a row of another width
            row = row[:-1] if draw(st.booleans()) else [*row, "1"]
        lines.append(",".join(row))
    return meta + ",".join(header) + "\n" + "\n".join(lines) + "\n"


@SETTINGS
@given(
    text=csv_texts(),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1"]),
    columns=st.sampled_from([None, (["x", "y"], ["u"]), (["x"], []), (["x", "q"], ["u"])]),
    episode_column=st.sampled_from(["episode", None, "ep"]),
    time_column=st.sampled_from(["t", None]),
    reward_column=st.sampled_from(["reward", None]),
    dt=st.sampled_from([None, 0.1, 0.0, float("nan")]),
)
def test_from_csv_reads_a_valid_dataset_or_names_the_problem(
    text, encoding, columns, episode_column, time_column, reward_column, dt
):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        try:
            path.write_bytes(text.encode(encoding))
        except UnicodeEncodeError:
            path.write_bytes(text.encode("utf-8"))
        state_columns, action_columns = columns or (None, None)
        try:
            dataset = TrajectoryDataset.from_csv(
                path,
                state_columns=state_columns,
                action_columns=action_columns,
                episode_column=episode_column,
                time_column=time_column,
                reward_column=reward_column,
                dt=dt,
            )
        except Exception as error:  # the property is about the type
            words = [str(path), "episode", "state_names", "action_names", "dt", "angle_dims"]
            _assert_clear_error(error, words)
            return
        assert len(dataset) >= 0
        for episode in dataset:
            assert np.all(np.isfinite(episode.states)) and np.all(np.diff(episode.times) > 0)
        _round_trips(dataset)


# --- Minari --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _minari_folder():
    with tempfile.TemporaryDirectory() as folder:
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = folder
        try:
            yield folder
        finally:
            if old is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


_minari_count = iter(range(10**9))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # Minari's advice on metadata left out
@SETTINGS
@given(
    data=st.data(),
    n=st.integers(1, 2),
    m=st.integers(1, 2),
    count=st.integers(1, 2),
    special=st.sampled_from([None, np.nan, np.inf, 1e300]),
    with_times=st.booleans(),
    overrides=st.fixed_dictionaries(
        {},
        optional={"state_names": NAMES, "action_names": NAMES, "dt": DTS, "angle_dims": ANGLE_DIMS},
    ),
)
def test_from_minari_reads_back_or_names_the_problem(
    data, n, m, count, special, with_times, overrides
):
    """Buffers written straight through Minari (so NaN/inf reach from_minari) read back."""
    minari = pytest.importorskip("minari")
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    buffers, expected = [], []
    for index in range(count):
        steps = data.draw(st.integers(1, 3))
        states = _array(data.draw, (steps + 1, n), "float64")
        actions = _array(data.draw, (steps, m), "float64")
        if special is not None and index == count - 1:
            states[-1, 0] = special
        rewards = _array(data.draw, (steps,), "float64")
        times = 0.1 * np.arange(steps + 1)
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=states,
                actions=actions,
                rewards=rewards.tolist(),
                terminations=[False] * steps,
                truncations=[False] * (steps - 1) + [True],
                infos={"time": times} if with_times else {},
            )
        )
        expected.append((states, actions, rewards, times))
    box = {"low": -np.inf, "high": np.inf, "dtype": np.float64}
    with _minari_folder():
        written = minari.create_dataset_from_buffers(
            f"hybridgym/fuzz-v{next(_minari_count)}",
            buffers,
            observation_space=spaces.Box(shape=(n,), **box),
            action_space=spaces.Box(shape=(m,), **box),
        )
        try:
            dataset = TrajectoryDataset.from_minari(written, **overrides)
        except Exception as error:  # the property is about the type
            words = ["Minari id", "state_names", "action_names", "dt", "angle_dims", "episodes"]
            _assert_clear_error(error, words)
            return
    assert special is None or special == 1e300
    assert with_times or "dt" in overrides
    for episode, (states, actions, rewards, times) in zip(dataset, expected, strict=True):
        np.testing.assert_array_equal(episode.states, states)
        np.testing.assert_array_equal(episode.actions, actions)
        np.testing.assert_array_equal(episode.rewards, rewards)
        if with_times:
            np.testing.assert_array_equal(episode.times, times)
    _round_trips(dataset)


# --- saving never leaves a partial store ---------------------------------------------------------
@SETTINGS
@given(
    names=st.sampled_from([(["x"], ["u"]), (["x", "y"], ["u"]), (["y"], [])]),
    steps=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    other_steps=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    other_names=st.sampled_from([(["x"], ["u"]), (["x", "y"], ["u"])]),
)
def test_save_over_another_store_changes_nothing(names, steps, other_steps, other_names):
    """Saving onto a directory that holds another dataset raises and leaves its files as they
    were; saving onto the same dataset's prefix completes it."""

    def make(spec: tuple[list[str], list[str]], lengths: list[int]) -> TrajectoryDataset:
        dataset = TrajectoryDataset(state_names=spec[0], action_names=spec[1], dt=0.1)
        for k, length in enumerate(lengths):
            dataset.append(
                np.full((length + 1, len(spec[0])), float(k)), np.ones((length, len(spec[1])))
            )
        return dataset

    first, second = make(other_names, other_steps), make(names, steps)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "store"
        first.save(target)

        def snapshot() -> dict[str, bytes]:
            return {
                str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()
            }

        before = snapshot()
        try:
            second.save(target)
        except FileExistsError as error:
            assert str(target) in str(error)
            assert snapshot() == before
            return
        assert second.episodes[: len(first)] == first.episodes and second._spec() == first._spec()
        assert TrajectoryDataset.load(target) == second
        assert not [p for p in target.rglob("*.tmp")]
