"""Identifiers leave the reader only as salted hashes."""

from __future__ import annotations

import hashlib
import hmac

from pydicom.dataset import Dataset

from radsearch.reading.values import as_text


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
