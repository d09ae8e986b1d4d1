"""Metadata filters (modality, body part, view, study date), as the back ends apply them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from radsearch.storage.backends.base import PointFilter
from radsearch.errors import RadsearchError
from radsearch.terms import FIELDS, filter_values


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
        """These filters on the back ends' payloads (defined terms, ``study_day`` YYYYMMDD)."""
        any_of: dict[str, tuple[str, ...]] = {}
        for field in FIELDS:  # MRI and MR, Transverse and AXIAL: one filter (see radsearch.terms)
            value = getattr(self, field)
            if value and value.strip():
                any_of[field] = filter_values(field, value)
        days = tuple(int(d.replace("-", "")) if d else None for d in (self.date_from, self.date_to))
        return PointFilter.build(any_of=any_of, ranges={"study_day": days})
