"""NIfTI slice geometry: which voxel axis holds the slices, how a slice is shown, and where each
slice lies along the slice normal, in DICOM's patient coordinates (LPS), so that a NIfTI volume
and the DICOM series it was converted from show the same slices at the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# NIfTI's world coordinates are RAS+, DICOM's LPS+: the first two axes change sign.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_PLANES = ("sagittal", "coronal", "axial")  # by the slice normal's dominant LPS axis
# Radiological display, as DICOM series of these planes are stored: the screen's (across, down)
# directions in LPS. Axial: the patient's right on the viewer's left, anterior up; coronal: right
# on the left, superior up; sagittal: anterior on the left, superior up.
_SCREEN = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}
# A stack of slices has clearly fewer of them than pixels across a slice, or clearly thicker ones.
_FEW_SLICES = 0.5
_THICK_SLICES = 1.1


@dataclass(frozen=True)
class SliceLayout:
    """How the voxel axes of a 3D volume become a series of displayed slices."""

    slice_axis: int
    row_axis: int  # voxel axis running down the shown image
    column_axis: int  # voxel axis running across it
    flip_rows: bool
    flip_columns: bool
    plane: str | None  # axial | coronal | sagittal; None without a usable affine
    lps: np.ndarray | None  # 4x4 voxel -> LPS mm; None without a usable affine

    def image(self, volume: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of ``volume`` as shown: (rows, columns), a view, no copy."""
        # Basic indexing: a view (np.take would copy the whole volume for each slice).
        plane = volume[(slice(None),) * self.slice_axis + (index,)]
        if self.row_axis > self.column_axis:
            plane = plane.T
        return plane[:: -1 if self.flip_rows else 1, :: -1 if self.flip_columns else 1]

    def position(self, shape: Sequence[int], index: int) -> float | None:
        """DICOM's slice position of slice ``index``: its first shown pixel's LPS position (what
        ImagePositionPatient holds) along row direction x column direction, in mm."""
        if self.lps is None:
            return None
        across = self._direction(self.column_axis, self.flip_columns)
        down = self._direction(self.row_axis, self.flip_rows)
        normal = np.cross(across, down)
        voxel = np.zeros(4)
        voxel[3] = 1.0
        voxel[self.slice_axis] = index
        voxel[self.column_axis] = shape[self.column_axis] - 1 if self.flip_columns else 0
        voxel[self.row_axis] = shape[self.row_axis] - 1 if self.flip_rows else 0
        value = float((self.lps @ voxel)[:3] @ (normal / np.linalg.norm(normal)))
        return value if np.isfinite(value) else None

    def _direction(self, axis: int, flipped: bool) -> np.ndarray:
        assert self.lps is not None
        column = self.lps[:3, axis]
        return (-column if flipped else column) / np.linalg.norm(column)


def slice_layout(affine: np.ndarray | None, shape: Sequence[int], slice_dim: int | None
                 ) -> SliceLayout:
    """The layout of a 3D ``shape`` with voxel -> RAS ``affine`` (nibabel's best affine).

    The slice axis is the header's slice dimension when it names one, else the axis with clearly
    fewer voxels than the other two (a stack of slices), else the one with clearly the thickest
    voxels, else the third (where converters put the acquired slices). A slice is shown in the
    radiological convention of its plane; without a usable affine, as stored (first axis across).
    """
    lps = _lps_affine(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0) if lps is not None else np.ones(3)
    axis = slice_dim if slice_dim in (0, 1, 2) else _stack_axis(shape, spacing)
    first, second = (a for a in range(3) if a != axis)
    if lps is None:
        return SliceLayout(axis, second, first, False, False, None, None)
    normal = np.cross(lps[:3, first], lps[:3, second])
    plane = _PLANES[int(np.argmax(np.abs(normal)))]
    across, down = _SCREEN[plane]
    units = {a: lps[:3, a] / spacing[a] for a in (first, second)}
    column = first if abs(units[first] @ across) >= abs(units[second] @ across) else second
    row = second if column == first else first
    return SliceLayout(axis, row, column, bool(units[row] @ down < 0),
                       bool(units[column] @ across < 0), plane, lps)


def _lps_affine(affine: np.ndarray | None) -> np.ndarray | None:
    """The voxel -> LPS affine; None when it is not finite or maps a voxel axis to nothing."""
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        return None
    if np.any(np.linalg.norm(affine[:3, :3], axis=0) < 1e-6):
        return None
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return None
    lps = affine.copy()
    lps[:3] = _RAS_TO_LPS @ affine[:3]
    return lps


def _stack_axis(shape: Sequence[int], spacing: np.ndarray) -> int:
    fewest = min(range(3), key=lambda a: (shape[a], -a))
    if shape[fewest] <= _FEW_SLICES * min(shape[a] for a in range(3) if a != fewest):
        return fewest
    thickest = max(range(3), key=lambda a: (spacing[a], a))
    if all(spacing[thickest] >= _THICK_SLICES * spacing[a] for a in range(3) if a != thickest):
        return thickest
    return 2
