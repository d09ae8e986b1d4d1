"""No patient-identifying DICOM value reaches the index files, the CLI output or the logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radsearch.cli import app

PLANTED = {
    "PatientName": "Zyxwvut^Qponmlk",
    "PatientID": "PID-83920471",
    "PatientBirthDate": "19020304",
    "AccessionNumber": "ACC77123409",
    "InstitutionName": "Hospital Vqxzrtyk",
    "ReferringPhysicianName": "Dr^Wqplmnbv",
    "OtherPatientIDs": "OPID-5512093",
    "PatientAddress": "12 Kvaxlor Street",
}
PLANTED_UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.101",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.102",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.103",
}


@pytest.fixture
def planted_study(tmp_path: Path) -> Path:
    folder = tmp_path / "studies" / "ct"
    folder.mkdir(parents=True)
    for number, name in enumerate(("CT_small.dcm", "MR_small.dcm")):
        ds = pydicom.dcmread(get_testdata_file(name))
        for keyword, value in {**PLANTED, **PLANTED_UIDS}.items():
            setattr(ds, keyword, value if "SOP" not in keyword else f"{value}.{number}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{number}.dcm")
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "report.dcm")
    assert PLANTED["PatientID"].encode() in (folder / "0.dcm").read_bytes()
    return folder.parent


def _index_bytes(index: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(index.rglob("*")) if path.is_file())


def test_planted_identifiers_are_nowhere(planted_study: Path, tmp_path: Path, capfd):
    index = tmp_path / "index"
    runner = CliRunner()
    outputs = []
    for args in (
        ["index", str(planted_study), "--index", str(index), "--model", "hashing-tiny", "--workers", "1"],
        ["stats", "--index", str(index), "--json"],
        ["search", "chest", "--index", str(index), "--json"],
        ["search", "chest", "--index", str(index), "--in", "reports"],
        ["similar", str(planted_study / "ct" / "0.dcm"), "--index", str(index)],
        ["show", PLANTED_UIDS["StudyInstanceUID"], "--index", str(index), "--json"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    captured = capfd.readouterr()
    # `show` found the study by its real UID although only a salted hash of it is stored.
    assert json.loads(outputs[-1])["series"]

    haystacks = {
        "index files": _index_bytes(index),
        "CLI output": "".join(outputs).encode(),
        "logs": (captured.out + captured.err).encode(),
    }
    values = list(PLANTED.values()) + list(PLANTED_UIDS.values())
    values += [PLANTED["PatientName"].replace("^", " "), PLANTED["PatientName"].split("^")[0]]
    for where, data in haystacks.items():
        for value in values:
            assert value.encode() not in data, f"{value!r} found in {where}"
