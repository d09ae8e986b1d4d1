"""Result and error types of the study-file reader."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

FileKind = Literal["dicom", "dicomdir", "nifti", "png", "jpeg"]

# Every ReadResult.metadata carries exactly these keys (value or None).
METADATA_KEYS: tuple[str, ...] = (
    "modality",
    "body_part",
    "view",
    "study_date",
    "study_description",
    "series_description",
    "manufacturer",
    "rows",
    "columns",
    "n_frames",
    "transfer_syntax",
    "photometric",
    "sop_class",
    "series_number",
)


class ReadError(Exception):
    """Bad input. ``str(error)`` is one line giving the reason; the caller adds the path."""


class SkipFile(Exception):
    """A valid file that holds no image we embed (RT structure set, DICOMDIR, ...)."""


@dataclass
class ImageFrame:
    frame_index: int
    pixels: np.ndarray  # uint8 model-ready: (S, S) gray, or (3, S, S) for CT in windows
    slice_position: float | None  # dot(IPP, row x column direction), mm
    instance_number: int | None  # the file's InstanceNumber (shared by all its frames)

    def __repr__(self) -> str:  # keep reprs short: no pixel dump
        return (
            f"ImageFrame(frame_index={self.frame_index}, pixels=<{self.pixels.dtype} "
            f"{self.pixels.shape}>, slice_position={self.slice_position}, "
            f"instance_number={self.instance_number})"
        )


@dataclass
class ReadResult:
    path: str
    kind: FileKind
    study_uid_hash: str | None
    series_uid_hash: str | None
    instance_uid_hash: str | None
    patient_hash: str | None
    metadata: dict
    frames: list[ImageFrame] = field(default_factory=list)
    report_text: str | None = None
    warnings: list[str] = field(default_factory=list)


def empty_metadata() -> dict:
    return dict.fromkeys(METADATA_KEYS)


def short_reason(error: BaseException, limit: int = 200) -> str:
    """A library exception's message on one line (its type when empty), at most ``limit`` chars."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str, limit: int = 400) -> str:
    """``text`` on one line of printable characters, at most ``limit`` long: reasons quote values
    from the file (a modality, a UID), and a damaged file's values may hold any byte."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SPECIAL_KINDS = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
                  (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def special_file_reason(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read (None for a regular file or a folder): opening a
    named pipe or a device would wait for a writer, or read without end."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "special file")
    return f"not a regular file ({kind})"


def os_reason(error: OSError) -> str:
    """One line for a file that cannot be opened or read."""
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not a file"
    return f"unreadable: {error.strerror or type(error).__name__}"
