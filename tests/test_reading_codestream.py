"""Sizes declared in compressed frames agree with the headers of real files of every codec."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.encaps import generate_fragmented_frames
from reading_helpers import pydicom_file

from radsearch.reading.codestream import declared_size

REAL = [
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, 3 components
    "JPGExtended.dcm",  # JPEG extended, 12-bit
    "JPEG-LL.dcm",  # JPEG lossless (process 14), pydicom-data
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "SC_rgb_jls_lossy_line.dcm",  # JPEG-LS near-lossless, colour
]


@pytest.mark.parametrize("name", REAL)
def test_declared_size_matches_the_header(name: str) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    n_frames = int(ds.get("NumberOfFrames") or 1)
    frames = generate_fragmented_frames(ds.PixelData, number_of_frames=n_frames)
    frame = b"".join(next(frames))
    assert declared_size(frame) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)


@pytest.mark.parametrize(
    "frame",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8\xff\xc0\x00", b"RLE-ish bytes",
     b"\xff\x4f\xff\x51\x00"],
    ids=["empty", "soi-only", "scan-first", "cut-sof", "other", "cut-siz"],
)
def test_frames_without_a_readable_size_declare_none(frame: bytes) -> None:
    assert declared_size(frame) is None
