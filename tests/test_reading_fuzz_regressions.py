"""Inputs that benchmarks/fuzz_dicom.py found to break the reader, minimised and rebuilt here.

Each once escaped ``read_file`` as an exception other than ReadError (stopping an index run),
allocated what its file declared rather than what it held, or gave a reason of several lines.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from reading_helpers import edited_copy, huge_element_length, pydicom_file, read

from radsearch.reading import ReadError, SkipFile, detect_kind

PREAMBLE = bytes(128) + b"DICM"


def _one_line_error(path: Path) -> str:
    with pytest.raises(ReadError) as info:
        read(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_file_meta_cut_inside_a_long_element_header(tmp_path: Path) -> None:
    # (0002,0001) OB: its 4-byte length lies past the end of the file. Detection read it anyway
    # (struct.error), and an index run's discovery step calls detection on every file.
    path = tmp_path / "cut_meta.dcm"
    path.write_bytes(PREAMBLE + struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00\x00\x01")
    assert detect_kind(path) == "dicom"
    assert _one_line_error(path).startswith(("truncated DICOM file", "not a valid DICOM file"))


def test_rle_frame_shorter_than_declared_bits(tmp_path: Path) -> None:
    # 8-bit RGB RLE data declared 16-bit over fewer rows: pylibjpeg-rle (Rust) panicked, and pyo3's
    # PanicException derives from BaseException, past every ``except Exception``.
    def edit(ds: pydicom.Dataset) -> None:
        ds.Rows = 7
        ds.BitsAllocated = 16

    path = edited_copy("SC_rgb_rle.dcm", tmp_path, edit)
    assert _one_line_error(path).startswith("cannot decode pixel data (RLE Lossless)")


def _error_and_peak_memory(path: Path) -> tuple[str, int]:
    """The one-line error reading ``path`` gives, and the peak Python memory while reading it."""
    tracemalloc.start()
    try:
        message = _one_line_error(path)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_element_length_in_a_sequence_is_not_allocated(tmp_path: Path) -> None:
    # An element in an undefined-length sequence declaring 4 GB in a 10 kB file: pydicom reads
    # such values at once with read(length), and Python allocated the 4 GB before reading.
    path = tmp_path / "huge_length.dcm"
    path.write_bytes(huge_element_length())

    message, peak = _error_and_peak_memory(path)
    assert message.startswith("truncated DICOM file")
    assert peak < 16 * 2**20


def _patched(tmp_path: Path, name: str, marker: bytes, offset: int, fmt: str, *values: int) -> Path:
    """A copy of pydicom test file ``name`` with numbers written at ``offset`` past ``marker``."""
    data = bytearray(pydicom_file(name).read_bytes())
    at = data.find(marker)
    assert at != -1
    struct.pack_into(fmt, data, at + offset, *values)
    path = tmp_path / f"patched-{name}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "marker", "offset", "fmt", "values", "declared"),
    [
        # JPEG 2000 SIZ: Xsiz 8,389,120 (the fuzzer's HTJ2K frame made openjpeg allocate 8 GB).
        ("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8, ">I", (8_389_120,), "64x8389120"),
        # JPEG SOF0: 65535 x 65535 in a 64 kB baseline frame.
        ("SC_rgb_jpeg_dcmtk.dcm", b"\xff\xc0", 5, ">HH", (65535, 65535), "65535x65535"),
        # JPEG-LS SOF55.
        ("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7", 5, ">HH", (40000, 40000), "40000x40000"),
    ],
    ids=["jpeg2000", "jpeg", "jpeg-ls"],
)
def test_codestream_larger_than_the_header_is_refused_before_decoding(
    tmp_path: Path, name: str, marker: bytes, offset: int, fmt: str, values: tuple, declared: str
) -> None:
    path = _patched(tmp_path, name, marker, offset, fmt, *values)
    message, peak = _error_and_peak_memory(path)
    assert message.startswith(f"compressed frame 0 declares {declared} pixels")
    assert peak < 16 * 2**20


def test_reason_quoting_a_damaged_value_stays_one_line(tmp_path: Path) -> None:
    # A length field grown over the next elements put NUL and newline bytes into the Modality that
    # the skip reason quotes.
    def damaged_modality(ds: pydicom.Dataset) -> None:
        ds.Modality = "RTPLAN\x00\nCMS"

    path = edited_copy("rtplan.dcm", tmp_path, damaged_modality)
    with pytest.raises(SkipFile) as info:
        read(path)
    assert str(info.value) == "not an image: radiotherapy object (RT Plan Storage), modality RTPLAN CMS"
