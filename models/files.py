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
