"""Read one DICOM file: cheap checks first, then SR text or rendered frames."""

from __future__ import annotations

import logging
import math
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from radsearch.reading.detect import dataset_offset, read_head
from radsearch.reading.geometry import slice_positions
from radsearch.reading.metadata import dicom_metadata
from radsearch.reading.phi import identity_hashes
from radsearch.reading.pixels import render_dicom_frames
from radsearch.reading.prepare import prepare_for_model
from radsearch.reading.sopclass import PIXEL_KEYWORDS, classify
from radsearch.reading.sr import report_text
from radsearch.reading.types import (
    ImageFrame,
    ReadError,
    ReadResult,
    SkipFile,
    os_reason,
    short_reason,
)
from radsearch.reading.values import as_int, as_text

# Larger values (pixel data, mostly) stay on disk until the size checks have passed.
_DEFER_SIZE = 4 * 1024 * 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins: "


def read_dicom(
    path: Path, *, image_size: int, salt: str, max_frames: int, max_pixels: int
) -> ReadResult:
    with _quiet_pydicom():
        try:
            return _read(
                path, image_size=image_size, salt=salt, max_frames=max_frames,
                max_pixels=max_pixels,
            )
        except (ReadError, SkipFile):
            raise
        except MemoryError:
            raise ReadError("out of memory while reading the image") from None
        except Exception as e:  # anything else from pydicom or a decoder: one line, no traceback
            raise ReadError(f"cannot read DICOM: {short_reason(e)}") from e


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom warnings may quote element values (names, IDs): keep them out of logs."""
    logger = logging.getLogger("pydicom")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = was_disabled


def _read(
    path: Path, *, image_size: int, salt: str, max_frames: int, max_pixels: int
) -> ReadResult:
    ds, size = _parse(path)
    _check_complete(ds, size)
    category, reason = classify(ds)
    if category == "skip":
        raise SkipFile(reason)
    if category == "no_pixels":
        raise ReadError("no pixel data")
    hashes = identity_hashes(ds, salt)
    if category == "sr":
        text = report_text(ds)
        if not text:
            raise SkipFile("structured report without text content")
        metadata = dicom_metadata(ds, with_image=False)
        return ReadResult(str(path), "dicom", **hashes, metadata=metadata, report_text=text)

    n_frames = _check_pixel_data(ds, max_pixels)
    warnings_: list[str] = []
    indices = list(range(n_frames))
    if n_frames > max_frames:
        indices = np.linspace(0, n_frames - 1, max_frames).round().astype(int).tolist()
        warnings_.append(f"sampled {max_frames} of {n_frames} frames evenly")
    try:
        images = render_dicom_frames(ds, indices)
    except MemoryError:
        raise
    except Exception as e:
        ts = ds.file_meta.TransferSyntaxUID
        reason = short_reason(e).removeprefix(_ALL_PLUGINS_FAILED)
        raise ReadError(f"cannot decode pixel data ({ts.name}): {reason}") from e
    if len(images) < len(indices):
        raise ReadError(f"pixel data holds {len(images)} of {len(indices)} declared frames")
    positions = slice_positions(ds, indices)
    instance_number = as_int(ds.get("InstanceNumber"))
    frames = [
        ImageFrame(index, prepare_for_model(image, image_size), position, instance_number)
        for index, image, position in zip(indices, images, positions)
    ]
    metadata = dicom_metadata(ds, with_image=True)
    return ReadResult(
        str(path), "dicom", **hashes, metadata=metadata, frames=frames, warnings=warnings_
    )


def _parse(path: Path) -> tuple[Dataset, int]:
    """The data set and the byte size of its source, with a transfer syntax always set."""
    try:
        head = read_head(path)
        if head[128:132] == b"DICM":
            ds = dcmread(path, defer_size=_DEFER_SIZE)
            size = os.stat(path).st_size
        else:
            offset = dataset_offset(head)
            if offset is None:
                raise ReadError("not a DICOM file")
            data = path.read_bytes()[offset:]
            ds = dcmread(BytesIO(data), force=True)
            size = len(data)
    except InvalidDicomError as e:
        raise ReadError(f"not a valid DICOM file: {short_reason(e)}") from None
    except (EOFError, struct.error):
        raise ReadError("truncated DICOM file") from None
    except OSError as e:
        raise ReadError(os_reason(e)) from None
    except (ReadError, MemoryError):
        raise
    except Exception as e:
        raise ReadError(f"cannot parse DICOM: {short_reason(e)}") from e
    _ensure_transfer_syntax(ds)
    return ds, size


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Without file meta or its Transfer Syntax UID, use the encoding pydicom found."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        big = little is False
        meta.TransferSyntaxUID = ExplicitVRBigEndian if big else ExplicitVRLittleEndian


def _check_complete(ds: Dataset, size: int) -> None:
    """Raise on a data set cut short: empty, or its last element ending past the end of file."""
    if len(ds) == 0:
        raise ReadError("truncated DICOM file: no data elements after the header")
    last = ds.get_item(max(ds.keys()), keep_deferred=True)
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return
    if last.value is not None:
        present = len(last.value)
    elif ds.file_meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        present = size - last.value_tell
    else:
        return
    if present < last.length:
        raise ReadError(
            f"truncated DICOM file: its last element needs {last.length} bytes, "
            f"{max(present, 0)} present"
        )


def _check_pixel_data(ds: Dataset, max_pixels: int) -> int:
    """Refuse, before decoding, what cannot or should not be decoded. Returns the frame count."""
    ts: UID = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        raise ReadError(f"unsupported transfer syntax {ts.name}: no decoder is installed")
    rows, columns = as_int(ds.get("Rows")), as_int(ds.get("Columns"))
    if not rows or not columns or rows < 0 or columns < 0:
        raise ReadError("missing or zero Rows/Columns")
    n_frames = as_int(ds.get("NumberOfFrames"))
    n_frames = 1 if n_frames is None or n_frames == 0 else n_frames
    if n_frames < 0:
        raise ReadError(f"invalid NumberOfFrames {n_frames}")
    samples = as_int(ds.get("SamplesPerPixel")) or 1
    n_pixels = rows * columns * n_frames * samples
    if n_pixels > max_pixels:
        raise ReadError(
            f"declared image size {rows}x{columns}, {n_frames} frame(s), {samples} sample(s) "
            f"= {n_pixels} pixels is too large (limit {max_pixels})"
        )
    if not ts.is_compressed:
        _check_native_length(ds, rows * columns * n_frames, samples)
    return n_frames


def _check_native_length(ds: Dataset, n_pixels: int, samples: int) -> None:
    keyword = next(k for k in PIXEL_KEYWORDS if k in ds)
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword)
    bits = bits or as_int(ds.get("BitsAllocated"))
    if not bits or bits < 1:
        raise ReadError("missing BitsAllocated")
    if as_text(ds.get("PhotometricInterpretation")) == "YBR_FULL_422":
        expected = n_pixels * 2 * bits // 8  # chroma is subsampled 2:1 horizontally
    else:
        expected = math.ceil(n_pixels * samples * bits / 8)
    element = ds.get_item(keyword, keep_deferred=True)
    if isinstance(element, RawDataElement):
        found = len(element.value) if element.value is not None else element.length
    else:
        found = len(element.value or b"")
    if found < expected:
        raise ReadError(
            f"pixel data shorter than declared: expected {expected} bytes, found {found}"
        )
