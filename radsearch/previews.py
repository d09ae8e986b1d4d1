"""Pictures of indexed images for people: one frame of a file as the model was shown it (a
thumbnail), or, for a viewer, one grayscale DICOM frame in its original values (Hounsfield units
for CT) to window at will, with the technical facts of its header and nothing identifying."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.pacs_fetch import local_path
from radsearch.reading import ReadError, SkipFile, read_file

PREVIEW_SIZE = 256
# Header attributes a viewer may show: acquisition facts, never a name, ID, UID, date or place.
FACT_ATTRIBUTES = (
    ("Modality", "modality"),
    ("BodyPartExamined", "body part"),
    ("Manufacturer", "manufacturer"),
    ("ManufacturerModelName", "model"),
    ("SliceThickness", "slice thickness (mm)"),
    ("SpacingBetweenSlices", "spacing between slices (mm)"),
    ("PixelSpacing", "pixel spacing (mm)"),
    ("Rows", "rows"),
    ("Columns", "columns"),
    ("NumberOfFrames", "frames"),
    ("BitsStored", "bits stored"),
    ("PhotometricInterpretation", "photometric"),
    ("RescaleSlope", "rescale slope"),
    ("RescaleIntercept", "rescale intercept"),
    ("KVP", "kVp"),
    ("MagneticFieldStrength", "field strength (T)"),
    ("RepetitionTime", "TR (ms)"),
    ("EchoTime", "TE (ms)"),
)


@dataclass
class FrameValues:
    """One grayscale DICOM frame before any window: what a viewer windows."""

    values: np.ndarray  # float32 (rows, columns): the modality LUT's output; pixel padding NaN
    center: float  # the file's own window (its VOI), else one over the 0.5-99.5 % percentiles
    width: float
    invert: bool  # MONOCHROME1: high values dark
    position: float | None  # along the slice normal (mm), when the header places the slice
    facts: dict[str, str] = field(default_factory=dict)  # FACT_ATTRIBUTES found in the header


def image_preview(path: str | Path, frame: int = 0, *, size: int = PREVIEW_SIZE,
                  index: Path | None = None) -> np.ndarray:
    """uint8 ``(size, size)`` gray, or ``(size, size, 3)`` for colour: frame ``frame`` of an image
    file, windowed and letter-boxed as for the model. One-line ``RadsearchError`` if unreadable.
    ``path`` may be the key of an instance ``index`` holds from a PACS: it is fetched from there
    (radsearch.pacs_fetch)."""
    local = local_path(str(path), index)
    try:
        result = read_file(Path(local), image_size=size, salt="preview")
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


def frame_values(path: str | Path, frame: int = 0, *,
                 index: Path | None = None) -> FrameValues | None:
    """Frame ``frame`` of a DICOM file in its original values, decoding that frame only (or slice
    ``frame`` of a NIfTI volume, scaled); None for a file that is neither grayscale DICOM nor
    NIfTI (PNG/JPEG, colour): show its :func:`image_preview` instead. One-line ``RadsearchError``
    if unreadable. ``path`` may be the key of an instance ``index`` holds from a PACS."""
    from radsearch.reading import detect_kind

    local = local_path(str(path), index)
    kind = detect_kind(Path(local))  # by content, as the indexer decided
    if kind == "nifti":
        return _nifti_frame_values(Path(local), frame)
    if kind != "dicom":
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    from radsearch.reading.geometry import slice_positions
    from radsearch.reading.guarded_io import quiet_pydicom
    from radsearch.reading.pixels import hounsfield_frames
    from radsearch.reading.values import as_float, as_int, as_text, first

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(local, force=True)
            photometric = as_text(ds.get("PhotometricInterpretation")) or ""
            if "PixelData" not in ds or (as_int(ds.get("SamplesPerPixel")) or 1) != 1 \
                    or not photometric.startswith("MONOCHROME"):
                return None
            values = next(hounsfield_frames(ds, [frame]))
            position = slice_positions(ds, [frame])[0]
    except InvalidDicomError:
        return None
    except Exception as error:  # a decoder or pydicom failure: one line
        raise RadsearchError(f"{path}: cannot decode frame {frame}: {error}") from None
    center = as_float(first(ds.get("WindowCenter")))
    width = as_float(first(ds.get("WindowWidth")))
    if center is None or width is None or width <= 0:
        center, width = _percentile_window(values)
    facts = {}
    for keyword, name in FACT_ATTRIBUTES:
        value = ds.get(keyword)
        if value is not None and str(value).strip():
            facts[name] = " x ".join(str(v) for v in value) if keyword == "PixelSpacing" \
                and isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else str(value)
    return FrameValues(values, center, width, photometric == "MONOCHROME1", position, facts)


def _nifti_frame_values(path: Path, frame: int) -> FrameValues | None:
    """A NIfTI slice as read for the index, in its scaled values (NIfTI has no display window)."""
    from radsearch.reading.nifti import nifti_slice_values

    try:
        found = nifti_slice_values(path, frame)
    except ReadError as error:
        raise RadsearchError(f"{path}: {error}") from None
    if found is None:  # RGB
        return None
    values, position = found
    return FrameValues(values, *_percentile_window(values), False, position)


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) over the 0.5-99.5 % percentiles of the finite values."""
    finite = values[np.isfinite(values)]
    low, high = (np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0))
    return float(low + high) / 2.0, max(float(high - low), 1.0)


def apply_window(values: np.ndarray, center: float, width: float, *, invert: bool = False) -> np.ndarray:
    """uint8 picture of original values through a linear window (``center`` = level); values
    below it black, above white (reversed if ``invert``), NaN (padding) black."""
    low = center - width / 2.0
    scaled = (values - low) * (255.0 / max(width, 1e-6))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    if invert:
        scaled = 255.0 - scaled
    return np.nan_to_num(scaled, nan=0.0).astype(np.uint8)
