"""Read one DICOM file: cheap checks first, then SR text or rendered frames."""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from radsearch.reading.codestream import HEADER_BYTES, declared_size
from radsearch.reading.detect import HEAD_BYTES, dataset_offset, file_meta_end
from radsearch.reading.geometry import slice_positions
from radsearch.reading.guarded_io import BoundedReader, quiet_pydicom
from radsearch.reading.metadata import dicom_metadata
from radsearch.reading.phi import Scrubber, identity_hashes
from radsearch.reading.pixels import hounsfield_frames, render_dicom_frames
from radsearch.reading.prepare import (
    CtWindow,
    prepare_channels_for_model,
    prepare_for_model,
    render_ct_windows,
)
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
_DEFLATED = str(DeflatedExplicitVRLittleEndian).encode()
_META_BYTES = 64 * 1024  # file meta holds a few hundred bytes; private elements may add some
_INFLATE_CHUNK = 1 << 20
_METADATA_BYTES = 64 * 1024 * 1024  # what a data set may hold besides its pixels
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins: "


def read_dicom(
    path: Path, *, image_size: int, salt: str, max_frames: int, max_pixels: int,
    ct_windows: Sequence[CtWindow] = (),
) -> ReadResult:
    with quiet_pydicom():
        try:
            return _read(
                path, image_size=image_size, salt=salt, max_frames=max_frames,
                max_pixels=max_pixels, ct_windows=ct_windows,
            )
        except (ReadError, SkipFile):
            raise
        except MemoryError:
            raise ReadError("out of memory while reading the image") from None
        except Exception as e:  # anything else from pydicom or a decoder: one line, no traceback
            raise ReadError(f"cannot read DICOM: {short_reason(e)}") from e


def _read(
    path: Path, *, image_size: int, salt: str, max_frames: int, max_pixels: int,
    ct_windows: Sequence[CtWindow],
) -> ReadResult:
    try:
        handle = open(path, "rb")
    except OSError as e:
        raise ReadError(os_reason(e)) from None
    with handle:  # open until the end: deferred values (pixel data) are read from it
        ds, size = _parse(handle, inflate_limit=2 * max_pixels + _METADATA_BYTES)
        return _interpret(
            path, ds, size, image_size=image_size, salt=salt, max_frames=max_frames,
            max_pixels=max_pixels, ct_windows=ct_windows,
        )


def _interpret(
    path: Path, ds: Dataset, size: int, *, image_size: int, salt: str, max_frames: int,
    max_pixels: int, ct_windows: Sequence[CtWindow],
) -> ReadResult:
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
        scrubber = Scrubber(ds)  # free text loses the file's own identifiers
        text = scrubber.text(text)
        metadata = scrubber.metadata(dicom_metadata(ds, with_image=False))
        return ReadResult(str(path), "dicom", **hashes, metadata=metadata, report_text=text)

    n_frames = _check_pixel_data(ds, max_pixels)
    warnings_: list[str] = []
    indices = list(range(n_frames))
    if n_frames > max_frames:
        indices = np.linspace(0, n_frames - 1, max_frames).round().astype(int).tolist()
        warnings_.append(f"sampled {max_frames} of {n_frames} frames evenly")
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        _check_codestreams(ds, indices, n_frames)
    try:
        images = _model_pixels(ds, indices, image_size, ct_windows)
    except MemoryError:
        raise
    except BaseException as e:
        if not isinstance(e, Exception) and not _is_decoder_panic(e):
            raise  # KeyboardInterrupt, SystemExit
        ts = ds.file_meta.TransferSyntaxUID
        reason = short_reason(e).removeprefix(_ALL_PLUGINS_FAILED)
        raise ReadError(f"cannot decode pixel data ({ts.name}): {reason}") from e
    if len(images) < len(indices):
        raise ReadError(f"pixel data holds {len(images)} of {len(indices)} declared frames")
    positions = slice_positions(ds, indices)
    instance_number = as_int(ds.get("InstanceNumber"))
    frames = [
        ImageFrame(index, image, position, instance_number)
        for index, image, position in zip(indices, images, positions)
    ]
    metadata = Scrubber(ds).metadata(dicom_metadata(ds, with_image=True))
    return ReadResult(
        str(path), "dicom", **hashes, metadata=metadata, frames=frames, warnings=warnings_
    )


def _model_pixels(
    ds: Dataset, indices: list[int], image_size: int, ct_windows: Sequence[CtWindow]
) -> list[np.ndarray]:
    """Each frame model-ready: grayscale CT in ``ct_windows``, one channel each, when given;
    everything else one gray channel."""
    if ct_windows and _is_grayscale_ct(ds):
        # Frame by frame: a series' Hounsfield units are never all in memory at full size.
        return [prepare_channels_for_model(render_ct_windows(hu, ct_windows), image_size)
                for hu in hounsfield_frames(ds, indices)]
    return [prepare_for_model(image, image_size) for image in render_dicom_frames(ds, indices)]


def _is_grayscale_ct(ds: Dataset) -> bool:
    """CT whose pixels are stored values that the modality LUT turns into Hounsfield units
    (not a colour secondary capture or rendering)."""
    photometric = as_text(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
    return ((as_text(ds.get("Modality")) or "").upper() == "CT"
            and (as_int(ds.get("SamplesPerPixel")) or 1) == 1
            and photometric in ("MONOCHROME1", "MONOCHROME2"))


def _is_decoder_panic(error: BaseException) -> bool:
    """A Rust decoder (pylibjpeg-rle) that panics on bad input raises pyo3's PanicException,
    which derives from BaseException so that ``except Exception`` lets it through."""
    return type(error).__name__ == "PanicException"


def _parse(handle: BinaryIO, *, inflate_limit: int) -> tuple[Dataset, int]:
    """The data set and the byte size of its source, with a transfer syntax always set."""
    try:
        head = handle.read(HEAD_BYTES)
        if head[128:132] == b"DICM":
            size = os.fstat(handle.fileno()).st_size
            if _DEFLATED in head:
                _check_inflated_size(handle, inflate_limit)
            handle.seek(0)
            ds = dcmread(BoundedReader(handle, size), defer_size=_DEFER_SIZE)
        else:
            offset = dataset_offset(head)
            if offset is None:
                raise ReadError("not a DICOM file")
            handle.seek(offset)
            data = handle.read()
            ds = dcmread(BytesIO(data), force=True)
            size = len(data)
    except InvalidDicomError as e:
        raise ReadError(f"not a valid DICOM file: {short_reason(e)}") from None
    except (EOFError, struct.error):
        raise ReadError("truncated DICOM file") from None
    except OSError as e:
        if e.errno is None:  # pydicom's "No tag to read at file position ...": it ran off the end
            raise ReadError(f"truncated DICOM file: {short_reason(e)}") from None
        raise ReadError(os_reason(e)) from None
    except (ReadError, MemoryError):
        raise
    except Exception as e:
        raise ReadError(f"cannot parse DICOM: {short_reason(e)}") from e
    _ensure_transfer_syntax(ds)
    return ds, size


def _check_inflated_size(handle: BinaryIO, limit: int) -> None:
    """Refuse a deflated data set that inflates to over ``limit`` bytes, counting as it inflates:
    pydicom inflates it whole, in memory, and deflate packs up to 1000 bytes in one."""
    handle.seek(0)
    start = file_meta_end(handle.read(_META_BYTES))
    if start is None:
        return  # pydicom says what is wrong with the file meta
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while not inflater.eof and (chunk := handle.read(_INFLATE_CHUNK)):
        while chunk:
            total += len(inflater.decompress(chunk, _INFLATE_CHUNK))
            if total > limit:
                raise ReadError(f"deflated data set inflates to over {limit} bytes")
            chunk = inflater.unconsumed_tail


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


def _check_codestreams(ds: Dataset, indices: list[int], n_frames: int) -> None:
    """Refuse frames whose codestream declares more pixels than the header: the decoder would
    allocate for the codestream's size, which the header's checks never saw."""
    rows, columns = as_int(ds.get("Rows")) or 0, as_int(ds.get("Columns")) or 0
    samples = as_int(ds.get("SamplesPerPixel")) or 1
    budget = rows * columns * samples
    wanted, last = set(indices), max(indices)
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames = enumerate(generate_fragmented_frames(
            ds.PixelData, number_of_frames=n_frames, extended_offsets=offsets))
        for index, fragments in frames:
            if index > last:
                return
            if index not in wanted:
                continue
            size = declared_size(_frame_head(fragments))
            if size is not None and size[0] * size[1] * size[2] > budget:
                raise ReadError(
                    f"compressed frame {index} declares {size[0]}x{size[1]} pixels, "
                    f"{size[2]} component(s): more than the header's {rows}x{columns}"
                )
    except ReadError:
        raise
    except Exception:  # frames that cannot be split cannot be decoded: the decoder says why
        return


def _frame_head(fragments: tuple[bytes, ...]) -> bytes:
    """The first bytes of a frame split into fragments, as far as its size markers go."""
    head = b""
    for fragment in fragments:
        head += fragment[: HEADER_BYTES - len(head)]
        if len(head) >= HEADER_BYTES:
            break
    return head


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
