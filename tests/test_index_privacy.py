"""No patient-identifying DICOM value reaches the index, its back end, the logs or any output.

Unique values are planted in real DICOM files (pydicom's CT_small, MR_small and test-SR): in every
attribute of the DICOM PS3.15 Basic Application Level Confidentiality Profile that they carry and
in more that the profile lists (names, IDs, dates, times, UIDs, addresses, comments, institution,
operators, device serial, ...), also inside sequences and inside the free text radsearch keeps
(study and series descriptions, the report's text). Each back end indexes them; then every file
of the index folder and of the Qdrant store (raw bytes), every payload read back through the back
end, the logs, and the output of every command are searched for the values and their common
spellings (any letter case, person-name parts, ISO dates, hh:mm:ss times). None may be found.

Kept by design (the profile's Retain Longitudinal Temporal Information with Full Dates option, for
the date filters): the study date, checked to be there.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from radsearch.backends import PointFilter
from radsearch.catalog import COLLECTIONS
from radsearch.cli import app
from radsearch.indexer import index_folder
from radsearch.store import Store
from tests.backend_params import ALL_BACKENDS

# Top-level attributes planted in every file.
PLANTED = {
    "PatientName": "Zyxwvut^Qponmlk^Jhgfedc",
    "OtherPatientNames": "Xqwlorp^Bnmvcxz",
    "PatientBirthName": "Yrtvbnq^Gfdsazx",
    "PatientMotherBirthName": "Mvklrtz^Hgqwerp",
    "ReferringPhysicianName": "Dr^Wqplmnbv",
    "PerformingPhysicianName": "Plqzvrk^Tmwxnbv",
    "NameOfPhysiciansReadingStudy": "Rdgzxqv^Lkjwpfm",
    "PhysiciansOfRecord": "Kzqvbnl^Fpxrwts",
    "RequestingPhysician": "Jvxqpzm^Ntrwkgh",
    "OperatorsName": "Opqxzrv^Wmblkdc",
    "PatientID": "PID-83920471",
    "OtherPatientIDs": "OPID-5512093",
    "IssuerOfPatientID": "ISSUER-QZX7731",
    "AccessionNumber": "ACC77123409",
    "StudyID": "SID90817",
    "MedicalRecordLocator": "MRL-4471902",
    "AdmissionID": "ADM-3390127",
    "DeviceSerialNumber": "DSN-66120943",
    "StationName": "STN-QZX771",
    "InstitutionName": "Hospital Vqxzrtyk",
    "InstitutionAddress": "77 Brqzlam Avenue",
    "InstitutionalDepartmentName": "Dept Kwzqmrtv",
    "PatientAddress": "12 Kvaxlor Street",
    "PatientTelephoneNumbers": "555-0193-7741",
    "PatientWeight": "413.27",
    "PatientSize": "2.3719",
    "Occupation": "Occup Zqxvlmr",
    "EthnicGroup": "Ethn Qzxvmk",
    "ImageComments": "Comment Tzvqxml",
    "AdditionalPatientHistory": "History Wqzrxlp",
    "PatientComments": "PatComment Zmqxvr",
    "ProtocolName": "Protocol Qzvxmwl",
    "RequestedProcedureDescription": "ReqProc Vzqxlmt",
    "PerformedProcedureStepDescription": "PPS Kqzxvwrt",
    "DerivationDescription": "Deriv Qmzxlvb",
    "PatientBirthDate": "19020304",
    "InstanceCreationDate": "19110506",
    "SeriesDate": "19120708",
    "AcquisitionDate": "19130910",
    "ContentDate": "19141112",
    "PatientBirthTime": "125108.463728",
    "StudyTime": "071523.918273",
    "SeriesTime": "081634.827364",
    "AcquisitionTime": "092745.736455",
    "ContentTime": "103856.645546",
    "InstanceCreationTime": "114957.554637",
    "AcquisitionDateTime": "19150102030405.123456",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.104",
    "InstanceCreatorUID": "1.2.826.0.1.3680043.8.498.105",
}
PLANTED_UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.101",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.102",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.103",
}  # file N gets series and instance UIDs ending in ".N"
# Planted inside sequences.
NESTED = {
    "OtherPatientIDsSequence/PatientID": "OPIDSEQ-7712094",
    "VerifyingObserverSequence/VerifyingObserverName": "Vobsqzt^Rtxklmn",
    "VerifyingObserverSequence/VerifyingOrganization": "Org Qzvlmxtr",
}
STUDY_DATE = "19010203"  # kept, as 1901-02-03: the date filters need it
# Free text radsearch keeps, cleaned: each repeats identifiers of its file, spelled otherwise.
STUDY_DESCRIPTION = "CT CHEST zyxwvut PID-83920471"
SERIES_DESCRIPTION = "AXIAL QPONMLK acc77123409"
REPORT_LINE = ("Discussed with Dr Wqplmnbv about Qponmlk Zyxwvut (MRN pid-83920471, born "
               "04.03.1902) of hospital vqxzrtyk.")
FILES = ("CT_small.dcm", "MR_small.dcm", "test-SR.dcm")


def _plant(ds: Dataset, number: int) -> None:
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    for keyword, value in PLANTED_UIDS.items():
        setattr(ds, keyword, value if keyword == "StudyInstanceUID" else f"{value}.{number}")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = STUDY_DATE
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.SeriesDescription = SERIES_DESCRIPTION
    other = Dataset()
    other.PatientID = NESTED["OtherPatientIDsSequence/PatientID"]
    ds.OtherPatientIDsSequence = Sequence([other])
    if "ContentSequence" in ds:  # the report: a line of its text names the patient
        text_items = [item for item in ds.iterall()
                      if isinstance(item.value, str) and item.keyword == "TextValue"]
        text_items[0].value = REPORT_LINE
        observer = Dataset()
        observer.VerifyingObserverName = NESTED["VerifyingObserverSequence/VerifyingObserverName"]
        observer.VerifyingOrganization = NESTED["VerifyingObserverSequence/VerifyingOrganization"]
        observer.VerificationDateTime = "19160203040506"
        ds.VerifyingObserverSequence = Sequence([observer])


@pytest.fixture
def planted_study(tmp_path: Path) -> Path:
    """A study folder of three real DICOM files (CT, MR, SR) holding the planted values."""
    folder = tmp_path / "studies" / "ct"
    folder.mkdir(parents=True)
    for number, name in enumerate(FILES):
        ds = pydicom.dcmread(get_testdata_file(name))
        _plant(ds, number)
        ds.save_as(folder / f"{number}.dcm")
    data = (folder / "2.dcm").read_bytes()
    assert PLANTED["PatientID"].encode() in data and b"Wqplmnbv about" in data
    return folder.parent


def planted_needles() -> dict[str, str]:
    """Each planted value and its common spellings (lower case: the search ignores case) ->
    the attribute it was planted in."""
    needles: dict[str, str] = {}
    for keyword, value in {**PLANTED, **PLANTED_UIDS, **NESTED}.items():
        forms = {value}
        if "^" in value:  # a person name: each part, and the parts in either order
            parts = [part for part in value.split("^") if part and part != "Dr"]
            forms |= {*parts, " ".join(parts), " ".join(reversed(parts)), ", ".join(parts)}
        if re.fullmatch(r"\d{8}", value):  # a date
            forms.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        if re.fullmatch(r"\d{6}\.\d+", value):  # a time
            forms.add(f"{value[:2]}:{value[2:4]}:{value[4:6]}")
        needles.update((form.lower(), keyword) for form in forms)
    return needles


def find_planted(haystacks: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(where, spelling, attribute) of every planted value found, whatever its letter case."""
    needles = planted_needles()
    found = []
    for where, data in haystacks.items():
        data = data.lower()
        found += [(where, needle, keyword) for needle, keyword in needles.items()
                  if needle.encode() in data]
    return found


def folder_bytes(folder: Path) -> bytes:
    """The bytes of every file under ``folder``, long runs of zeros shortened: Qdrant preallocates
    hundreds of MB of them (sparse files, whose holes are skipped unread)."""
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            parts += [_ZEROS.sub(b"\0", data) for data in _data_extents(path)]
            parts.append(b"\n")
    return b"".join(parts)


def _data_extents(path: Path) -> list[bytes]:
    """The parts of a file that are not holes (all of it where the file system cannot tell)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        extents, position = [], 0
        while position < size:
            try:
                start = os.lseek(handle.fileno(), position, os.SEEK_DATA)
                end = os.lseek(handle.fileno(), start, os.SEEK_HOLE)
            except OSError as error:
                if error.errno != errno.ENXIO:  # no hole support here: read it all
                    handle.seek(position)
                    extents.append(handle.read())
                break  # ENXIO: nothing but a hole after position
            handle.seek(start)
            extents.append(handle.read(end - start))
            position = end
        return extents


_ZEROS = re.compile(b"\0{1024,}")


def backend_payloads(index: Path) -> bytes:
    """Every payload and the store's record, read back through the back end (a store may
    compress what it writes)."""
    with Store.open_for_reading(index) as store:
        backend = store.backend
        data = [backend.metadata() or {}]
        for name in COLLECTIONS:
            data += [record.payload for record in
                     backend.fetch(name, PointFilter(), max(backend.count(name), 1))]
    return json.dumps(data, ensure_ascii=False).encode()


BACKENDS = ALL_BACKENDS


def backend_args(kind: str, tmp_path: Path) -> list[str]:
    """``index`` options for a back end; qdrant-client's local mode stands in for a server."""
    if kind == "qdrant":
        return ["--backend", "qdrant", "--url", str(tmp_path / "qdrant-local")]
    return ["--backend", kind]


def run_commands(index: Path, study: Path, index_args: list[str]) -> list[str]:
    """Every command's output (stdout and stderr) over an index of ``study``, plain and --json;
    each must succeed. ``index_args`` choose the back end."""
    file = str(study / "ct" / "0.dcm")
    uid = PLANTED_UIDS["StudyInstanceUID"]
    at = ["--index", str(index)]
    commands = [
        ["index", str(study), *at, "--model", "hashing-tiny", "--workers", "1", *index_args],
        ["index", str(study), *at, "--model", "hashing-tiny", "--workers", "0", "--json"],
        ["stats", *at], ["stats", *at, "--json"],
        ["search", "chest", *at], ["search", "chest", *at, "--json"],
        ["search", "pleural effusion", *at, "--in", "reports"],
        ["search", "pleural effusion", *at, "--in", "reports", "--json"],
        ["similar", file, *at], ["similar", file, *at, "--json"], ["similar", uid, *at, "--json"],
        ["show", uid, *at], ["show", uid, *at, "--json"], ["show", file, *at],
        ["classify", file, *at, "--labels", "CT, MRI, X-ray"],
        ["classify", uid, *at, "--label-set", "modality", "--json"],
    ]
    runner = CliRunner()
    outputs = []
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        output = result.output
        if uid in args and "--json" in args:  # the query, echoed back, is the user's own input
            data = json.loads(output)
            assert data.pop("query", uid) == uid
            output = json.dumps(data)
        outputs.append(output)
    return outputs


@pytest.mark.parametrize("kind", BACKENDS)
def test_planted_identifiers_are_nowhere(kind, planted_study: Path, tmp_path: Path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    index = tmp_path / "index"

    outputs = run_commands(index, planted_study, backend_args(kind, tmp_path))

    captured = capfd.readouterr()
    show = json.loads(outputs[12])
    # `show` found the study by its real UID, although only a salted hash of it is stored.
    assert sorted(s["modality"] for s in show["series"]) == ["CT", "MR"] and show["reports"]
    haystacks = {
        "index folder": folder_bytes(index),
        "payloads": backend_payloads(index),
        "command output": "\n".join(outputs).encode(),
        "logs": (caplog.text + captured.out + captured.err).encode(),
    }
    if kind == "qdrant":
        haystacks["qdrant store"] = folder_bytes(tmp_path / "qdrant-local")
    found = find_planted(haystacks)
    print(f"\nplanted identifiers found ({kind}): {len(found)}")
    assert found == []

    # Kept, cleaned: the words of the descriptions and the report that name no one.
    assert show["study_date"] == "1901-02-03"
    assert show["description"] == "CT CHEST [REMOVED] [REMOVED]"
    assert show["series"][0]["description"] == "AXIAL [REMOVED] [REMOVED]"
    report = show["reports"][0]["text"]
    assert "Discussed with [REMOVED] about [REMOVED] [REMOVED] (MRN [REMOVED], born " \
           "[REMOVED]) of [REMOVED]." in report
    assert b"1901-02-03" in haystacks["payloads"]


def test_the_planted_values_are_found_where_they_are(planted_study: Path):
    """The search itself works: it finds each planted value, in any letter case, in the files."""
    data = folder_bytes(planted_study).upper()
    found = {keyword for _, _, keyword in find_planted({"files": data})}
    assert found == set(PLANTED) | set(PLANTED_UIDS) | set(NESTED)


def test_shard_placement_shows_no_identifier(planted_study: Path, tmp_path: Path, capfd, caplog):
    """`--shard` places a file by its Study Instance UID, read from the header: silently, since
    pydicom's warning about a malformed value quotes the value."""
    malformed = "1.2.826.Zyxwvut.Qponmlk"  # letters: not a valid UID, so pydicom would warn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted((planted_study / "ct").glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = malformed
            ds.save_as(path)
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.DEBUG)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = index_folder(planted_study, index=tmp_path / "index", model="hashing-tiny",
                               workers=0, shard="1/1")

    assert (summary.indexed, summary.failed) == (3, 0)
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err + "".join(str(w.message) for w in caught)
    assert find_planted({"logs": logs.encode()}) == []


def test_free_text_loses_the_file_identifiers_and_keeps_the_rest():
    """The cleaning of descriptions and reports: whole words in any letter case, person names
    whole and part by part, the birth date as people write it; an empty name or an ID too short
    to tell from ordinary text removes nothing."""
    from radsearch.reading.phi import Scrubber

    ds = Dataset()
    ds.PatientName = "Li^Wu"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19800102"
    text = "Lingula clear. LI WU (mrn-0042), born 02.01.1980, seen 1980-01-02; Wu's film"
    assert Scrubber(ds).text(text) == \
        "Lingula clear. [REMOVED] ([REMOVED]), born [REMOVED], seen [REMOVED]; [REMOVED]'s film"
    blank = Dataset()
    blank.PatientName = "^^^^"
    blank.PatientID = "12"
    assert Scrubber(blank).text("CT 12 mm nodule") == "CT 12 mm nodule"
    assert Scrubber(Dataset()).text("no identifiers here") == "no identifiers here"
