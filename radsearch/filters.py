"""Metadata filters (modality, body part, view, study date) as SQL over the images table."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    if not re.fullmatch(r"\d{8}", digits):
        raise RadsearchError(f"invalid date {value!r}: use YYYY-MM-DD")
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


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

    def image_sql(self, table: str = "images") -> tuple[str, list]:
        """A WHERE clause over ``table`` (the images table) and its arguments."""
        clauses: list[str] = []
        args: list = []
        if self.modality:
            wanted = _MODALITY_ALIASES.get(self.modality.upper(), (self.modality.upper(),))
            clauses.append(f"UPPER({table}.modality) IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        for field in ("body_part", "view"):
            value = getattr(self, field)
            if value:
                clauses.append(f"UPPER({table}.{field}) = ?")
                args.append(value.upper())
        if self.date_from:
            clauses.append(f"{table}.study_date >= ?")
            args.append(self.date_from)
        if self.date_to:
            clauses.append(f"{table}.study_date <= ?")
            args.append(self.date_to)
        return (" AND ".join(clauses) or "1"), args
