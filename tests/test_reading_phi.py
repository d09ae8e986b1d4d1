"""Nothing identifying leaves the reader; identifiers only as salted hashes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from reading_helpers import SALT, edited_copy, pydicom_file, read

from radsearch.reading import salted_hash

PLANTED = {
    "PatientName": "Zyxwvut^Qwertyuiop",
    "PatientID": "PID-8839201-XQ",
    "IssuerOfPatientID": "ISSUER-77Q",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACC-5550123",
    "InstitutionName": "Hospital Plughwatt",
    "InstitutionAddress": "17 Frobnitz Lane",
    "ReferringPhysicianName": "Dr^Vrrkqz",
    "PerformingPhysicianName": "Dr^Jbbvvq",
    "OperatorsName": "Op^Kkzzyx",
    "PatientAddress": "99 Quuxstreet",
    "OtherPatientIDs": "OPID-4471",
    "StudyID": "STUDYID-3321",
    "StationName": "STATION-9Q9",
}


def _plant(ds: Dataset) -> None:
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)


def _leaks(text: str, ds: Dataset) -> list[str]:
    values = list(PLANTED.values()) + [
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    ]
    return [v for v in values if v in text or v.replace("^", " ") in text]


@pytest.mark.parametrize("name", ["CT_small.dcm", "test-SR.dcm", "MR_small_jp2klossless.dcm"])
def test_planted_identifiers_appear_nowhere(tmp_path: Path, name: str) -> None:
    path = edited_copy(name, tmp_path, _plant)
    result = read(path)
    ds = pydicom.dcmread(path)
    assert _leaks(repr(result), ds) == []
    assert _leaks(json.dumps(result.metadata), ds) == []
    assert _leaks(result.report_text or "", ds) == []


def test_metadata_is_json_and_has_no_identity_keys(tmp_path: Path) -> None:
    metadata = read(edited_copy("CT_small.dcm", tmp_path, _plant)).metadata
    assert json.loads(json.dumps(metadata)) == metadata
    assert not {k for k in metadata if "patient" in k or "name" in k or "institution" in k}


def test_salted_hash_is_truncated_hmac_sha256() -> None:
    expected = hmac.new(b"pepper", b"1.2.3", hashlib.sha256).hexdigest()[:32]
    assert salted_hash("1.2.3", "pepper") == expected
    assert salted_hash("1.2.3", "salt") != expected


def test_uid_hashes_use_the_salt(tmp_path: Path) -> None:
    path = edited_copy("CT_small.dcm", tmp_path, _plant)
    ds = pydicom.dcmread(path)
    result = read(path)
    assert result.study_uid_hash == salted_hash(str(ds.StudyInstanceUID), SALT)
    assert result.series_uid_hash == salted_hash(str(ds.SeriesInstanceUID), SALT)
    assert result.instance_uid_hash == salted_hash(str(ds.SOPInstanceUID), SALT)


def test_patient_hash_depends_on_id_and_issuer(tmp_path: Path) -> None:
    def issuer(value: str | None):
        def edit(ds: Dataset) -> None:
            ds.PatientID = "SAME-ID"
            if value is None:
                ds.pop("IssuerOfPatientID", None)
            else:
                ds.IssuerOfPatientID = value
        return edit

    def patient_hash(name: str, value: str | None, filename: str) -> str | None:
        return read(edited_copy(name, tmp_path, issuer(value), filename=filename)).patient_hash

    a = patient_hash("CT_small.dcm", "A", "a.dcm")
    a_again = patient_hash("MR_small.dcm", "A", "a2.dcm")
    b = patient_hash("CT_small.dcm", "B", "b.dcm")
    none = patient_hash("CT_small.dcm", None, "n.dcm")
    assert a == a_again and len({a, b, none}) == 3


def test_no_patient_id_no_patient_hash(tmp_path: Path) -> None:
    def drop(ds: Dataset) -> None:
        del ds.PatientID

    assert read(edited_copy("CT_small.dcm", tmp_path, drop)).patient_hash is None


def test_pydicom_warnings_and_logs_do_not_escape(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read(pydicom_file("MR_small_padded.dcm"))  # pydicom warns about its excess padding
    assert caught == []
    assert [r for r in caplog.records if r.name.startswith("pydicom")] == []
