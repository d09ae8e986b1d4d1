"""Real multi-slice series (../shared/data/dicom_series): every file reads, geometry is right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from reading_helpers import read

from radsearch.reading import ReadError, detect_kind

# Upstream test data: the last slice of this Philips series is cut short.
KNOWN_TRUNCATED = {"dicom2nifti/philips/anatomical/002/008.dcm"}
# Single volumes of parallel slices (not the 'failing' ones, not 4D DTI/fMRI).
VOLUMES = [
    "dicom2nifti/anatomical/001",
    "dicom2nifti/anatomical/001_implicit",
    "dicom2nifti/ge/anatomical/001",
    "dicom2nifti/generic/anatomical/001",
    "dicom2nifti/generic/anatomical/002_non_isotropic",
    "dicom2nifti/generic/compressed_rle/001",
    "dicom2nifti/generic/rgb/001",
    "dicom2nifti/hitachi/anatomical/001",
    "dicom2nifti/philips/anatomical/001",
]
COMPRESSED = [
    "compressed", "compressed_j2k", "compressed_jpeg", "compressed_jpegls", "compressed_rle"
]


@pytest.fixture(scope="module")
def series(shared_data: Path) -> Path:
    root = shared_data / "dicom_series"
    if not root.is_dir():
        pytest.skip(f"DICOM series data not found at {root}")
    return root


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and detect_kind(p) == "dicom")


def test_every_series_file_reads(series: Path) -> None:
    files = sorted(p for p in series.rglob("*") if p.is_file() and detect_kind(p) == "dicom")
    assert len(files) >= 140
    for path in files:
        name = path.relative_to(series).as_posix()
        if name in KNOWN_TRUNCATED:
            with pytest.raises(ReadError, match="truncated DICOM file"):
                read(path)
            continue
        result = read(path, image_size=64)
        assert result.frames, name
        assert all(f.pixels.shape == (64, 64) and f.pixels.max() > 0 for f in result.frames), name
        assert all(f.slice_position is not None for f in result.frames), name


@pytest.mark.parametrize("folder", VOLUMES)
def test_slice_positions_order_a_volume(series: Path, folder: str) -> None:
    paths = _dicom_files(series / folder)
    positions = np.array([read(p, image_size=32).frames[0].slice_position for p in paths])
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert len(set(positions.round(4))) == len(paths)  # distinct
    order = np.argsort(positions)
    # Sorted by position, instance numbers run monotonically (one way or the other) ...
    instances = np.diff([int(headers[i].InstanceNumber) for i in order])
    assert np.all(instances > 0) or np.all(instances < 0)
    # ... and the gap between neighbouring positions is the distance between their origins.
    origins = np.array([[float(v) for v in headers[i].ImagePositionPatient] for i in order])
    gaps = np.linalg.norm(np.diff(origins, axis=0), axis=1)
    assert np.diff(positions[order]) == pytest.approx(gaps, abs=1e-3)


def test_enhanced_multiframe_positions(series: Path) -> None:
    result = read(series / "dicom2nifti/hyperfine/anatomical/001/001.dcm", image_size=32)
    positions = [f.slice_position for f in result.frames]
    assert len(positions) == 8
    assert np.diff(positions) == pytest.approx([5.0] * 7)
    assert result.metadata["sop_class"] == "Enhanced MR Image Storage"


def test_duplicate_positions_stay_duplicate(series: Path) -> None:
    paths = _dicom_files(series / "dicom_numpy_dupe_positions")
    positions = [read(p, image_size=32).frames[0].slice_position for p in paths]
    assert len(positions) == 11 and len(set(positions)) < len(positions)


def test_compressed_series_decode_identically(series: Path) -> None:
    base = series / "dicom2nifti/generic"
    syntaxes = set()
    reference = [read(p).frames[0].pixels for p in _dicom_files(base / "compressed_rle/001")]
    for variant in COMPRESSED:
        results = [read(p) for p in _dicom_files(base / variant / "001")]
        syntaxes.add(results[0].metadata["transfer_syntax"])
        assert len(results) == len(reference)
        for result, expected in zip(results, reference):
            assert np.array_equal(result.frames[0].pixels, expected), variant
    assert len(syntaxes) == 4  # RLE, JPEG lossless, JPEG-LS, JPEG 2000
