"""The read stage, run in worker processes: one file in, a decoded result or a reason out.

Nothing here imports torch: workers only hash, decode and prepare pixels, so they start fast and
overlap with the embedding done in the main process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from radsearch.reading import ReadError, ReadResult, SkipFile, read_file

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadTask:
    path: str
    previous_sha256: str | None  # the content hash stored for this path, if any
    image_size: int
    salt: str


@dataclass
class ReadOutcome:
    path: str
    status: str  # read | unchanged | skipped | failed
    sha256: str | None = None
    result: ReadResult | None = None
    reason: str | None = None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_one(task: ReadTask) -> ReadOutcome:
    """Hash the file; when its content is new, decode it. Never raises for a bad file."""
    try:
        sha256 = file_sha256(task.path)
    except PermissionError:
        return ReadOutcome(task.path, "failed", reason="unreadable: permission denied")
    except OSError as error:
        return ReadOutcome(task.path, "failed", reason=f"unreadable: {error.strerror or error}")
    if sha256 == task.previous_sha256:
        return ReadOutcome(task.path, "unchanged", sha256=sha256)
    try:
        result = read_file(Path(task.path), image_size=task.image_size, salt=task.salt)
    except SkipFile as skip:
        return ReadOutcome(task.path, "skipped", sha256=sha256, reason=str(skip))
    except ReadError as error:
        return ReadOutcome(task.path, "failed", sha256=sha256, reason=str(error))
    except MemoryError:
        return ReadOutcome(task.path, "failed", sha256=sha256, reason="out of memory while decoding")
    except Exception as error:  # a decoder bug must not stop the run: report it as this file's failure
        text = " ".join(str(error).split())[:200]
        reason = f"unexpected {type(error).__name__}: {text}"
        return ReadOutcome(task.path, "failed", sha256=sha256, reason=reason)
    return ReadOutcome(task.path, "read", sha256=sha256, result=result)
