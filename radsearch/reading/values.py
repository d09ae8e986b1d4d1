"""Lenient conversions of DICOM element values (files in the wild hold malformed ones)."""

from __future__ import annotations

import math

from pydicom.multival import MultiValue


def as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def as_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def as_text(value: object) -> str | None:
    """Stripped text, None when absent or blank."""
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def first(value: object) -> object:
    """The first of a multi-valued element, the value itself otherwise."""
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value
