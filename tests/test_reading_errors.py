"""Bad input gives a ReadError with one clear line; nothing is decoded that should not be."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from reading_helpers import edited_copy, pydicom_file, read

from radsearch.reading import ReadError, read_file


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ReadError) as info:
        read(path, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert str(path) not in message  # the caller adds the path
    return message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.touch()
    assert _error(path) == "empty file (0 bytes)"


def test_random_bytes_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "random.dcm"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert _error(path) == "not a DICOM, PNG or JPEG file"


def test_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nothing.dcm") == "file not found"


def test_directory(tmp_path: Path) -> None:
    assert _error(tmp_path) == "is a directory, not a file"


def test_pydicom_truncated_file() -> None:
    assert _error(pydicom_file("MR_truncated.dcm")).startswith("truncated DICOM file")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.999])
def test_cut_copies_are_truncated(tmp_path: Path, keep: float) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * keep)])
    assert _error(path).startswith("truncated DICOM file")


def test_cut_inside_the_header(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:140])
    assert "truncated" in _error(path) or "not a valid DICOM" in _error(path)


def test_no_pixel_data(tmp_path: Path) -> None:
    def drop_pixels(ds: pydicom.Dataset) -> None:
        del ds.PixelData

    assert _error(edited_copy("CT_small.dcm", tmp_path, drop_pixels)) == "no pixel data"


@pytest.mark.parametrize(
    ("source", "uid", "name"),
    [
        ("CT_small.dcm", "1.2.3.4.5.6.7", "1.2.3.4.5.6.7"),
        ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.100", "MPEG2 Main Profile"),
    ],
)
def test_unsupported_transfer_syntax(tmp_path: Path, source: str, uid: str, name: str) -> None:
    def relabel(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid

    message = _error(edited_copy(source, tmp_path, relabel))
    assert message.startswith("unsupported transfer syntax") and name in message
    assert "no decoder is installed" in message


def test_pixel_data_shorter_than_declared(tmp_path: Path) -> None:
    def taller(ds: pydicom.Dataset) -> None:
        ds.Rows = 256  # the 64x64 pixel data stays

    message = _error(edited_copy("MR_small.dcm", tmp_path, taller))
    assert message == "pixel data shorter than declared: expected 32768 bytes, found 8192"


def test_absurd_rows_and_columns_refused_before_decoding(tmp_path: Path) -> None:
    def huge(ds: pydicom.Dataset) -> None:
        ds.Rows = ds.Columns = 65535
        ds.NumberOfFrames = 1000

    message = _error(edited_copy("MR_small.dcm", tmp_path, huge))
    assert message.startswith("declared image size 65535x65535, 1000 frame(s)")
    assert "too large" in message


def test_max_pixels_applies_to_compressed_files_too() -> None:
    message = _error(pydicom_file("MR_small_jp2klossless.dcm"), max_pixels=64 * 64 - 1)
    assert "too large" in message


def test_zero_rows(tmp_path: Path) -> None:
    def zero(ds: pydicom.Dataset) -> None:
        ds.Rows = 0

    assert _error(edited_copy("MR_small.dcm", tmp_path, zero)) == "missing or zero Rows/Columns"


def test_undecodable_pixel_data_is_one_line() -> None:
    # Corrupt upstream: none of the installed decoders reads it.
    message = _error(pydicom_file("JPEG-lossy.dcm"))
    assert message.startswith("cannot decode pixel data (JPEG Extended")


def test_corrupt_compressed_frame(tmp_path: Path) -> None:
    def cut_codestream(ds: pydicom.Dataset) -> None:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame[:300]])

    message = _error(edited_copy("MR_small_jp2klossless.dcm", tmp_path, cut_codestream))
    assert message.startswith("cannot decode pixel data (JPEG 2000 Image Compression")
    assert "pylibjpeg:" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.dcm"
    path.write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    path.chmod(0)
    assert _error(path) == "unreadable: permission denied"


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.dcm"
    path.write_bytes(b"x")

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("radsearch.reading.detect.open", deny, raising=False)
    assert _error(path) == "unreadable: permission denied"


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        read_file(pydicom_file("CT_small.dcm"), salt="s", image_size=0)
