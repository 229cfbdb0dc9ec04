"""The one atomic file write of mmfuse.

:func:`atomic_write` writes into a temporary file in the target's folder, flushes and
fsyncs it, gives it the mode a plain ``open(path, "w")`` would (``0o666`` less the
umask: ``tempfile.mkstemp`` alone makes ``0o600`` files), renames it over the target
and fsyncs the folder, so a reader sees the old file or the new one, never half of
one, and a crash at any point leaves no torn file. Every writer of results,
checkpoints, caches and downloads goes through it. A full device (``ENOSPC``, or a
quota's ``EDQUOT``) becomes a :class:`~mmfuse.errors.DiskFullError` naming the folder,
with the temporary file removed (:func:`is_disk_full` tells such errors apart).
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from mmfuse.errors import DiskFullError

__all__ = ["atomic_write", "file_mode", "is_disk_full"]

T = TypeVar("T")
_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_FULL = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says that a device is full."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    data: str | bytes | Callable[[IO[bytes]], T],
    *,
    encoding: str = "utf-8",
    suffix: str = ".tmp",
) -> T | None:
    """Replace ``path`` with ``data`` atomically (see the module docstring).

    Args:
        path: the file to write; its folder is created if needed.
        data: the whole content (``str`` is encoded with ``encoding``), or a function
            that writes into the open binary file; its return value is returned, and
            if it raises, the target is left as it was.
        suffix: of the temporary file (``.part`` for downloads).

    Returns:
        What ``data`` returned when it is a function, else ``None``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    result: T | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode(encoding))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                result = data(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(target.parent) from exc
        raise
    _fsync_dir(target.parent)
    return result
