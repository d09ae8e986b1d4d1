"""NIfTI test volumes made from real DICOM pixels, the way converters write them."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import generate_uid
from reading_helpers import pydicom_file

# Image plane -> ImageOrientationPatient (row direction, column direction), as scanners store them.
ORIENTATIONS = {
    "axial": [1, 0, 0, 0, 1, 0],
    "coronal": [1, 0, 0, 0, 0, -1],
    "sagittal": [0, 1, 0, 0, 0, -1],
}
# Voxel orders a NIfTI writer may choose: as converted (DICOM order), RAS canonical, and a
# permuted, flipped one.
VOXEL_ORDERS = [None, ("R", "A", "S"), ("I", "P", "R")]
SLICE_GAP = 2.5


def dicom_series(tmp_path: Path, plane: str, n_slices: int = 3, *, flipped: bool = False
                 ) -> list[Path]:
    """CT_small.dcm's real pixels as an ``n_slices`` series in ``plane`` (a study and series of
    its own): each slice marked on one side (so that slices and flips differ), ``SLICE_GAP`` mm
    apart along the normal; ``flipped``: the pixels upside down (another series' content)."""
    source = pydicom_file("CT_small.dcm")
    iop = np.array(ORIENTATIONS[plane], dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    name = f"{plane}{'-flipped' if flipped else ''}"
    study, series = (generate_uid(entropy_srcs=[name, part]) for part in ("study", "series"))
    paths = []
    for index in range(n_slices):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[name, str(index)])
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        origin = np.array([-80.0, -90.0, 40.0]) + index * SLICE_GAP * normal
        ds.ImagePositionPatient = [f"{v:g}" for v in origin]
        pixels = ds.pixel_array
        pixels[:, : 20 + 9 * index] = pixels.min()  # an asymmetric mark, different per slice
        ds.PixelData = np.ascontiguousarray(pixels[::-1] if flipped else pixels).tobytes()
        path = tmp_path / f"{name}-{index}.dcm"
        ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    return paths


def nifti_from_dicom(paths: list[Path], out: Path, voxel_order: tuple[str, ...] | None = None,
                     scaled: bool = True) -> Path:
    """A NIfTI of the series as a converter writes it: stored values with scl_slope/scl_inter (or
    Hounsfield units), the affine from the DICOM geometry, then reoriented to ``voxel_order``."""
    slices = [pydicom.dcmread(path) for path in paths]
    first = slices[0]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    normal = np.cross(iop[:3], iop[3:])
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * column_spacing  # voxel i runs along a row (DICOM column index)
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = normal * SLICE_GAP
    lps[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = np.stack([ds.pixel_array.T for ds in slices], axis=-1)
    slope, inter = float(first.RescaleSlope), float(first.RescaleIntercept)
    if not scaled:
        data = (data * slope + inter).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    if voxel_order is not None:
        transform = nib.orientations.ornt_transform(
            nib.io_orientation(affine), nib.orientations.axcodes2ornt(voxel_order))
        img = img.as_reoriented(transform)
    # Written by hand: nibabel's save recomputes the scaling of an in-memory array.
    header = nib.Nifti1Header()
    header.set_data_shape(img.shape)
    header.set_data_dtype(np.int16)
    header.set_sform(img.affine, code=1)
    header.set_qform(img.affine, code=1)
    header.set_slope_inter(*((slope, inter) if scaled else (1.0, 0.0)))
    header["vox_offset"] = 352
    content = header.binaryblock + bytes(4) + np.asarray(img.dataobj, "<i2").tobytes(order="F")
    out.write_bytes(gzip.compress(content) if out.suffix == ".gz" else content)
    return out
