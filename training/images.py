"""Manifest images read into model-ready uint8 squares through radsearch's own reader.

The reader is the one ``radsearch index`` uses, so training sees exactly what indexing will embed
(same resize, padding and DICOM rendering). As an image, a multi-frame file contributes its middle
frame; as a volume (``read_volume``), every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsearch.reading import CtWindow, ImageFrame, ReadError, SkipFile, read_file
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


def read_volume(
    path: Path, image_size: int, ct_windows: Sequence[CtWindow] = ()
) -> tuple[np.ndarray, np.ndarray | None]:
    """One series' slices, uint8 ``(n, S, S)`` (or ``(n, 3, S, S)`` for CT in ``ct_windows``),
    and their positions in mm along the slice normal (None unless every slice has one).

    ``path``: a volume file (NIfTI, multi-frame DICOM) or a folder of one series' DICOM files; the
    slices come in file order, the positions say where each lies. ManifestError naming the file if
    anything cannot be read.
    """
    files = sorted(p for p in Path(path).iterdir() if p.is_file()) if Path(path).is_dir() else [path]
    frames: list[ImageFrame] = []
    for file in files:
        try:
            frames += read_file(file, image_size=image_size, salt="train", ct_windows=ct_windows).frames
        except (ReadError, SkipFile) as e:
            raise ManifestError(f"{file}: {e}") from None
    if not frames:
        raise ManifestError(f"{path}: no image frames")
    positions = [frame.slice_position for frame in frames]
    known = None if None in positions else np.asarray(positions, dtype=np.float64)
    return np.stack([frame.pixels for frame in frames]), known
