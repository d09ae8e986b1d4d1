"""`--keep-phi`: an explicit, recorded opt-in that keeps patient identifiers in the catalog only.

With it, the identifying attributes of each DICOM file are in the catalog in clear, `show` prints
them and finds a study by its accession number; they are still in no vector payload, no back-end
file, no log line and no other command's output. A run that disagrees with the index's record is
refused in one line. Without it, nothing identifying is stored (tests/test_index_privacy.py).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from radsearch import show
from radsearch.cli import app
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from tests.test_index_privacy import (  # noqa: F401 - planted_study is a fixture
    BACKENDS,
    PLANTED,
    PLANTED_UIDS,
    STUDY_DESCRIPTION,
    backend_args,
    backend_payloads,
    find_planted,
    folder_bytes,
    planted_study,
)

TINY = "hashing-tiny"
UID = PLANTED_UIDS["StudyInstanceUID"]
ACCESSION = PLANTED["AccessionNumber"]


def _identifiers(index: Path) -> list[dict]:
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT attributes FROM identifiers")]


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.mark.parametrize("kind", BACKENDS)
def test_identifiers_are_in_the_catalog_and_show_only(
    kind, planted_study: Path, tmp_path: Path, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    index = tmp_path / "index"
    at = ["--index", str(index)]
    outputs = [
        _invoke(["index", str(planted_study), *at, "--model", TINY, "--workers", "1", "--keep-phi",
                 *backend_args(kind, tmp_path)]),
        _invoke(["index", str(planted_study), *at, "--model", TINY, "--keep-phi", "--json"]),
        _invoke(["search", "chest", *at, "--json"]),
        _invoke(["search", "pleural effusion", *at, "--in", "reports"]),
        _invoke(["similar", str(planted_study / "ct" / "0.dcm"), *at, "--json"]),
        _invoke(["stats", *at, "--json"]),
    ]
    shown = _invoke(["show", ACCESSION, *at])
    shown_json = json.loads(_invoke(["show", UID, *at, "--json"]))
    captured = capfd.readouterr()

    # In the catalog: every kept attribute of the three files, in clear.
    kept = _identifiers(index)
    assert len(kept) == 3
    for attributes in kept:
        assert attributes["PatientName"] == PLANTED["PatientName"]
        assert attributes["PatientID"] == PLANTED["PatientID"]
        assert attributes["AccessionNumber"] == ACCESSION
        assert attributes["StudyInstanceUID"] == UID
        assert attributes["StudyDate"] == "19010203"
        assert attributes["ReferringPhysicianName"] == PLANTED["ReferringPhysicianName"]
        assert attributes["StudyDescription"] == STUDY_DESCRIPTION  # as written
    assert sorted(a["SOPInstanceUID"] for a in kept) == [
        f"{PLANTED_UIDS['SOPInstanceUID']}.{n}" for n in range(3)]

    # In `show`, found by accession number or real UID.
    for value in (PLANTED["PatientName"], PLANTED["PatientID"], ACCESSION, UID,
                  PLANTED["InstitutionName"], f"{PLANTED_UIDS['SeriesInstanceUID']}.0"):
        assert value in shown
    study = shown_json["identifiers"]
    assert study["PatientName"] == [PLANTED["PatientName"]]
    assert study["AccessionNumber"] == [ACCESSION] and study["StudyInstanceUID"] == [UID]
    # Series of equal number come in the order the workers delivered them.
    assert sorted(s["identifiers"]["SeriesInstanceUID"] for s in shown_json["series"]) == [
        [f"{PLANTED_UIDS['SeriesInstanceUID']}.{n}"] for n in range(2)]
    # The card stays clean.
    assert shown_json["description"] == "CT CHEST [REMOVED] [REMOVED] [REMOVED]"

    # Nowhere else: not in a payload, a back-end file, a log line or another command's output.
    haystacks = {
        "payloads": backend_payloads(index),
        "back-end files": b"".join(folder_bytes(path) for path in index.iterdir() if path.is_dir()),
        "command output": "\n".join(outputs).encode(),
        "logs": (caplog.text + captured.out + captured.err).encode(),
    }
    if kind == "qdrant":
        haystacks["qdrant store"] = folder_bytes(tmp_path / "qdrant-local")
    found = find_planted(haystacks)
    print(f"\nwith --keep-phi, planted identifiers outside the catalog ({kind}): {len(found)}")
    assert found == []


def test_a_run_that_disagrees_with_the_record_is_refused(planted_study: Path, tmp_path: Path):
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    index_folder(planted_study, index=plain, model=TINY, workers=0)
    index_folder(planted_study, index=kept, model=TINY, workers=0, keep_phi=True)

    with pytest.raises(RadsearchError) as adding:
        index_folder(planted_study, index=plain, model=TINY, workers=0, keep_phi=True)
    with pytest.raises(RadsearchError) as dropping:
        index_folder(planted_study, index=kept, model=TINY, workers=0)

    assert str(adding.value) == (f"{plain}: this index holds no patient identifiers (built "
                                 "without --keep-phi): index into a fresh --index to keep them")
    assert str(dropping.value) == (f"{kept}: this index keeps patient identifiers (it was built "
                                   "with --keep-phi): run with --keep-phi, or use another --index")
    assert _identifiers(plain) == [] and len(_identifiers(kept)) == 3
    assert show(UID, index=plain).identifiers == {}
    with pytest.raises(RadsearchError, match=f"^{ACCESSION}: no indexed study"):
        show(ACCESSION, index=plain)  # only an index that keeps identifiers knows accessions
    # The CLI says it in one line and fails.
    result = CliRunner().invoke(app, ["index", str(planted_study), "--index", str(kept),
                                      "--model", TINY, "--workers", "0"])
    assert result.exit_code != 0 and "\n" not in str(result.exception)


def test_identifiers_follow_their_files(planted_study: Path, tmp_path: Path):
    """A changed file's identifiers are replaced, a removed file's go with it."""
    index = tmp_path / "index"
    index_folder(planted_study, index=index, model=TINY, workers=0, keep_phi=True)
    changed = planted_study / "ct" / "1.dcm"
    ds = pydicom.dcmread(changed)
    ds.AccessionNumber = "ACC-CHANGED-1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.201"
    ds.save_as(changed)
    (planted_study / "ct" / "2.dcm").unlink()

    index_folder(planted_study, index=index, model=TINY, workers=0, keep_phi=True, prune=True)

    assert sorted(a["AccessionNumber"] for a in _identifiers(index)) == ["ACC-CHANGED-1", ACCESSION]
    assert show("ACC-CHANGED-1", index=index).identifiers["StudyInstanceUID"] == [
        "1.2.826.0.1.3680043.8.498.201"]
    assert show(ACCESSION, index=index).identifiers["AccessionNumber"] == [ACCESSION]
