"""Make a rendered grayscale image model-ready: uint8, square, aspect preserved.

Also the optional CT rendering of one slice in several windows, one per channel (lung, mediastinum,
bone), for models that take them as their three input channels instead of replicated grayscale;
the named windows and presets an index may choose (``parse_ct_windows``), and how an index records
its choice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from radsearch.errors import RadsearchError
from radsearch.reading.pixels import percentile_window


class CtWindow(NamedTuple):
    name: str
    width: float  # HU
    level: float  # HU, the window's centre


# The three windows radiologists read a chest or abdomen CT in; one per channel, in this order.
CT_WINDOWS = (
    CtWindow("lung", 1500.0, -600.0),
    CtWindow("mediastinum", 350.0, 50.0),
    CtWindow("bone", 2000.0, 500.0),
)
# Common reading windows (W/L in HU); an index may choose any three of them, one per channel.
NAMED_CT_WINDOWS: dict[str, CtWindow] = {
    window.name: window
    for window in (
        *CT_WINDOWS,
        CtWindow("abdomen", 400.0, 50.0),
        CtWindow("liver", 150.0, 30.0),
        CtWindow("brain", 80.0, 40.0),
        CtWindow("subdural", 200.0, 80.0),
        CtWindow("stroke", 40.0, 40.0),
        CtWindow("skull", 2800.0, 600.0),
    )
}
# Presets: chest (lung, mediastinum, bone); head (brain, subdural, and skull: the W2800/L600 bone
# window of head CT), the triple head-CT haemorrhage models read.
CT_WINDOW_PRESETS: dict[str, tuple[CtWindow, ...]] = {
    "chest": CT_WINDOWS,
    "head": tuple(NAMED_CT_WINDOWS[name] for name in ("brain", "subdural", "skull")),
}
NO_CT_WINDOWS = "none"  # CT rendered like every other image: one gray channel
_CHANNELS = 3  # what the image encoders take


def prepare_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """2D grayscale -> uint8 (size, size).

    uint8 is taken as is; float as [0, 1] (clipped, NaN black); other integer types (16-bit
    stored values, raw Hounsfield units) are windowed from their 0.5th to 99.5th percentile.
    Resized (PIL bicubic, antialiased when shrinking) so the longest side equals ``size``,
    centred, zero padding.
    """
    if image.ndim != 2 or 0 in image.shape:
        raise ValueError(f"expected a non-empty 2D grayscale image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if image.dtype.kind in "iu" and image.dtype != np.uint8:
        image = percentile_window(image.astype(np.float32))
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


def render_ct_windows(hu: np.ndarray, windows: Sequence[CtWindow] = CT_WINDOWS) -> np.ndarray:
    """2D Hounsfield units -> uint8 ``(len(windows), H, W)``: each channel one linear window.

    A channel is ``(hu - (level - width / 2)) / width`` clipped to [0, 1], times 255, rounded
    (DICOM's LINEAR_EXACT window); NaN is black.
    """
    hu = np.asarray(hu)
    if hu.ndim != 2 or 0 in hu.shape:
        raise ValueError(f"expected a non-empty 2D image of Hounsfield units, got shape {hu.shape}")
    if not windows or any(w.width <= 0 for w in windows):
        raise ValueError("need at least one window, each of positive width")
    values = hu.astype(np.float32)
    out = np.empty((len(windows), *values.shape), dtype=np.uint8)
    for channel, window in zip(out, windows):
        scaled = (values - (window.level - window.width / 2)) * (255.0 / window.width)
        np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 255.0, out=scaled)
        channel[...] = scaled + 0.5
    return out


def prepare_channels_for_model(channels: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(C, H, W)`` (e.g. from :func:`render_ct_windows`) -> uint8 ``(C, size, size)``.

    Every channel is resized and padded exactly as :func:`prepare_for_model` does one image.
    """
    if channels.ndim != 3 or channels.dtype != np.uint8:
        raise ValueError(f"expected uint8 (C, H, W) channels, got {channels.dtype} {channels.shape}")
    return np.stack([prepare_for_model(channel, size) for channel in channels])


def parse_ct_windows(choice: str | Sequence[CtWindow]) -> tuple[CtWindow, ...]:
    """An index's CT rendering: ``"chest"``, ``"head"``, three names of ``NAMED_CT_WINDOWS``
    (``"lung,mediastinum,bone"``), ``"none"`` (grayscale: returns ``()``), or three CtWindows."""
    if isinstance(choice, str):
        text = choice.strip().lower()
        if text == NO_CT_WINDOWS:
            return ()
        if text in CT_WINDOW_PRESETS:
            return CT_WINDOW_PRESETS[text]
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in NAMED_CT_WINDOWS]
        if unknown or len(names) != _CHANNELS:
            raise RadsearchError(
                f"--ct-windows {choice!r}: give {', '.join(CT_WINDOW_PRESETS)}, {NO_CT_WINDOWS}, or "
                f"three of {', '.join(NAMED_CT_WINDOWS)} separated by commas")
        return tuple(NAMED_CT_WINDOWS[name] for name in names)
    windows = tuple(CtWindow(str(w[0]), float(w[1]), float(w[2])) for w in choice)
    if windows and (len(windows) != _CHANNELS or any(not w.width > 0 for w in windows)):
        raise RadsearchError(f"CT windows must be three (one per model input channel), each of "
                             f"positive width; got {describe_ct_windows(windows)}")
    return windows


def describe_ct_windows(windows: Sequence[CtWindow]) -> str:
    """One line for people: ``chest (lung W1500/L-600, ...)``, or ``none (grayscale)``."""
    if not windows:
        return f"{NO_CT_WINDOWS} (grayscale)"
    listed = ", ".join(f"{w.name} W{w.width:g}/L{w.level:g}" for w in windows)
    preset = next((name for name, ws in CT_WINDOW_PRESETS.items() if ws == tuple(windows)), None)
    return f"{preset} ({listed})" if preset else listed


def ct_windows_record(windows: Sequence[CtWindow]) -> str:
    """The canonical JSON an index keeps of its choice (``[]``: grayscale)."""
    return json.dumps([w._asdict() for w in windows], sort_keys=True)


def ct_windows_from_record(record: str | None) -> tuple[CtWindow, ...]:
    """The windows of a recorded choice; no record is an index made before the choice existed:
    grayscale."""
    if not record:
        return ()
    return tuple(CtWindow(str(w["name"]), float(w["width"]), float(w["level"]))
                 for w in json.loads(record))


def stack_frames(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Model-ready frames as one encoder batch: uint8 ``(N, S, S)`` when all are grayscale, else
    ``(N, 3, S, S)`` with grayscale frames replicated (encoders embed the two forms alike), so a
    batch may mix CT in windows with other images."""
    if all(frame.ndim == 2 for frame in frames):
        return np.stack(frames)
    return np.stack([
        np.broadcast_to(frame, (_CHANNELS, *frame.shape)) if frame.ndim == 2 else frame
        for frame in frames
    ])
