"""PNG and JPEG files: decode with PIL into one model-ready frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radsearch.reading.pixels import percentile_window
from radsearch.reading.prepare import prepare_for_model
from radsearch.reading.types import (
    FileKind,
    ImageFrame,
    ReadError,
    ReadResult,
    empty_metadata,
    os_reason,
    short_reason,
)

_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG"}


def read_raster(
    path: Path, kind: FileKind, *, image_size: int, max_pixels: int
) -> ReadResult:
    """One frame from a PNG or JPEG: EXIF orientation applied, grayscale, model-ready."""
    label = _PIL_FORMAT[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            gray = _decode(path, label, image_size=image_size, max_pixels=max_pixels)
        except ReadError:
            raise
        except MemoryError:
            raise ReadError("out of memory while reading the image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ReadError("image too large: over PIL's decompression-bomb limit") from None
        except UnidentifiedImageError:
            raise ReadError(f"not a valid {label} image (unrecognised or truncated)") from None
        except OSError as e:
            if e.errno is not None:
                raise ReadError(os_reason(e)) from None
            if "truncated" in str(e).lower():
                raise ReadError(f"truncated {label} image") from None
            raise ReadError(f"cannot decode {label} image: {short_reason(e)}") from e
        except Exception as e:  # anything else from PIL or its plugins: one line
            raise ReadError(f"cannot decode {label} image: {short_reason(e)}") from e
    metadata = empty_metadata()
    metadata.update(rows=gray.shape[0], columns=gray.shape[1], n_frames=1)
    frame = ImageFrame(0, prepare_for_model(gray, image_size), None, None)
    return ReadResult(str(path), kind, None, None, None, None, metadata, [frame], None, [])


def _decode(path: Path, label: str, *, image_size: int, max_pixels: int) -> np.ndarray:
    """Grayscale pixels: uint8, or float32 in [0, 1] for high bit depths."""
    with Image.open(path, formats=[label]) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ReadError(
                f"declared image size {width}x{height} = {width * height} pixels is too large "
                f"(limit {max_pixels})"
            )
        if label == "JPEG":
            img.draft(None, (image_size, image_size))  # DCT-domain downscale, never below size
        img.load()
        img = ImageOps.exif_transpose(img)
    if img.mode in _HIGH_DEPTH_MODES:
        return percentile_window(np.asarray(img).astype(np.float32))
    if img.mode == "P":  # through RGBA, so palette transparency is honoured
        img = img.convert("RGBA")
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img)
