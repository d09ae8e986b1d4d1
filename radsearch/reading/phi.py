"""Patient-identifying data: what the index may and may not hold.

By default the index follows the DICOM PS3.15 Basic Application Level Confidentiality Profile
with two of its options: *Retain Longitudinal Temporal Information with Full Dates* for the study
date alone (the date filters need it), and *Clean Descriptors* / *Clean Structured Content* for the
free text it keeps (study and series descriptions, Structured Report text), from which the file's
own identifying values are removed (:class:`Scrubber`). Identifiers leave the reader only as
salted hashes (:func:`identity_hashes`). With ``keep_phi`` (an explicit opt-in) the attributes of
:data:`KEPT_ATTRIBUTES` are also stored in clear, in the catalog only (:func:`read_identifiers`).

Headers are read again in two places (sharding, keep_phi) with :func:`read_header`, which bounds
what a hostile file can make it read or allocate.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

from radsearch.reading.detect import file_meta_end
from radsearch.reading.guarded_io import BoundedReader, quiet_pydicom
from radsearch.reading.values import as_text

# What `--keep-phi` stores in clear, in the catalog only (never in a vector payload): enough to
# find a study again in the PACS and to tell whose it is.
KEPT_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "InstitutionName",
    "StudyDescription",  # as written, before the Clean Descriptors step
    "SeriesDescription",
)
SERIES_ATTRIBUTES: tuple[str, ...] = ("SeriesInstanceUID", "SeriesDescription")
STUDY_ATTRIBUTES: tuple[str, ...] = tuple(
    keyword for keyword in KEPT_ATTRIBUTES if keyword not in (*SERIES_ATTRIBUTES, "SOPInstanceUID")
)

# Identifying values a description or a report may repeat (names, IDs, places, the birth date,
# UIDs); the Scrubber removes them from free text. Values too common to remove from text
# without damage (sex, age, ethnic group, occupation, rank) are not among them.
_PERSON_NAMES = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "ResponsiblePerson",
)
_VALUES = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "MedicalRecordLocator",
    "AdmissionID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
_DATES = ("PatientBirthDate",)
_MIN_NAME_PART = 2  # "Li", "Wu"
_MIN_VALUE = 3  # shorter IDs cannot be told from ordinary text
REMOVED = "[REMOVED]"  # upper case: rich would take "[removed]" for a style tag

_HEADER_BYTES = 64 * 2**20  # the most of a file (or an inflated data set) a header read reads
_VALUE_BYTES = 64 * 1024  # longer values are left unread (an identifier is at most 10 kB of LT)
_META_BYTES = 64 * 1024


def salted_hash(value: str, salt: str) -> str:
    """HMAC-SHA256 keyed by ``salt``, hex, first 32 characters."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def identity_hashes(ds: Dataset, salt: str) -> dict[str, str | None]:
    """Hashed study/series/instance UIDs and patient, keyed like the ReadResult fields."""
    hashes: dict[str, str | None] = {}
    for field, keyword in (
        ("study_uid_hash", "StudyInstanceUID"),
        ("series_uid_hash", "SeriesInstanceUID"),
        ("instance_uid_hash", "SOPInstanceUID"),
    ):
        uid = as_text(ds.get(keyword))
        hashes[field] = salted_hash(uid, salt) if uid else None
    patient_id = as_text(ds.get("PatientID"))
    if patient_id is None:
        hashes["patient_hash"] = None
    else:
        # The same ID from two issuers is two patients.
        issuer = as_text(ds.get("IssuerOfPatientID"))
        key = patient_id if issuer is None else f"{patient_id}\x1f{issuer}"
        hashes["patient_hash"] = salted_hash(key, salt)
    return hashes


class Scrubber:
    """Removes a data set's own identifying values from free text, whole words only and in any
    letter case: each person name whole and part by part, IDs, places, UIDs, and the birth date
    in its common spellings. A name the file does not hold (a relative's, say) cannot be known
    and stays: descriptions and reports are cleaned, not guaranteed clean."""

    def __init__(self, ds: Dataset) -> None:
        values = [v for keyword in _VALUES for v in _element_texts(ds, keyword)]
        values += [v for item in _items(ds, "OtherPatientIDsSequence")
                   for v in _element_texts(item, "PatientID")]
        needles = {
            *(n for keyword in _PERSON_NAMES for n in _name_parts(_element_texts(ds, keyword))),
            *(d for keyword in _DATES for v in _element_texts(ds, keyword) for d in _spellings(v)),
            *(v for v in values if len(v) >= _MIN_VALUE),
        }
        alternatives = "|".join(re.escape(n) for n in sorted(needles, key=lambda n: (-len(n), n)))
        self._pattern = (
            re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)
            if alternatives
            else None
        )

    def text(self, value: str | None) -> str | None:
        if not value or self._pattern is None:
            return value
        return self._pattern.sub(REMOVED, value)

    def metadata(self, meta: dict) -> dict:
        """``meta`` with its descriptions cleaned (the other metadata keys hold no free text)."""
        for key in ("study_description", "series_description"):
            meta[key] = self.text(meta.get(key))
        return meta


def _element_texts(ds: Dataset, keyword: str) -> list[str]:
    """The element's values as text, one per value of a multi-valued element."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert is no text to look for
        return []
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [text for item in values if (text := as_text(item))]


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence element; none when it is absent or cannot be read."""
    try:
        return list(ds.get(keyword) or ())
    except Exception:  # noqa: BLE001 - as in _element_texts
        return []


def _name_parts(names: list[str]) -> Iterator[str]:
    """A person name as written and as words: family, given and middle names of each of its
    alphabetic, ideographic and phonetic groups (prefixes and suffixes such as Dr are no names)."""
    for name in names:
        forms = [name]
        for group in name.split("="):
            parts = [part.strip() for part in group.split("^")[:3] if part.strip()]
            forms += [" ".join(parts), *re.split(r"[\s,]+", " ".join(parts))]
        yield from (form for form in forms if len(form.strip("^= ")) >= _MIN_NAME_PART)


def _spellings(date: str) -> list[str]:
    """A DICOM date (YYYYMMDD) as written and in the forms people type it."""
    if not re.fullmatch(r"\d{8}", date):
        return [date] if len(date) >= _MIN_VALUE else []
    y, m, d = date[:4], date[4:6], date[6:]
    return [date, f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{y}/{m}/{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}",
            f"{m}/{d}/{y}", f"{d}-{m}-{y}", f"{m}-{d}-{y}"]


# --- bounded header reads --------------------------------------------------------------------


def read_header(path: str | Path, keywords: Sequence[str]) -> Dataset | None:
    """The top-level elements ``keywords`` of a DICOM file's data set, or None when it cannot be
    read. Bounded for hostile files: parsing stops after the last element asked for, no read asks
    for more than the file (or 64 MiB) holds, values over 64 kB are left unread (absent here), a
    deflated data set is inflated no further than 64 MiB, and pydicom's warnings, which may quote
    values, are silenced."""
    tags = sorted(tag_for_keyword(keyword) for keyword in keywords)
    last = tags[-1]

    def stop(tag: int, vr: object, length: int) -> bool:
        return tag > last

    try:
        with quiet_pydicom(), open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(_META_BYTES)
            start = file_meta_end(head) if head[128:132] == b"DICM" else None
            if start is not None and str(DeflatedExplicitVRLittleEndian).encode() in head[:start]:
                handle.seek(start)
                inflated = _InflatingReader(handle, _HEADER_BYTES)
                ds = read_dataset(inflated, False, True, stop_when=stop, defer_size=_VALUE_BYTES,
                                  specific_tags=tags)
            else:
                handle.seek(0)
                reader = BoundedReader(handle, min(size, _HEADER_BYTES))
                ds = read_partial(reader, stop_when=stop, defer_size=_VALUE_BYTES, force=True,
                                  specific_tags=tags)
            return _loaded(ds)
    except Exception:  # noqa: BLE001 - an unreadable header is no header
        return None


def read_identifiers(path: str | Path) -> dict[str, str]:
    """The :data:`KEPT_ATTRIBUTES` a DICOM file holds, as text (multiple values joined by
    backslashes, person names as written); empty when its header cannot be read."""
    ds = read_header(path, KEPT_ATTRIBUTES)
    if ds is None:
        return {}
    found = {}
    for keyword in KEPT_ATTRIBUTES:
        texts = [text for text in _element_texts(ds, keyword) if text.strip("^= ")]
        if texts:
            found[keyword] = "\\".join(texts)
    return found


def _loaded(ds: Dataset) -> Dataset:
    """``ds`` without the values left unread (deferred), the others converted now, while
    pydicom's warnings are silenced."""
    for tag in list(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        if isinstance(element, RawDataElement) and element.value is None and element.length:
            del ds[tag]
        else:
            ds[tag]  # noqa: B018 - converts the raw value in place
    return ds


class _InflatingReader:
    """A deflated data set, inflated only as far as it is read and never past ``limit`` bytes."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self._handle = handle
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._data = bytearray()
        self._pos = 0
        self._limit = limit

    def _fill(self, end: int) -> None:
        end = min(end, self._limit)
        while len(self._data) < end and not self._inflater.eof:
            chunk = self._inflater.unconsumed_tail or self._handle.read(1 << 16)
            if not chunk:
                return
            self._data += self._inflater.decompress(chunk, end - len(self._data))

    def read(self, n: int | None = -1) -> bytes:
        end = self._limit if n is None or n < 0 else self._pos + n
        self._fill(end)
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._fill(self._limit)
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(self._data)}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos
