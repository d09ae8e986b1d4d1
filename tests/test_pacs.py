"""Indexing a PACS over DICOMweb and DIMSE, against a real Orthanc started on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.indexer.dicomweb import PacsUnavailable
from radsearch.indexer.pacs import index_pacs
from radsearch.storage.vectors import read_by_ids
from tests.orthanc_server import PASSWORD, USER, OrthancMissing, OrthancServer

pytest.importorskip("dicomweb_client", reason="the pacs extra (dicomweb-client) is not installed")

TINY = "hashing-tiny"
# Series of distinct studies, in several transfer syntaxes (RLE, JPEG 2000, implicit VR).
FIRST = ("generic/compressed_rle/001", "generic/rgb/001", "hitachi/anatomical/001")
ADDED = "philips/anatomical/001"


@pytest.fixture
def orthanc(tmp_path: Path, monkeypatch):
    try:
        server = OrthancServer(tmp_path / "orthanc")
    except OrthancMissing as missing:
        pytest.skip(str(missing))
    server.start()
    monkeypatch.setenv("RADSEARCH_DICOMWEB_USER", USER)
    monkeypatch.setenv("RADSEARCH_DICOMWEB_PASSWORD", PASSWORD)
    # Both indexes of a comparison hash UIDs with one key, so that their study keys agree.
    monkeypatch.setenv("RADSEARCH_KEY", "k" * 64)
    yield server
    process = server.process
    server.stop()
    assert process is None or process.poll() is not None


def _series_files(shared_data: Path, folder: str) -> list[Path]:
    return sorted((shared_data / "dicom_series" / "dicom2nifti" / folder).iterdir())


@pytest.fixture
def first_files(shared_data: Path) -> list[Path]:
    from pydicom.data import get_testdata_file

    files = [path for folder in FIRST for path in _series_files(shared_data, folder)]
    return files + [Path(get_testdata_file("CT_small.dcm", download=False))]


def _copy(files: list[Path], folder: Path) -> Path:
    for number, path in enumerate(files):
        target = folder / f"{number:03d}_{path.parent.name}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return folder


def _contents(index: Path) -> dict:
    """What an index holds, independent of where its files came from."""
    conn = sqlite3.connect(index / "catalog.sqlite")
    try:
        rows = conn.execute(
            "SELECT studies.key, series.key, images.instance_number, images.frame, vectors.id "
            "FROM images JOIN studies ON studies.id = images.study_id "
            "JOIN series ON series.id = images.series_id "
            "JOIN vectors ON vectors.collection = 'images' AND vectors.ref_id = images.id "
            "ORDER BY 1, 2, 3, 4").fetchall()
        studies = conn.execute("SELECT key FROM studies ORDER BY key").fetchall()
        files = conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
        dim = int(conn.execute("SELECT value FROM meta WHERE key = 'model.dim'").fetchone()[0])
        vectors = read_by_ids(conn, [row[4] for row in rows], dim)
    finally:
        conn.close()
    return {"studies": [row[0] for row in studies], "files": dict(files),
            "images": [(row[0], row[1], row[2], row[3]) for row in rows],
            "vectors": list(vectors)}


def _same(first: dict, second: dict) -> None:
    assert first["images"] and first["studies"] == second["studies"]
    assert first["files"] == second["files"]
    assert first["images"] == second["images"]
    assert len(first["vectors"]) == len(second["vectors"])
    for one, other in zip(first["vectors"], second["vectors"]):
        np.testing.assert_array_equal(one, other)


def test_pacs_index_equals_disk_index_and_is_incremental(orthanc, first_files, shared_data,
                                                         tmp_path):
    orthanc.upload(first_files)
    pacs_index, disk_index = tmp_path / "pacs-index", tmp_path / "disk-index"
    # A decoding worker reads the fetched copies (the last ones after the fetching has ended).
    summary = index_pacs(orthanc.dicomweb, index=pacs_index, model=TINY, workers=1)
    assert summary.indexed == len(first_files) and summary.failed == 0, summary.failures
    disk = _copy(first_files, tmp_path / "disk")
    index_folder(disk, index=disk_index, model=TINY, workers=0)
    _same(_contents(pacs_index), _contents(disk_index))

    # No UID in clear anywhere in the catalog's files table.
    conn = sqlite3.connect(pacs_index / "catalog.sqlite")
    paths = [row[0] for row in conn.execute("SELECT path FROM files")]
    conn.close()
    uids = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in first_files}
    assert not any(uid in path for uid in uids for path in paths)

    again = index_pacs(orthanc.dicomweb, index=pacs_index, model=TINY, workers=0)
    assert again.indexed == 0 and again.unchanged == len(first_files)

    added = _series_files(shared_data, ADDED)
    orthanc.upload(added)
    third = index_pacs(orthanc.dicomweb, index=pacs_index, model=TINY, workers=0)
    assert third.indexed == len(added) and third.unchanged == len(first_files)
    index_folder(_copy(added, tmp_path / "disk" / "added"), index=disk_index, model=TINY, workers=0)
    _same(_contents(pacs_index), _contents(disk_index))


def test_prune_removes_a_study_deleted_from_the_pacs(orthanc, first_files, tmp_path):
    orthanc.upload(first_files)
    index = tmp_path / "index"
    index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    gone = pydicom.dcmread(first_files[0], stop_before_pixels=True).StudyInstanceUID
    in_gone = sum(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID == gone
                  for path in first_files)
    orthanc.delete_study(gone)
    kept = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    assert kept.missing == in_gone and kept.removed == 0
    pruned = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, prune=True)
    assert pruned.removed == in_gone
    assert len(_contents(index)["studies"]) == len(FIRST)  # CT_small's study is left


def test_show_and_similar_open_a_study_indexed_from_a_pacs(orthanc, first_files, tmp_path):
    from radsearch import show, similar

    orthanc.upload(first_files)
    index = tmp_path / "index"
    index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    conn = sqlite3.connect(index / "catalog.sqlite")
    key = conn.execute("SELECT path FROM files ORDER BY path LIMIT 1").fetchone()[0]
    conn.close()
    study = show(key, index=index)  # by the instance's key in the catalog
    header = pydicom.dcmread(first_files[-1], stop_before_pixels=True)
    assert show(header.StudyInstanceUID, index=index).series  # by a UID, hashed with the key
    assert any(key in image for series in study.series for image in series.images)
    hits = similar(key, index=index, k=5).hits
    assert hits and study.study not in {hit.study for hit in hits}


def test_a_run_whose_server_dies_is_finished_by_the_next(orthanc, first_files, tmp_path):
    orthanc.upload(first_files)
    index = tmp_path / "index"

    def kill_after_four(progress):
        if progress.done == 4 and orthanc.process is not None:
            orthanc.kill()

    with pytest.raises(PacsUnavailable, match="run again"):
        index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, concurrency=1,
                   attempts=2, backoff_s=0.05, on_progress=kill_after_four)
    done_before = _contents(index)["files"].get("indexed", 0)
    assert 4 <= done_before < len(first_files)
    from radsearch import stats

    assert stats(index=index)["last_run"]["finished"] is None  # on record as stopped
    orthanc.start()  # the same storage: the archive is back
    resumed = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    assert resumed.indexed == len(first_files) - done_before
    last = stats(index=index)["last_run"]
    assert last["finished"] is not None and last["root"].startswith("dicomweb://127.0.0.1")
    disk_index = tmp_path / "disk-index"
    index_folder(_copy(first_files, tmp_path / "disk"), index=disk_index, model=TINY, workers=0)
    _same(_contents(index), _contents(disk_index))


def test_filters_and_refusals_are_one_line(orthanc, first_files, shared_data, tmp_path,
                                           monkeypatch):
    orthanc.upload(first_files)
    index = tmp_path / "index"
    ct = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, modality="CT")
    assert ct.indexed == 1
    mr_study = pydicom.dcmread(first_files[0], stop_before_pixels=True).StudyInstanceUID
    one = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, studies=[mr_study])
    assert one.indexed == len(_series_files(shared_data, FIRST[0]))
    assert one.missing == 0  # what lies outside the query is not missing
    rest = index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, since="1900-01-01")
    assert rest.indexed + rest.unchanged == len(first_files)
    with pytest.raises(RadsearchError, match="no study matches --since 2999-01-01"):
        index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, since="2999-01-01")
    with pytest.raises(RadsearchError, match="needs the whole archive"):
        index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0, modality="CT", prune=True)
    monkeypatch.setenv("RADSEARCH_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(RadsearchError, match="refused") as refused:
        index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    assert "wrong" not in str(refused.value) and "\n" not in str(refused.value)


def test_cli_indexes_a_pacs_and_never_prints_credentials(orthanc, first_files, tmp_path):
    from typer.testing import CliRunner

    from radsearch.cli import app

    orthanc.upload(first_files)
    index = str(tmp_path / "index")
    runner = CliRunner()
    args = ["index", orthanc.dicomweb, "--index", index, "--model", TINY, "--workers", "0"]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == len(first_files)
    again = runner.invoke(app, args + ["--modality", "CT"])
    assert again.exit_code == 0 and "indexed 0, unchanged 1" in again.stdout
    assert PASSWORD not in result.output + again.output
    found = runner.invoke(app, ["search", "brain", "--index", index])
    assert found.exit_code == 0 and "dicomweb:/1" not in found.stdout  # the key, not a mangled path
    assert "dicomweb://" in found.stdout
    folder = runner.invoke(app, ["index", str(tmp_path), "--index", index, "--since", "2020-01-01"])
    assert isinstance(folder.exception, RadsearchError)  # main() prints it as one line
    assert "select studies of a PACS" in str(folder.exception)


def test_dimse_index_equals_disk_index_and_is_incremental(orthanc, first_files, shared_data,
                                                          tmp_path):
    pytest.importorskip("pynetdicom", reason="the pacs extra (pynetdicom) is not installed")
    orthanc.upload(first_files)
    pacs_index, disk_index = tmp_path / "pacs-index", tmp_path / "disk-index"
    summary = index_pacs(orthanc.dimse, index=pacs_index, model=TINY, workers=0)
    assert summary.indexed == len(first_files) and summary.failed == 0, summary.failures
    index_folder(_copy(first_files, tmp_path / "disk"), index=disk_index, model=TINY, workers=0)
    _same(_contents(pacs_index), _contents(disk_index))
    added = _series_files(shared_data, ADDED)
    orthanc.upload(added)
    again = index_pacs(orthanc.dimse, index=pacs_index, model=TINY, workers=0)
    assert again.indexed == len(added) and again.unchanged == len(first_files)
    with pytest.raises(RadsearchError, match="no study matches --modality US"):
        index_pacs(orthanc.dimse, index=pacs_index, model=TINY, workers=0, modality="US")


def test_dimse_refused_for_an_unknown_ae_title(orthanc, first_files, tmp_path, monkeypatch):
    pytest.importorskip("pynetdicom", reason="the pacs extra (pynetdicom) is not installed")
    orthanc.upload(first_files)
    monkeypatch.setenv("RADSEARCH_DIMSE_AET", "STRANGER")
    with pytest.raises(RadsearchError, match="STRANGER"):
        index_pacs(orthanc.dimse, index=tmp_path / "index", model=TINY, workers=0, attempts=1)


def test_a_dimse_run_whose_server_dies_is_finished_by_the_next(orthanc, first_files, tmp_path):
    pytest.importorskip("pynetdicom", reason="the pacs extra (pynetdicom) is not installed")
    orthanc.upload(first_files)
    index = tmp_path / "index"

    def kill_after_four(progress):
        if progress.done == 4 and orthanc.process is not None:
            orthanc.kill()

    with pytest.raises(PacsUnavailable, match="run again"):
        index_pacs(orthanc.dimse, index=index, model=TINY, workers=0, attempts=2, backoff_s=0.05,
                   on_progress=kill_after_four)
    done_before = _contents(index)["files"].get("indexed", 0)
    assert 4 <= done_before < len(first_files)
    orthanc.start()
    resumed = index_pacs(orthanc.dimse, index=index, model=TINY, workers=0)
    assert resumed.indexed == len(first_files) - done_before and resumed.failed == 0


def test_busy_answers_are_retried_with_growing_pauses(monkeypatch):
    """The retry rule alone, with requests' own errors (the live server never answers 429)."""
    import requests

    from radsearch.indexer import dicomweb

    pauses: list[float] = []
    monkeypatch.setattr(dicomweb.time, "sleep", pauses.append)
    source = dicomweb.DicomwebSource("dicomweb+http://127.0.0.1:9/dicom-web", attempts=4,
                                     backoff_s=0.5)
    answers = [429, 503, None]

    def request():
        status = answers.pop(0)
        if status is None:
            return "answered"
        response = requests.Response()
        response.status_code = status
        raise requests.HTTPError(response=response)

    assert source._call(request, "search") == "answered"
    assert pauses == [0.5, 1.0]
    response = requests.Response()
    response.status_code = 400

    def refused():
        raise requests.HTTPError(response=response)

    with pytest.raises(RadsearchError, match="answered the search with 400"):
        source._call(refused, "search")
    assert pauses == [0.5, 1.0]  # a client error is not asked again


def test_credentials_come_from_the_environment_only(monkeypatch):
    import requests

    from radsearch.indexer.dicomweb import DicomwebSource

    with pytest.raises(RadsearchError, match="must not hold credentials"):
        DicomwebSource("dicomweb+https://user:secret@pacs.invalid/dicom-web")
    monkeypatch.setenv("RADSEARCH_DICOMWEB_TOKEN", "token-value")
    source = DicomwebSource("dicomweb+https://pacs.invalid/dicom-web")
    prepared = source._client._session.prepare_request(requests.Request("GET", "https://x/"))
    assert prepared.headers["Authorization"] == "Bearer token-value"
    assert "token-value" not in repr(source._client._session.auth)


def test_a_keep_phi_study_carries_its_pacs_link_without_asking_the_pacs(orthanc, first_files,
                                                                        tmp_path, monkeypatch):
    from radsearch import show

    orthanc.upload(first_files[-1:])
    uid = pydicom.dcmread(first_files[-1], stop_before_pixels=True).StudyInstanceUID
    monkeypatch.setenv("RADSEARCH_PACS_LINK",
                       "https://viewer.invalid/?StudyInstanceUIDs={StudyInstanceUID}")
    kept = tmp_path / "kept"
    index_pacs(orthanc.dicomweb, index=kept, model=TINY, workers=0, keep_phi=True)
    orthanc.stop()  # the UID the index holds makes the link
    assert show(uid, index=kept).link == f"https://viewer.invalid/?StudyInstanceUIDs={uid}"


def test_a_structured_report_in_the_pacs_becomes_its_study_report(orthanc, tmp_path):
    from tests.reading_helpers import pydicom_file

    files = [pydicom_file("test-SR.dcm"), pydicom_file("CT_small.dcm")]
    orthanc.upload(files)
    pacs_index, disk_index = tmp_path / "pacs-index", tmp_path / "disk-index"
    summary = index_pacs(orthanc.dicomweb, index=pacs_index, model=TINY, workers=0)
    assert summary.reports == 1 and summary.failed == 0
    index_folder(_copy(files, tmp_path / "disk"), index=disk_index, model=TINY, workers=0)
    reports = []
    for index in (pacs_index, disk_index):
        conn = sqlite3.connect(index / "catalog.sqlite")
        reports.append(conn.execute("SELECT studies.key, reports.source, reports.text FROM reports "
                                    "JOIN studies ON studies.id = reports.study_id").fetchall())
        conn.close()
    assert reports[0] and reports[0] == reports[1]


@pytest.mark.parametrize("module, address", [
    ("dicomweb_client", "dicomweb+https://pacs.invalid/dicom-web"),
    ("pynetdicom", "dimse://PACS@pacs.invalid:104"),
])
def test_without_the_pacs_extra_one_line_says_what_to_install(module, address, monkeypatch):
    from radsearch.indexer.pacs import open_source

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.setitem(sys.modules, f"{module}.api", None)
    with pytest.raises(RadsearchError, match=r"pip install 'radsearch\[pacs\]'"):
        open_source(address)
