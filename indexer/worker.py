"""The read stage, run in worker processes: one file in, a decoded result or a reason out.

Nothing here imports torch: workers only hash, decode and prepare pixels, so they start fast and
overlap with the embedding done in the main process.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from radsearch.reading import CtWindow, ReadError, ReadResult, SkipFile, read_file
from radsearch.reading.phi import read_identifiers
from radsearch.reading.types import special_file_reason

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadTask:
    path: str
    previous_sha256: str | None  # the content hash stored for this path, if any
    image_size: int
    salt: str
    ct_windows: tuple[CtWindow, ...] = ()  # the index's CT rendering (empty: grayscale)
    keep_phi: bool = False  # also read the identifiers `--keep-phi` stores (reading.phi)
    # A local copy to read instead of ``path``, deleted once read: an instance fetched from a PACS,
    # whose ``path`` is its key in the catalog (indexer.dicomweb)
    read_path: str | None = None


@dataclass
class ReadOutcome:
    path: str
    status: str  # read | unchanged | skipped | failed
    sha256: str | None = None
    result: ReadResult | None = None
    reason: str | None = None
    identifiers: dict[str, str] | None = None  # in clear: with ReadTask.keep_phi only


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCH_SECONDS = 1.0


def start_worker(parent_pid: int) -> None:
    """Initializer of a decoding process: it dies with the run that started it, even one killed
    with SIGKILL (the kernel's parent-death signal on Linux, and a watchdog everywhere), and leaves
    Ctrl-C to that run, which stops the workers itself (no traceback from each of them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still ends this process
    if os.getppid() != parent_pid:  # the run died before this process was set up
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="radsearch-parent-watchdog").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_SECONDS)
    os._exit(1)


def file_sha256(path: str) -> str:
    """The content hash of a regular file; raises OSError for anything else (a named pipe is
    opened without blocking and refused, never read)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as handle:
        special = special_file_reason(os.fstat(fd).st_mode)
        if special is not None:
            raise OSError(0, special)
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_one(task: ReadTask) -> ReadOutcome:
    """Hash the file; when its content is new, decode it. Never raises for a bad file."""
    if task.read_path is None:
        return _read(task, task.path)
    try:
        return _read(task, task.read_path)
    finally:
        Path(task.read_path).unlink(missing_ok=True)


def _read(task: ReadTask, source: str) -> ReadOutcome:
    try:
        sha256 = file_sha256(source)
    except PermissionError:
        return ReadOutcome(task.path, "failed", reason="unreadable: permission denied")
    except OSError as error:
        return ReadOutcome(task.path, "failed", reason=f"unreadable: {error.strerror or error}")
    if sha256 == task.previous_sha256:
        return ReadOutcome(task.path, "unchanged", sha256=sha256)
    try:
        result = read_file(Path(source), image_size=task.image_size, salt=task.salt,
                           ct_windows=task.ct_windows)
    except SkipFile as skip:
        return ReadOutcome(task.path, "skipped", sha256=sha256, reason=str(skip))
    except ReadError as error:
        return ReadOutcome(task.path, "failed", sha256=sha256, reason=str(error))
    except MemoryError:
        return ReadOutcome(task.path, "failed", sha256=sha256, reason="out of memory while decoding")
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # noqa: BLE001 - a decoder bug must not stop the run, not
        # even a Rust panic (pyo3's PanicException derives from BaseException): this file failed
        text = " ".join(str(error).split())[:200]
        reason = f"unexpected {type(error).__name__}" + (f": {text}" if text else "")
        return ReadOutcome(task.path, "failed", sha256=sha256, reason=reason)
    identifiers = read_identifiers(source) if task.keep_phi and result.kind == "dicom" else None
    return ReadOutcome(task.path, "read", sha256=sha256, result=result, identifiers=identifiers)
