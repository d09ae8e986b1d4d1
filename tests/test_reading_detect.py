"""detect_kind: by content, cheap, never by extension."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reading_helpers import pydicom_file

from radsearch.reading import detect_kind


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtstruct.dcm"]
)
def test_dicom_with_preamble(name: str) -> None:
    assert detect_kind(pydicom_file(name)) == "dicom"


@pytest.mark.parametrize(
    "name", ["no_meta.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"]
)
def test_dicom_without_preamble_or_meta(name: str) -> None:
    assert detect_kind(pydicom_file(name)) == "dicom"


def test_dicom_starting_with_file_meta_but_no_preamble(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "nopreamble"
    path.write_bytes(data[132:])  # (0002,0000) first, no preamble, no 'DICM'
    assert detect_kind(path) == "dicom"


def test_dicomdir_by_name_and_by_content(tmp_path: Path) -> None:
    dicomdir = pydicom_file("DICOMDIR")
    assert detect_kind(dicomdir) == "dicomdir"
    renamed = tmp_path / "index.dcm"
    renamed.write_bytes(dicomdir.read_bytes())
    assert detect_kind(renamed) == "dicomdir"  # Media Storage SOP Class, not the name
    assert detect_kind(pydicom_file("DICOMDIR-empty.dcm")) == "dicomdir"


def test_file_named_dicomdir_that_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "DICOMDIR"
    path.write_text("not dicom at all")
    assert detect_kind(path) is None


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def test_png_and_jpeg_by_signature_whatever_the_extension(tmp_path: Path) -> None:
    png, jpeg = tmp_path / "scan.dcm", tmp_path / "photo.png"
    png.write_bytes(_encoded("PNG"))
    jpeg.write_bytes(_encoded("JPEG"))
    assert detect_kind(png) == "png"
    assert detect_kind(jpeg) == "jpeg"


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world\n", b'{"a": 1}', b"\x1f\x8b\x08\x00" + bytes(300), bytes(132), bytes(600)],
    ids=["empty", "text", "json", "gzip", "zeros-132", "zeros-600"],
)
def test_other_content_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.dcm"
    path.write_bytes(content)
    assert detect_kind(path) is None


def test_random_bytes_are_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(200):
        path = tmp_path / f"random{i}.dcm"
        path.write_bytes(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())
        assert detect_kind(path) is None


def test_pydicom_non_dicom_test_files_are_none() -> None:
    for name in ["rtplan.dump", "test1.json", "zipMR.gz", "crayons.icc"]:
        assert detect_kind(pydicom_file(name)) is None


def test_directory_is_none(tmp_path: Path) -> None:
    assert detect_kind(tmp_path) is None
