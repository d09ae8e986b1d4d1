"""Embed a query image file the way the indexer embeds a series: frames encoded, then pooled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsearch.encoders import Encoder
from radsearch.errors import RadsearchError
from radsearch.reading import CtWindow, ReadError, ReadResult, SkipFile, read_file


def embed_file(
    path: Path, encoder: Encoder, salt: str, *, ct_windows: Sequence[CtWindow] = ()
) -> tuple[np.ndarray, ReadResult]:
    """One unit vector for an image file (its frames pooled like a series) and what was read.

    ``ct_windows``: the index's CT rendering (``Store.ct_windows``), so that a CT query is seen
    as the index's CT images were.
    """
    try:
        result = read_file(path, image_size=encoder.image_size, salt=salt, ct_windows=ct_windows)
    except (ReadError, SkipFile) as error:
        raise RadsearchError(f"{path}: {error}") from None
    if not result.frames:
        raise RadsearchError(f"{path}: holds no image")
    vectors = encoder.encode_images(np.stack([frame.pixels for frame in result.frames]))
    positions = [frame.slice_position for frame in result.frames]
    known = None if any(p is None for p in positions) else np.asarray(positions, dtype=np.float64)
    return encoder.pool_slices(vectors, known), result
