"""The safe, JSON-able metadata of a DICOM object: technique and description, never identity."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.uid import UID

from radsearch.reading.geometry import imaging_plane
from radsearch.reading.sopclass import sop_class_uid
from radsearch.reading.types import empty_metadata
from radsearch.reading.values import as_int, as_text

_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})")
_CROSS_SECTIONAL = {"CT", "MR", "PT", "NM"}


def _uid_name(uid: UID | None) -> str | None:
    return (uid.name or str(uid)) if uid else None


def _date(value: object) -> str | None:
    text = as_text(value)
    match = _DATE.match(text.replace("-", "").replace(".", "")) if text else None
    return f"{match[1]}-{match[2]}-{match[3]}" if match else None


def _view(ds: Dataset) -> str | None:
    position = as_text(ds.get("ViewPosition"))
    laterality = as_text(ds.get("ImageLaterality")) or as_text(ds.get("Laterality"))
    if position:
        return f"{laterality} {position}" if laterality else position
    if as_text(ds.get("Modality")) in _CROSS_SECTIONAL:
        return imaging_plane(ds)
    return None


def dicom_metadata(ds: Dataset, *, with_image: bool) -> dict:
    """Metadata keys of ReadResult; image keys stay None when ``with_image`` is False (SR)."""
    meta = empty_metadata()
    meta.update(
        modality=as_text(ds.get("Modality")),
        body_part=as_text(ds.get("BodyPartExamined")),
        view=_view(ds),
        study_date=_date(ds.get("StudyDate")),
        study_description=as_text(ds.get("StudyDescription")),
        series_description=as_text(ds.get("SeriesDescription")),
        manufacturer=as_text(ds.get("Manufacturer")),
        transfer_syntax=_uid_name(ds.file_meta.get("TransferSyntaxUID")),
        sop_class=_uid_name(sop_class_uid(ds)),
        series_number=as_int(ds.get("SeriesNumber")),
    )
    if with_image:
        meta.update(
            rows=as_int(ds.get("Rows")),
            columns=as_int(ds.get("Columns")),
            n_frames=as_int(ds.get("NumberOfFrames")) or 1,
            photometric=as_text(ds.get("PhotometricInterpretation")),
        )
    return meta
