"""Pictures of indexed images for people: one frame of a file, as the model was shown it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.reading import ReadError, SkipFile, read_file

PREVIEW_SIZE = 256


def image_preview(path: str | Path, frame: int = 0, *, size: int = PREVIEW_SIZE) -> np.ndarray:
    """uint8 ``(size, size)`` gray, or ``(size, size, 3)`` for colour: frame ``frame`` of an image
    file, windowed and letter-boxed as for the model. One-line ``RadsearchError`` if unreadable."""
    try:
        result = read_file(Path(path), image_size=size, salt="preview")
    except (ReadError, SkipFile) as error:
        raise RadsearchError(f"{path}: {error}") from None
    if not result.frames:
        raise RadsearchError(f"{path}: holds no image")
    chosen = next((f for f in result.frames if f.frame_index == frame), result.frames[0])
    pixels = chosen.pixels
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)) if pixels.ndim == 3 else pixels


def split_image_ref(ref: str) -> tuple[str, int]:
    """``radsearch show``'s image entries: ``path`` or, for multi-frame files, ``path#frame``."""
    path, hash_sign, frame = ref.rpartition("#")
    if hash_sign and frame.isdigit() and not Path(ref).exists():
        return path, int(frame)
    return ref, 0
