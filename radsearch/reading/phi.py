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
import itertools
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

from radsearch.reading.deid import REMOVED, deidentify
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
_TITLES = {"dr", "mr", "mrs", "ms", "miss", "prof", "sir"}  # a name's prefix, not its name
_MIN_VALUE = 3  # shorter IDs cannot be told from ordinary text

_HEADER_BYTES = 64 * 2**20  # the most of a file (or an inflated data set) a header read reads
_VALUE_BYTES = 64 * 1024  # longer values are left unread (an identifier is at most 10 kB of LT)
_META_BYTES = 64 * 1024


def salted_hash(value: str, salt: str) -> str:
    """HMAC-SHA256 keyed by ``salt``, hex, first 32 characters. In an index, ``salt`` is the
    secret key kept outside it (``radsearch.keys``), so the hashes cannot be reversed from it."""
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
    """Removes a data set's own identifying values from free text, in any letter case, then what
    the rules of :mod:`radsearch.reading.deid` find (names after titles and labels, record
    numbers, birth dates, phone numbers, addresses, ages over 89).

    Its own values are found in the other spellings people type: a person name whole, part by
    part and its parts run together ("JohnSmith", "SMITH_JOHN", "smithjohn"), a part also where it
    is joined to another word at a change of letter case or a digit ("ReportSmith", "Smith2"); an
    ID with or without its separators and run together with letters or other IDs
    ("PID83920471X", "pid 83920471"), its digits alone ("83920471", "8392-0471"); the birth date
    in numbers in any order, with or without zero padding, two-digit years, and with the month in
    words ("4 March 1902", "Mar 4th, 02"). A name the file does not hold (a relative's, say) is
    found only by the rules: descriptions and reports are cleaned, not guaranteed clean."""

    def __init__(self, *datasets: Dataset) -> None:
        values = [v for ds in datasets for keyword in _VALUES for v in _element_texts(ds, keyword)]
        values += [v for ds in datasets for item in _items(ds, "OtherPatientIDsSequence")
                   for v in _element_texts(item, "PatientID")]
        names = {n for ds in datasets for keyword in _PERSON_NAMES
                 for n in _name_parts(_element_texts(ds, keyword))}
        words = {v for v in values if len(v) >= _MIN_VALUE and not _is_embedded_id(v)}
        pieces = [rf"(?<![^\W_])(?:{_alternatives(words)})(?![^\W_])"] if words else []
        if names:
            # Name parts anywhere; _name_edges keeps those that stand alone or are joined at a
            # change of letter case, a digit or an underscore.
            pieces.append(rf"(?P<name>{_alternatives(names)})")
        embedded = [_id_pattern(v) for v in values if _is_embedded_id(v)]
        embedded += [_digits_pattern(run) for v in values for run in re.findall(r"\d{5,}", v)]
        if embedded:
            embedded.sort(key=len, reverse=True)
            pieces.append("|".join(embedded))
        pieces += [_date_pattern(v) for ds in datasets for keyword in _DATES
                   for v in _element_texts(ds, keyword)]
        pieces = [piece for piece in pieces if piece]
        self._pattern = re.compile("|".join(pieces), re.IGNORECASE) if pieces else None

    @classmethod
    def of_files(cls, paths: Sequence[str | Path]) -> Scrubber:
        """A Scrubber of the identifiers that the DICOM files ``paths`` hold (read from their
        headers, bounded as :func:`read_header`; a header that cannot be read adds none): for a
        report that comes from beside the files, not from inside them."""
        keywords = (*_PERSON_NAMES, *_VALUES, *_DATES, "OtherPatientIDsSequence")
        return cls(*(ds for path in paths if (ds := read_header(path, keywords)) is not None))

    def text(self, value: str | None) -> str | None:
        if not value:
            return value
        # The rules first: a title or label still stands before the name it introduces.
        value = deidentify(value)
        return self._pattern.sub(self._replacement, value) if self._pattern is not None else value

    @staticmethod
    def _replacement(match: re.Match[str]) -> str:
        if match.lastgroup == "name" and not _name_edges(match):
            return match.group()
        return REMOVED

    def metadata(self, meta: dict) -> dict:
        """``meta`` with its free text (descriptions, manufacturer) cleaned; coded fields are
        checked against their vocabularies where metadata is stored (``field_values``)."""
        for key in ("study_description", "series_description", "manufacturer"):
            meta[key] = self.text(meta.get(key))
        return meta


def _alternatives(needles: set[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(needles, key=lambda n: (-len(n), n)))


def _name_edges(match: re.Match[str]) -> bool:
    """A name part found inside a longer word counts where it stands alone or is joined to the
    word at a change of letter case ("JohnSmith"), a digit or an underscore; not inside an
    ordinary word ("Lingula" holds no "Li")."""
    text, start, end = match.string, match.start(), match.end()
    found = match.group()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    left = not before.isalpha() or (before.islower() and found[0].isupper())
    right = not after.isalpha() or (found[-1].islower() and after.isupper())
    return left and right


def _is_embedded_id(value: str) -> bool:
    """An ID long enough, and holding a digit, to be looked for inside other words."""
    return len(re.sub(r"[\W_]", "", value)) >= 5 and any(c.isdigit() for c in value)


def _id_pattern(value: str) -> str:
    """An ID with its separators optional or replaced: "PID-83920471" also as "pid83920471",
    "PID 83920471", "PID_83920471"."""
    chunks = [chunk for chunk in re.split(r"[\W_]+", value) if chunk]
    pattern = r"[\W_]{0,2}".join(re.escape(chunk) for chunk in chunks)
    return _between_digits(pattern, chunks[0][0], chunks[-1][-1])


def _digits_pattern(digits: str) -> str:
    """A run of digits, also written in groups ("8392 0471", "83-920-471")."""
    return _between_digits(r"[\s\-./]?".join(digits), "0", "0")


def _between_digits(pattern: str, first: str, last: str) -> str:
    """``pattern`` not continued by a digit where it begins or ends with one: letters and other
    IDs may touch it, more digits make another number."""
    return (r"(?<!\d)" if first.isdigit() else "") + f"(?:{pattern})" + (
        r"(?!\d)" if last.isdigit() else "")


_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december")


def _date_pattern(date: str) -> str:
    """A DICOM date (YYYYMMDD) in the forms people write it: numbers in any order with or without
    zero padding and with two- or four-digit years, the month in words or abbreviated, ordinal
    days; any other value as written."""
    if not re.fullmatch(r"\d{8}", date):
        return rf"(?<![^\W_]){re.escape(date)}(?![^\W_])" if len(date) >= _MIN_VALUE else ""
    year, month, day = date[:4], int(date[4:6]), int(date[6:])
    if not 1 <= month <= 12:
        return re.escape(date)
    name = _MONTH_NAMES[month - 1]
    y = rf"(?:{year}|'?{year[2:]})"
    m_number = rf"0?{month}" if month < 10 else str(month)
    m_word = rf"(?:{name}|{name[:3]}\.?{'|sept' if month == 9 else ''})"
    d = (rf"0?{day}" if day < 10 else str(day)) + r"(?:st|nd|rd|th)?"
    sep = r"[\s./\-,]{1,3}"
    forms = [
        rf"{year}{date[4:6]}{date[6:]}",
        rf"{d}{sep}{m_number}{sep}{y}", rf"{m_number}{sep}{d}{sep}{y}",
        rf"{year}{sep}{m_number}{sep}{d}",
        rf"(?:the\s+)?{d}(?:\s+of)?{sep}{m_word}{sep}{y}", rf"{m_word}{sep}{d}{sep}{y}",
        rf"{y}{sep}{m_word}{sep}{d}",
    ]
    return rf"(?<![\w.]){'|'.join(f'(?:{form})' for form in forms)}(?![\w])"


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
    alphabetic, ideographic and phonetic groups (prefixes and suffixes such as Dr are no names),
    and its words run together ("smithjohn", "johnsmith")."""
    for name in names:
        forms = [name]
        for group in name.split("="):
            parts = [part.strip() for part in group.split("^")[:3] if part.strip()]
            words = re.split(r"[\s,]+", " ".join(parts))
            forms += [" ".join(parts), *words, "".join(words),
                      *(a + b for a, b in itertools.permutations(words, 2))]
        yield from (form for form in forms if len(form.strip("^= ")) >= _MIN_NAME_PART
                    and form.strip(". ").lower() not in _TITLES)


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
