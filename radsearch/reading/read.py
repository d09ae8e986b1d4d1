"""Entry point: one study file in, model-ready frames and safe metadata out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from radsearch.reading.detect import detect_kind
from radsearch.reading.dicom import read_dicom
from radsearch.reading.nifti import nifti_name, not_nifti_reason, read_nifti
from radsearch.reading.prepare import CtWindow
from radsearch.reading.raster import read_raster
from radsearch.reading.types import (
    ReadError,
    ReadResult,
    SkipFile,
    os_reason,
    printable,
    special_file_reason,
)


def read_file(
    path: Path,
    *,
    image_size: int = 224,
    salt: str,
    max_frames: int = 512,
    max_pixels: int = 2**28,
    ct_windows: Sequence[CtWindow] = (),
) -> ReadResult:
    """Read a DICOM, NIfTI, PNG or JPEG file (detected by content).

    ``ct_windows`` (three, e.g. ``CT_WINDOWS``): grayscale CT frames are rendered in these
    Hounsfield windows, one per channel, uint8 ``(3, S, S)``; other images stay one gray channel.

    Raises ReadError (bad input, one-line reason) or SkipFile (valid, but nothing to embed:
    DICOMDIR, RT structure set, segmentation, presentation state, ...).
    """
    if image_size < 1 or max_frames < 1 or max_pixels < 1:
        raise ValueError("image_size, max_frames and max_pixels must be positive")
    path = Path(path)
    try:
        special = special_file_reason(os.stat(path).st_mode)
        if special is not None:
            raise ReadError(special)
        kind = detect_kind(path)
        if kind is None:
            if path.is_dir():
                raise ReadError("is a directory, not a file")
            if os.stat(path).st_size == 0:
                raise ReadError("empty file (0 bytes)")
            if nifti_name(path):
                raise ReadError(not_nifti_reason(path))
            raise ReadError("not a DICOM, PNG or JPEG file")
    except OSError as e:
        raise ReadError(os_reason(e)) from None
    if kind == "dicomdir":
        raise SkipFile("not an image: DICOMDIR (media storage directory)")
    try:
        if kind == "dicom":
            return read_dicom(
                path, image_size=image_size, salt=salt, max_frames=max_frames,
                max_pixels=max_pixels, ct_windows=ct_windows,
            )
        if kind == "nifti":
            return read_nifti(
                path, image_size=image_size, max_frames=max_frames, max_pixels=max_pixels,
                ct_windows=ct_windows,
            )
        return read_raster(path, kind, image_size=image_size, max_pixels=max_pixels)
    except (ReadError, SkipFile) as error:
        reason = printable(str(error))
        if reason == str(error):
            raise
        raise type(error)(reason) from error.__cause__
