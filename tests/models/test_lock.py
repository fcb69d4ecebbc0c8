"""DirectoryLock: one owner per directory, released by the kernel, never blocked by a stale
file or a reused pid; the dataset store and the comparison's output folder use it."""

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from hybridgym.agents.compare import CompareConfig, Comparison
from hybridgym.models import Episode, TrajectoryDataset
from hybridgym.models.files import LOCK_NAME, DirectoryLock

FORK = multiprocessing.get_context("fork")
HOLD = (
    "import sys, time\n"
    "from hybridgym.models.files import DirectoryLock\n"
    "lock = DirectoryLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def _holder(directory):
    """A separate process holding the lock on ``directory`` (until killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _stop(process):
    process.kill()
    process.wait()
    process.stdout.close()


def _contender(directory, owners, barrier, outcome):
    """Wait for the other contender, try the lock; while holding it, check that nobody else
    is recorded as an owner."""
    barrier.wait()
    try:
        lock = DirectoryLock(directory).acquire()
    except FileExistsError:
        outcome.put("refused")
        return
    mine = owners / str(os.getpid())
    mine.touch()
    time.sleep(0.005)
    alone = [p.name for p in owners.iterdir()] == [mine.name]
    mine.unlink()
    lock.release()
    outcome.put("alone" if alone else "together")


@pytest.mark.parametrize("stale", [False, True])
def test_two_processes_never_both_own_a_directory(tmp_path, stale):
    """The race harness: 200 times, two processes try to take one directory at the same
    instant (on a fresh directory, or one whose lock file names a process that is gone, as a
    SIGKILLed holder leaves it). At most one holds it at any moment; never none when it was
    free."""
    owners = tmp_path / "owners"
    owners.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid names no process now
    outcomes = []
    for trial in range(200):
        directory = tmp_path / f"run{trial}"
        if stale:
            directory.mkdir()
            (directory / LOCK_NAME).write_text(f"{finished.pid}\n")
        barrier, outcome = FORK.Barrier(2), FORK.Queue()
        pair = [
            FORK.Process(target=_contender, args=(directory, owners, barrier, outcome))
            for _ in range(2)
        ]
        for process in pair:
            process.start()
        for process in pair:
            process.join(30)
        outcomes.append(sorted(outcome.get(timeout=5) for _ in range(2)))
    assert all("together" not in pair for pair in outcomes), outcomes
    assert all("alone" in pair for pair in outcomes), outcomes  # a free directory is taken


def test_a_live_holder_is_refused_by_name_and_its_death_frees_the_directory(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(FileExistsError, match=f"in use by process {holder.pid}"):
            DirectoryLock(tmp_path).acquire()
    finally:
        _stop(holder)
    with DirectoryLock(tmp_path) as lock:  # the kernel released it with the process
        assert lock.held
    assert not (tmp_path / LOCK_NAME).exists()  # removed on release


def test_a_pid_reused_by_another_process_blocks_nothing(tmp_path):
    """A lock file naming a live process that does not hold the lock (a pid reused after a
    crash) is taken over."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{sleeper.pid}\n")
        with DirectoryLock(tmp_path):
            assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_lock_is_reentrant_in_a_process_but_not_inherited_by_a_child(tmp_path):
    outer = DirectoryLock(tmp_path).acquire()
    with DirectoryLock(tmp_path / "." / ""):  # the same directory, another spelling
        assert outer.held
    assert (tmp_path / LOCK_NAME).exists()  # the inner release kept the outer lock

    def child(outcome):
        try:
            DirectoryLock(tmp_path).acquire()
            outcome.put("taken")
        except FileExistsError:
            outcome.put("refused")

    outcome = FORK.Queue()
    process = FORK.Process(target=child, args=(outcome,))
    process.start()
    process.join(30)
    assert outcome.get(timeout=5) == "refused"
    outer.release()
    assert not outer.held and not (tmp_path / LOCK_NAME).exists()


def _dataset():
    episode = Episode.from_arrays([[0.0], [1.0]], [[0.5]], [1.0], dt=0.1)
    return TrajectoryDataset([episode], state_names=("x",), action_names=("u",), dt=0.1)


def test_a_dataset_store_in_use_is_refused_and_the_lock_file_is_not_data(tmp_path):
    store = tmp_path / "data"
    holder = _holder(store)
    try:
        with pytest.raises(FileExistsError, match=r"dataset store .* in use by process"):
            _dataset().save(store)
        assert sorted(p.name for p in store.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        _stop(holder)
    _dataset().save(store)  # the lock file left by the killed holder is not "other files"
    saved = TrajectoryDataset.load(store)
    saved.append(_dataset().episodes[0])
    assert len(TrajectoryDataset.load(store)) == 2
    assert not (store / LOCK_NAME).exists()


def test_a_comparison_output_folder_in_use_is_refused_before_any_trial(tmp_path):
    out = tmp_path / "out"
    comparison = Comparison(CompareConfig("pendulum", budget=50, seeds=1, methods=("loop",)), out)
    holder = _holder(out)
    try:
        with pytest.raises(
            FileExistsError, match=rf"output folder .* in use by process {holder.pid}"
        ):
            comparison.run()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        _stop(holder)
