"""Crash-safe file writes: readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't open)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder (``.NAME.RANDOM.tmp``, the folder is
    created if needed), which is flushed and fsynced, then renamed over ``path`` with
    ``os.replace``; a failure removes the temporary file and leaves ``path`` as it was.

    Raises:
        OSError: the folder or file could not be written (read-only, full disk, ...); the
            error keeps its class and errno and its message names ``path`` (a full disk
            alone reports no file name).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise type(err)(
            err.errno, f"cannot write {path}: {reason} (the file was left as it was)"
        ) from err
    fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --- one owner per directory ---------------------------------------------------------------------
#: the lock file's name inside a locked directory (hidden: a dataset store ignores it)
LOCK_NAME = ".lock"
_HELD: dict[tuple[int, str], DirectoryLock] = {}  # locks held, by (pid, directory): re-entrant


class DirectoryLock:
    """An exclusive OS lock on a directory (``DIR/.lock``, ``flock``): one process at a time
    owns a run directory, a comparison's output folder or a dataset store.

    The kernel releases the lock when its holder exits, however it ends (a SIGKILL included),
    so a lock file left behind is no obstacle and the pid written in it is only there to name
    the holder in the error; a pid that now belongs to another process blocks nothing. Within
    one process the lock is re-entrant (a store inside a run directory locked by the same
    process is not refused). Use as a context manager or with :meth:`acquire` / :meth:`release`.

    Raises (from :meth:`acquire`):
        FileExistsError: another live process holds the lock (the message names its pid).
        OSError: the lock file cannot be created (read-only folder, ...), naming it.
    """

    def __init__(self, directory: str | os.PathLike[str], what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._fd: int | None = None
        self._outer: DirectoryLock | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None or self._outer is not None

    def acquire(self) -> DirectoryLock:
        if self.held:
            self._depth += 1
            return self
        key = (os.getpid(), os.path.realpath(self.directory))  # a forked child holds nothing
        outer = _HELD.get(key)
        if outer is not None:  # this process owns it already
            self._outer, self._depth = outer, 1
            return self
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # the file may be replaced between open and lock: try again
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise type(err)(
                    err.errno, f"cannot create the lock {self.path}: {err.strerror or err}"
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f"process {holder}" if holder else "another process"
                raise FileExistsError(
                    f"{self.what} {self.directory} is in use by {by}; wait for it, stop it, or "
                    f"use another {self.what}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # a releasing holder removed the file we opened: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd, self._depth = fd, 1
            _HELD[key] = self
            return self
        raise FileExistsError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if not self.held:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        if self._outer is not None:
            self._outer = None
            return
        import fcntl

        fd, self._fd = self._fd, None
        _HELD.pop((os.getpid(), os.path.realpath(self.directory)), None)
        try:  # removed while still held: a process waiting on the old file retries
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def read_json_object(path: str | os.PathLike[str]) -> dict:
    """The JSON object in ``path``; a ``ValueError`` naming the file when it is empty, not
    JSON, not UTF-8 or not an object (``FileNotFoundError`` when it is missing)."""
    import json

    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        what = "is empty" if path.is_file() and path.stat().st_size == 0 else "is not readable JSON"
        raise ValueError(f"{path} {what} ({error}); restore it or start a new folder") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value
