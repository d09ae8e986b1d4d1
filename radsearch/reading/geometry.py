"""Slice geometry: per-frame positions along the slice normal, and the imaging plane."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from radsearch.reading.values import as_int


def functional_group(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """First item of ``keyword`` for ``frame`` from the per-frame, else the shared, groups."""
    for groups, index in (
        (ds.get("PerFrameFunctionalGroupsSequence"), frame),
        (ds.get("SharedFunctionalGroupsSequence"), 0),
    ):
        if groups is not None and index < len(groups):
            seq = groups[index].get(keyword)
            if seq:
                return seq[0]
    return None


def _vector(value: object, n: int) -> np.ndarray | None:
    try:
        vec = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


def _normal(orientation: object) -> np.ndarray | None:
    iop = _vector(orientation, 6)
    if iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else None


def _orientation(ds: Dataset, frame: int) -> object:
    item = functional_group(ds, frame, "PlaneOrientationSequence")
    return (item if item is not None else ds).get("ImageOrientationPatient")


def slice_positions(ds: Dataset, frames: Sequence[int]) -> list[float | None]:
    """dot(ImagePositionPatient, row x column direction) for each frame, None where unknown.

    Enhanced multi-frame objects carry per-frame positions in their functional groups; a classic
    object's top-level position describes a single frame only.
    """
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    n_frames = as_int(ds.get("NumberOfFrames")) or 1
    positions: list[float | None] = []
    for frame in frames:
        if enhanced:
            item = functional_group(ds, frame, "PlanePositionSequence")
            ipp = item.get("ImagePositionPatient") if item is not None else None
        else:
            ipp = ds.get("ImagePositionPatient") if n_frames == 1 else None
        position = _vector(ipp, 3) if ipp is not None else None
        normal = _normal(_orientation(ds, frame))
        value = float(position @ normal) if position is not None and normal is not None else None
        positions.append(value if value is None or math.isfinite(value) else None)
    return positions


def imaging_plane(ds: Dataset) -> str | None:
    """'axial', 'coronal' or 'sagittal' from the slice normal's dominant patient axis."""
    normal = _normal(_orientation(ds, 0))
    if normal is None:
        return None
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
