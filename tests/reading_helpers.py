"""Shared helpers of the tests of radsearch.reading: real test files and edited copies."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radsearch.reading import read_file

SALT = "test-salt"


def pydicom_file(name: str) -> Path:
    """A pydicom (or pydicom-data) test file; skips when it is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed (pip install pydicom-data)")
    return Path(path)


def read(path: Path, **kwargs: object):
    kwargs.setdefault("salt", SALT)
    return read_file(path, **kwargs)


def pixels(path: Path, frame: int = 0, **kwargs: object) -> np.ndarray:
    return read(path, **kwargs).frames[frame].pixels


def edited_copy(
    name: str, tmp_path: Path, edit: Callable[[Dataset], None], *, filename: str = "edited.dcm"
) -> Path:
    """A copy of test file ``name`` after ``edit`` changed its data set."""
    ds = pydicom.dcmread(pydicom_file(name))
    edit(ds)
    out = tmp_path / filename
    ds.save_as(out, enforce_file_format=False)
    return out


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def huge_element_length(source: str = "MR_small.dcm", sequence: str = "ContentSequence") -> bytes:
    """``source`` with a text element, in a ``sequence`` of undefined length, declaring 4 GB.

    Values inside such a sequence are read at once, never deferred: a reader that trusts the
    declared length allocates 4 GB for a 10 kB file (found by benchmarks/fuzz_dicom.py).
    """
    ds = pydicom.dcmread(pydicom_file(source))
    item = Dataset()
    item.TextValue = "xxxxxxxx"
    item.is_undefined_length_sequence_item = True
    setattr(ds, sequence, Sequence([item]))
    ds[sequence].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = bytearray(out.getvalue())
    at = data.find(struct.pack("<HH", 0x0040, 0xA160) + b"UT")
    struct.pack_into("<I", data, at + 8, 0xFFFFFFF0)
    return bytes(data)
