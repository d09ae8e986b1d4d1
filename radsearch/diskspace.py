"""Free space: recognise a full disk, name it in one line, and check room before writing files that
are mapped into memory (a write to such a page past a full disk kills the process with SIGBUS)."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from radsearch.errors import RadsearchError

_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(error: BaseException) -> bool:
    """True for the ways a full disk (or an exhausted quota) shows: OSError ENOSPC/EDQUOT,
    SQLite's "database or disk is full", a C++ library's message quoting ENOSPC."""
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    text = str(error)
    if isinstance(error, sqlite3.Error):
        return "disk is full" in text or getattr(error, "sqlite_errorcode", None) == 13
    return isinstance(error, RuntimeError) and ("No space left" in text or "quota" in text.lower())


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    current = Path(os.path.abspath(path))
    while not current.exists():
        current = current.parent
    while not os.path.ismount(current):
        current = current.parent
    return current


def free_bytes(path: Path) -> int:
    current = Path(os.path.abspath(path))
    while not current.exists():
        current = current.parent
    return shutil.disk_usage(current).free


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def disk_full_error(path: Path) -> RadsearchError:
    """One line naming the disk that is full and what is kept."""
    return RadsearchError(
        f"no space left on the disk holding {path} (mounted at {mount_point(path)}, "
        f"{human(free_bytes(path))} free): the index keeps its last complete state; free some "
        "space and run again")


@contextmanager
def disk_full_named(path: Path) -> Iterator[None]:
    """Turn any sign of a full disk raised inside into :func:`disk_full_error` for ``path``."""
    try:
        yield
    except Exception as error:
        if is_disk_full(error):
            raise disk_full_error(path) from None
        raise


def sparse_bytes(directory: Path) -> int:
    """Bytes that files under ``directory`` declare but have not allocated (holes of sparse files,
    which a write through a memory map fills)."""
    holes = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            holes += max(0, info.st_size - info.st_blocks * 512)
    return holes


def require_free(path: Path, needed: int, what: str) -> None:
    """Refuse, in one line, to go on when the disk holding ``path`` has less than ``needed`` bytes."""
    free = free_bytes(path)
    if free < needed:
        raise RadsearchError(
            f"not enough space on the disk holding {path} (mounted at {mount_point(path)}): "
            f"{human(free)} free, {what} needs about {human(needed)}; free some space and run again")
