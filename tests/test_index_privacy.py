"""No patient-identifying value reaches the index, its back end, the logs or any output.

Unique values are planted in real DICOM files (pydicom's CT_small, MR_small and test-SR): in every
attribute of the DICOM PS3.15 Basic Application Level Confidentiality Profile that they carry and
in more that the profile lists (names, IDs, dates, times, UIDs, addresses, comments, institution,
operators, device serial, ...), also inside sequences, inside the free text radsearch keeps
(study and series descriptions, the report's text, in other spellings: names and IDs run together,
the birth date in words) and in metadata fields (manufacturer, body part, view). More are planted
in report files - the study folder's report.txt repeating its DICOM's identifiers, sidecar
X.txt/X.json of PNG images, a reports CSV's text and metadata columns - as names after titles and
labels, record numbers, birth dates, phone numbers, e-mail and street addresses. Each back end
indexes them; then every file of the index folder and of the Qdrant store (raw bytes), every
payload read back through the back end, the logs, and the output of every command are searched
for the values and their common spellings (any letter case, person-name parts run together, the
digits of IDs, dates as people write them, hh:mm:ss times). None may be found.

Kept by design (the profile's Retain Longitudinal Temporal Information with Full Dates option, for
the date filters): the study date, checked to be there.
"""

from __future__ import annotations

import csv
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

from radsearch.storage.backends import PointFilter
from radsearch.storage.catalog import COLLECTIONS
from radsearch.cli import app
from radsearch.indexer import index_folder
from radsearch.storage.store import Store
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
    # Identifiers typed into metadata fields: the name and ID in the manufacturer, values no body
    # part or view is called
    "Manufacturer": "Mfr Zyxwvut PID83920471",
    "BodyPartExamined": "XQZVLMRT",
    "ViewPosition": "VWQZLK",
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
STUDY_DESCRIPTION = "CT CHEST zyxwvut PID-83920471 QponmlkZyxwvut"
SERIES_DESCRIPTION = "AXIAL QPONMLK acc77123409 pid83920471ACC77123409"
REPORT_LINE = ("Discussed with Dr Wqplmnbv about Qponmlk Zyxwvut (MRN pid-83920471, born "
               "04.03.1902) of hospital vqxzrtyk. Also ZYXWVUTQPONMLK, id 83920471acc77123409, "
               "born 4 March 1902 (3/4/02).")
# Report files: identifiers of no DICOM attribute (found by the rules) and of the study's DICOM.
FOLDER_REPORT = (
    "FINDINGS: Pleural effusion on the right. Report for ZYXWVUT, QPONMLK (PID83920471), born "
    "4 March 1902; accession acc77123409. Discussed with Dr. Vmqzrtx on the phone 317-555-0148; "
    "e-mail qzvx.mlrk@example.org. Patient lives at 41 Wqzxrvm Road. 93-year-old woman.\n"
    "IMPRESSION: Right effusion.")
SIDECAR_TEXT = ("Patient Kqzvlrt Mxwpqn, MRN 66120944. DOB: 05/06/1911.\n"
                "FINDINGS: Small nodule in the right upper lobe.")
SIDECAR_JSON = {"findings": "No pneumothorax.",
                "impression": "Signed by Jane Qwrtzv. Tel: (317) 555 0199. Name: Blvxqk Trzqw"}
CSV_REPORT = "Pleural effusion. Name: Hmvqzt Plkrw. ID 44731902. Born on March 7, 1913."
CSV_METADATA = {"modality": "Hmvqzt", "body_part": "PLKRWZ", "view": "44731902X",
                "description": "Patient: Hmvqzt Plkrw"}
REPORT_VALUES = {  # the planted values of the report files, lower case -> where
    **{v: "report.txt" for v in ("vmqzrtx", "317-555-0148", "555-0148", "qzvx.mlrk@example.org",
                                 "wqzxrvm", "93-year-old")},
    **{v: "a.txt" for v in ("kqzvlrt", "mxwpqn", "66120944", "05/06/1911")},
    **{v: "b.json" for v in ("qwrtzv", "555 0199", "blvxqk", "trzqw")},
    **{v: "reports.csv" for v in ("hmvqzt", "plkrw", "44731902", "march 7, 1913")},
}
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


@pytest.fixture
def planted_reports(planted_study: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The planted study with report files: its folder's report.txt, PNG images with sidecar
    X.txt and X.json reports, and one with a row of a reports CSV (returned with the root)."""
    from PIL import Image

    (planted_study / "ct" / "report.txt").write_text(FOLDER_REPORT)
    for name in ("png/a.png", "png/b.png", "csv/c.png"):
        (planted_study / name).parent.mkdir(exist_ok=True)
        Image.new("L", (64, 64), 40 * len(name)).save(planted_study / name)
    (planted_study / "png" / "a.txt").write_text(SIDECAR_TEXT)
    (planted_study / "png" / "b.json").write_text(json.dumps(SIDECAR_JSON))
    csv_path = tmp_path / "reports.csv"
    columns = ["path", "report", *CSV_METADATA]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([columns, ["studies/csv/c.png", CSV_REPORT, *CSV_METADATA.values()]])
    return planted_study, csv_path


def planted_needles() -> dict[str, str]:
    """Each planted value and its common spellings (lower case: the search ignores case) ->
    the attribute it was planted in."""
    needles: dict[str, str] = dict(REPORT_VALUES)
    for keyword, value in {**PLANTED, **PLANTED_UIDS, **NESTED}.items():
        forms = {value}
        if "^" in value:  # a person name: each part, the parts in either order, run together
            parts = [part for part in value.split("^") if part and part != "Dr"]
            forms |= {*parts, " ".join(parts), " ".join(reversed(parts)), ", ".join(parts),
                      "".join(parts), "".join(reversed(parts))}
        if keyword in ID_ATTRIBUTES:  # an ID: its digits alone
            forms |= set(re.findall(r"\d{6,}", value))
        if re.fullmatch(r"\d{8}", value):  # a date, as people write it
            forms |= _date_spellings(value)
        if re.fullmatch(r"\d{6}\.\d+", value):  # a time
            forms.add(f"{value[:2]}:{value[2:4]}:{value[4:6]}")
        needles.update((form.lower(), keyword) for form in forms)
    return needles


ID_ATTRIBUTES = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator",
                 "AdmissionID", "DeviceSerialNumber", "OtherPatientIDsSequence/PatientID")
_MONTHS = ("january february march april may june july august september october november "
           "december").split()


def _date_spellings(value: str) -> set[str]:
    y, m, d = value[:4], int(value[4:6]), int(value[6:])
    month = _MONTHS[m - 1]
    return {f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{d}.{m}.{y}", f"{d}/{m}/{y}",
            f"{m}/{d}/{y}", f"{m}/{d}/{y[2:]}", f"{d} {month} {y}", f"{month} {d}, {y}",
            f"{d}-{month[:3]}-{y}"}


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


def run_commands(index: Path, study: Path, index_args: list[str],
                 reports: Path | None = None) -> list[str]:
    """Every command's output (stdout and stderr) over an index of ``study`` (with the reports
    CSV ``reports``), plain and --json; each must succeed. ``index_args`` choose the back end."""
    file = str(study / "ct" / "0.dcm")
    uid = PLANTED_UIDS["StudyInstanceUID"]
    at = ["--index", str(index)]
    csv_args = ["--reports", str(reports)] if reports is not None else []
    commands = [
        ["index", str(study), *at, "--model", "hashing-tiny", "--workers", "1", *index_args,
         *csv_args],
        ["index", str(study), *at, "--model", "hashing-tiny", "--workers", "0", "--json",
         *csv_args],
        ["stats", *at], ["stats", *at, "--json"],
        ["search", "chest", *at], ["search", "chest", *at, "--json"],
        ["search", "pleural effusion", *at, "--in", "reports"],
        ["search", "pleural effusion", *at, "--in", "reports", "--json"],
        ["similar", file, *at], ["similar", file, *at, "--json"], ["similar", uid, *at, "--json"],
        ["show", uid, *at], ["show", uid, *at, "--json"], ["show", file, *at],
        ["classify", file, *at, "--labels", "CT, MRI, X-ray"],
        ["classify", uid, *at, "--label-set", "modality", "--json"],
        ["show", str(study / "png" / "a.png"), *at, "--json"],
        ["show", str(study / "png" / "b.png"), *at, "--json"],
        ["show", str(study / "csv" / "c.png"), *at, "--json"],
    ] if reports is not None else commands
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
def test_planted_identifiers_are_nowhere(kind, planted_reports: tuple[Path, Path], tmp_path: Path,
                                         capfd, caplog):
    caplog.set_level(logging.DEBUG)
    index = tmp_path / "index"
    root, reports = planted_reports

    outputs = run_commands(index, root, backend_args(kind, tmp_path), reports)

    captured = capfd.readouterr()
    show = json.loads(outputs[12])
    # `show` found the study by its real UID, although only a hash of it is stored.
    assert sorted(s["modality"] for s in show["series"]) == ["CT", "MR"]
    assert sorted(r["source"] for r in show["reports"]) == ["sidecar", "sr"]
    assert json.loads(outputs[3])["reports"] == 5  # SR, folder report, two sidecars, CSV row
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

    # Kept, cleaned: the words of the descriptions and the reports that name no one.
    assert show["study_date"] == "1901-02-03"
    assert show["description"] == "CT CHEST [REMOVED] [REMOVED] [REMOVED]"
    assert show["series"][0]["description"] == "AXIAL [REMOVED] [REMOVED] [REMOVED]"
    assert {s["body_part"] for s in show["series"]} == {None}  # not of the vocabulary: dropped
    assert {s["manufacturer"] for s in show["series"]} == {"Mfr [REMOVED] [REMOVED]"}
    texts = {r["source"]: r["text"] for r in show["reports"]}
    assert "Discussed with Dr [REMOVED] about [REMOVED] [REMOVED] (MRN [REMOVED], born " \
           "[REMOVED]) of [REMOVED]. Also [REMOVED], id [REMOVED], born [REMOVED] ([REMOVED])." \
           in texts["sr"]
    assert texts["sidecar"].startswith("FINDINGS: Pleural effusion on the right. Report for "
                                       "[REMOVED], [REMOVED] ([REMOVED]), born [REMOVED];")
    sidecar, as_json, from_csv = (json.loads(output) for output in outputs[-3:])
    assert sidecar["reports"][0]["text"] == ("Patient [REMOVED], MRN [REMOVED]. DOB: [REMOVED].\n"
                                             "FINDINGS: Small nodule in the right upper lobe.")
    assert "IMPRESSION: Signed by [REMOVED]. Tel: [REMOVED]. Name: [REMOVED]" in \
        as_json["reports"][0]["text"]
    assert from_csv["reports"][0]["text"] == \
        "Pleural effusion. Name: [REMOVED]. ID [REMOVED]. Born on [REMOVED]."
    assert from_csv["description"] == "Patient: [REMOVED]"
    assert [(s["modality"], s["body_part"]) for s in from_csv["series"]] == [(None, None)]
    assert b"1901-02-03" in haystacks["payloads"]


def test_the_planted_values_are_found_where_they_are(planted_reports: tuple[Path, Path]):
    """The search itself works: it finds each planted value, in any letter case, in the files."""
    root, reports = planted_reports
    data = (folder_bytes(root) + reports.read_bytes()).upper()
    found = {keyword for _, _, keyword in find_planted({"files": data})}
    assert found == set(PLANTED) | set(PLANTED_UIDS) | set(NESTED) | set(REPORT_VALUES.values())


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
