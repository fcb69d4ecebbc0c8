"""Episode.terminated: recorded by collect, kept by the npz store, CSV and Minari; data written
before it existed still reads (as False)."""

import io
import zipfile

import numpy as np
import pytest

from hybridgym.envs import GymTask
from hybridgym.models.data import Episode, TrajectoryDataset


def _episode(rng, steps, terminated):
    return Episode.from_arrays(
        rng.normal(size=(steps + 1, 2)),
        rng.normal(size=(steps, 1)),
        rng.normal(size=steps),
        dt=0.1,
        terminated=terminated,
    )


def _dataset(rng):
    return TrajectoryDataset(
        [_episode(rng, 4, True), _episode(rng, 3, False), _episode(rng, 5, True)],
        state_names=("a", "b"),
        action_names=("u",),
        dt=0.1,
    )


def test_the_flag_defaults_to_false_is_checked_and_counts_in_equality(rng):
    plain = _episode(rng, 3, False)
    assert plain.terminated is False and "terminated" not in repr(plain)
    ended = Episode(plain.states, plain.actions, plain.rewards, plain.times, True)
    assert ended.terminated is True and "terminated=True" in repr(ended)
    assert ended != plain
    with pytest.raises(TypeError, match="terminated must be True or False"):
        Episode(plain.states, plain.actions, plain.rewards, plain.times, "yes")
    assert Episode(plain.states, plain.actions, None, plain.times, np.bool_(True)).terminated


def test_collect_records_termination_not_truncation():
    task = GymTask("hybridgym_test/Cart-v0")
    data = TrajectoryDataset.collect(task.make_real_env(), task, episodes=30, seed=0)
    ended = [ep for ep in data.episodes if ep.terminated]
    cut = [ep for ep in data.episodes if not ep.terminated]
    assert ended and cut  # random actions push some carts off the track within 50 steps
    assert all(abs(ep.states[-1, 0]) > 1 for ep in ended)
    assert all(ep.num_steps == 50 and abs(ep.states[-1, 0]) <= 1 for ep in cut)
    assert all(ep.rewards[-1] == 0.0 for ep in ended)
    # a step budget that cuts an episode does not make it terminated
    short = TrajectoryDataset.collect(task.make_real_env(), task, steps=3, seed=0)
    assert not short[0].terminated


def test_the_store_keeps_the_flag_and_reads_old_files_as_false(rng, tmp_path):
    data = _dataset(rng)
    data.save(tmp_path / "store")
    loaded = TrajectoryDataset.load(tmp_path / "store")
    assert loaded == data
    assert [ep.terminated for ep in loaded.episodes] == [True, False, True]
    with zipfile.ZipFile(tmp_path / "store" / "episodes" / "episode_000001.npz") as archive:
        assert "terminated.npy" not in archive.namelist()  # False: written as before
    # a file written before the flag existed: states, actions, times, rewards only
    old = data[0]
    buffer = io.BytesIO()
    np.savez(buffer, states=old.states, actions=old.actions, times=old.times, rewards=old.rewards)
    (tmp_path / "store" / "episodes" / "episode_000000.npz").write_bytes(buffer.getvalue())
    assert TrajectoryDataset.load(tmp_path / "store")[0].terminated is False
    # appending arrays with the flag
    loaded.append(old.states, old.actions, old.rewards, old.times, terminated=True)
    assert TrajectoryDataset.load(tmp_path / "store")[-1].terminated is True


def test_csv_keeps_the_flag_in_the_last_row_and_reads_old_files(rng, tmp_path):
    data = _dataset(rng)
    data.to_csv(tmp_path / "d.csv")
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[1].endswith(",reward,terminated")
    assert lines[2 + 4].endswith(",1") and lines[2 + 4 + 1 + 3].endswith(",0")
    assert lines[2].endswith(",")  # not an episode's last row: empty
    back = TrajectoryDataset.from_csv(tmp_path / "d.csv")
    assert back == data
    # an old file: no terminated column
    old = "\n".join(",".join(line.split(",")[:-1]) for line in lines[1:]) + "\n"
    (tmp_path / "old.csv").write_text(lines[0] + "\n" + old)
    before = TrajectoryDataset.from_csv(tmp_path / "old.csv")
    assert [ep.terminated for ep in before.episodes] == [False, False, False]
    # true/false words work; a flag before an episode's last row is refused, naming the line
    words = lines[:2] + [
        line[: -len(",1")] + ",true" if line.endswith(",1") else line for line in lines[2:]
    ]
    (tmp_path / "words.csv").write_text("\n".join(words) + "\n")
    assert TrajectoryDataset.from_csv(tmp_path / "words.csv") == data
    early = [*lines[:2], lines[2] + "1", *lines[3:]]
    (tmp_path / "early.csv").write_text("\n".join(early) + "\n")
    with pytest.raises(ValueError, match=r"early.csv line 3, column 'terminated'.*only an"):
        TrajectoryDataset.from_csv(tmp_path / "early.csv")
    bad = [*lines[:6], lines[6][:-1] + "maybe", *lines[7:]]
    (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv line 7, column 'terminated'.*'maybe'"):
        TrajectoryDataset.from_csv(tmp_path / "bad.csv")


def test_minari_keeps_the_flag(rng, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    data = _dataset(rng)
    data.to_minari("hybridgym/terminated-v0")
    back = TrajectoryDataset.from_minari("hybridgym/terminated-v0")
    assert [ep.terminated for ep in back.episodes] == [True, False, True]
