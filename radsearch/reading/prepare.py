"""Make a rendered grayscale image model-ready: uint8, square, aspect preserved."""

from __future__ import annotations

import numpy as np
from PIL import Image


def prepare_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """2D grayscale, float [0, 1] or uint8 -> uint8 (size, size).

    Resized (PIL bicubic, antialiased when shrinking) so the longest side equals ``size``,
    centred, zero padding.
    """
    if image.ndim != 2 or 0 in image.shape:
        raise ValueError(f"expected a non-empty 2D grayscale image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    # Resampled in float ("F" mode): more precise than 8-bit, and faster in PIL.
    scale = 1.0 if image.dtype == np.uint8 else 255.0
    values = np.ascontiguousarray(image, dtype=np.float32)
    height, width = values.shape
    factor = size / max(height, width)
    new_h = min(size, max(1, round(height * factor)))
    new_w = min(size, max(1, round(width * factor)))
    if (new_h, new_w) != (height, width):
        resized = Image.fromarray(values).resize((new_w, new_h), Image.Resampling.BICUBIC)
        values = np.asarray(resized)
    scaled = np.nan_to_num(values * scale, nan=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5  # round half up on the cast
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = scaled.astype(np.uint8)
    return out
