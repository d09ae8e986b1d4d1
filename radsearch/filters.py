"""Metadata filters (modality, body part, view, study date), as the back ends apply them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from radsearch.backends.base import PointFilter
from radsearch.errors import RadsearchError

# What users type -> the DICOM Modality values it means.
_MODALITY_ALIASES = {
    "MRI": ("MR",),
    "MR": ("MR", "MRI"),
    "CT": ("CT",),
    "XRAY": ("CR", "DX", "XR", "X-RAY", "XRAY", "RG"),
    "X-RAY": ("CR", "DX", "XR", "X-RAY", "XRAY", "RG"),
    "XR": ("CR", "DX", "XR", "X-RAY", "XRAY", "RG"),
    "US": ("US", "ULTRASOUND"),
    "ULTRASOUND": ("US", "ULTRASOUND"),
}


def normalise_date(value: str | None) -> str | None:
    """'YYYY-MM-DD' or 'YYYYMMDD' -> 'YYYY-MM-DD'."""
    if value is None:
        return None
    digits = value.replace("-", "").strip()
    try:
        if not re.fullmatch(r"\d{8}", digits):
            raise ValueError
        # A real calendar day: 2020-13-45 would otherwise filter on nothing, silently.
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()
    except ValueError:
        raise RadsearchError(f"invalid date {value!r}: use YYYY-MM-DD") from None


@dataclass(frozen=True)
class Filters:
    modality: str | None = None
    body_part: str | None = None
    view: str | None = None
    date_from: str | None = None
    date_to: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "date_from", normalise_date(self.date_from))
        object.__setattr__(self, "date_to", normalise_date(self.date_to))

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    def point_filter(self) -> PointFilter:
        """These filters on the back ends' payloads (upper-cased keywords, ``study_day`` YYYYMMDD)."""
        any_of: dict[str, tuple[str, ...]] = {}
        if self.modality:
            wanted = self.modality.strip().upper()
            any_of["modality"] = _MODALITY_ALIASES.get(wanted, (wanted,))
        for field in ("body_part", "view"):
            value = getattr(self, field)
            if value:
                any_of[field] = (value.strip().upper(),)
        days = tuple(int(d.replace("-", "")) if d else None for d in (self.date_from, self.date_to))
        return PointFilter.build(any_of=any_of, ranges={"study_day": days})
