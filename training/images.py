"""Manifest images read into model-ready uint8 squares through radsearch's own reader.

The reader is the one ``radsearch index`` uses, so training sees exactly what indexing will embed
(same resize, padding and DICOM rendering). A multi-frame file contributes its middle frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsearch.reading import ReadError, SkipFile, read_file
from radsearch.training.manifest import ManifestError


def read_image(path: Path, image_size: int) -> np.ndarray:
    """One image as uint8 ``(image_size, image_size)``; ManifestError naming the file if unreadable."""
    try:
        frames = read_file(path, image_size=image_size, salt="train").frames
    except (ReadError, SkipFile) as e:
        raise ManifestError(f"{path}: {e}") from None
    if not frames:
        raise ManifestError(f"{path}: no image frames")
    return frames[len(frames) // 2].pixels


def read_images(paths: Sequence[Path], image_size: int) -> np.ndarray:
    """uint8 ``(N, image_size, image_size)``."""
    frames = np.zeros((len(paths), image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(paths):
        frames[i] = read_image(path, image_size)
    return frames
