"""NIfTI volumes in an index: a series each, with slice positions and a volume vector, grouped into
studies like other files without study UIDs, their report sidecars attached, found by `similar`
from a DICOM slice of the series they were converted from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_helpers import dicom_series, nifti_from_dicom

from radsearch import similar, stats
from radsearch.storage.catalog import connect
from radsearch.indexer import index_folder
from radsearch.reading import read_file
from radsearch.zeroshot import classify

TINY = "hashing-tiny"
# dicom2nifti reference volumes of distinct series: (folder under dicom_series/dicom2nifti, a slice)
REFERENCE_SERIES = {
    "philips/anatomical/001": "IM-0001-0002-0001.dcm",
    "hitachi/anatomical/001": None,
    "anatomical/001": None,
    "ge/dti/001": None,
    "ge/fmri/001": None,
    "generic/anatomical/002_non_isotropic": None,
}


def _catalog_rows(index: Path, sql: str) -> list:
    conn = connect(index / "catalog.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_volumes_become_series_with_positions_reports_and_studies(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    (root / "s1").mkdir(parents=True)
    (root / "s2").mkdir()
    series = dicom_series(tmp_path, "axial", n_slices=4)
    nifti_from_dicom(series, root / "s1" / "t1.nii.gz")
    nifti_from_dicom(series[:3], root / "s1" / "t2.nii", ("R", "A", "S"))
    nifti_from_dicom(series, root / "s2" / "ct.nii.gz")
    (root / "s2" / "ct.txt").write_text("FINDINGS: A vertebral body. IMPRESSION: Normal spine.\n")
    (root / "s2" / "ct.json").write_text(json.dumps({"Modality": "CT"}))  # BIDS: not a report

    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)

    assert (summary.indexed, summary.failed, summary.reports) == (3, 0, 1)
    counts = stats(index=tmp_path / "index")
    assert (counts["studies"], counts["series"], counts["images"]) == (2, 3, 11)
    rows = _catalog_rows(tmp_path / "index", (
        "SELECT files.path, series.key, studies.key, COUNT(*) AS n, "
        "SUM(images.slice_position IS NULL) AS unplaced, "
        "(SELECT COUNT(*) FROM vectors WHERE collection = 'series' AND ref_id = series.id) AS pooled "
        "FROM images JOIN files ON files.id = images.file_id "
        "JOIN series ON series.id = images.series_id JOIN studies ON studies.id = images.study_id "
        "GROUP BY files.path ORDER BY files.path"))
    by_name = {Path(row["path"]).name: row for row in rows}
    assert {name: row["n"] for name, row in by_name.items()} == {"ct.nii.gz": 4, "t1.nii.gz": 4,
                                                                  "t2.nii": 3}
    assert all(row["unplaced"] == 0 and row["pooled"] == 1 for row in rows)
    study_of = {name: row[2] for name, row in by_name.items()}
    assert study_of["t1.nii.gz"] == study_of["t2.nii"] != study_of["ct.nii.gz"]
    reports = _catalog_rows(tmp_path / "index", "SELECT studies.key, reports.text FROM reports "
                            "JOIN studies ON studies.id = reports.study_id")
    assert [(key, text.strip()) for key, text in reports] == [
        (study_of["ct.nii.gz"], "FINDINGS: A vertebral body. IMPRESSION: Normal spine.")]
    modalities = _catalog_rows(tmp_path / "index", "SELECT DISTINCT modality FROM series "
                               "WHERE modality IS NOT NULL")
    assert [row[0] for row in modalities] == ["CT"]

    again = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)
    assert (again.indexed, again.unchanged) == (0, 4)  # three volumes and the report


def test_slice_order_follows_the_positions(tmp_path: Path) -> None:
    # Stored inferior-to-superior in one file, superior-to-inferior in the other: the catalog's
    # slice order is by position along the normal in both, as for DICOM.
    (tmp_path / "a").mkdir()
    series = dicom_series(tmp_path, "axial", n_slices=3)
    nifti_from_dicom(series, tmp_path / "a" / "up.nii")
    nifti_from_dicom(series, tmp_path / "a" / "down.nii", ("L", "P", "I"))
    index_folder(tmp_path / "a", index=tmp_path / "index", model=TINY, workers=0)
    rows = _catalog_rows(tmp_path / "index", (
        "SELECT files.path, images.slice_position FROM images JOIN files ON files.id = "
        "images.file_id ORDER BY files.path, images.slice_order"))
    positions: dict[str, list[float]] = {}
    for path, position in rows:
        positions.setdefault(Path(path).name, []).append(position)
    assert positions["up.nii"] == pytest.approx(positions["down.nii"])
    assert positions["up.nii"] == sorted(positions["up.nii"])


def test_a_nifti_query_for_similar_and_classify(tmp_path: Path) -> None:
    # The DICOM series of the query volume, and another study: the same pixels upside down.
    for folder, flipped in (("coronal", False), ("flipped", True)):
        (tmp_path / "archive" / folder).mkdir(parents=True)
        for path in dicom_series(tmp_path, "coronal", n_slices=3, flipped=flipped):
            shutil.copy(path, tmp_path / "archive" / folder)
    index_folder(tmp_path / "archive", index=tmp_path / "index", model=TINY, workers=0)
    series = sorted((tmp_path / "archive" / "coronal").iterdir())
    query = nifti_from_dicom(series, tmp_path / "query.nii.gz", ("R", "A", "S"))

    hits = similar(query, index=tmp_path / "index", k=3).hits

    assert Path(hits[0].images[0].path).parent.name == "coronal"
    assert hits[0].score > hits[1].score
    result = classify(query, labels="CT, MRI, X-ray", model=TINY)
    assert {score.label for score in result.scores} == {"CT", "MRI", "X-ray"}


def test_identifying_header_text_and_sidecar_fields_are_not_stored(tmp_path: Path) -> None:
    # NIfTI headers carry free text (descrip, aux_file, intent_name, db_name) and dcm2niix sidecars
    # may keep DICOM identifiers: none of it is read, so none of it reaches the index.
    (tmp_path / "a").mkdir()
    image = nib.Nifti1Image(np.arange(16 * 16 * 3, dtype=np.int16).reshape(16, 16, 3), np.eye(4))
    image.header["descrip"] = b"Doe^Jane MRN4417"
    image.header["aux_file"] = b"ACC90210"
    image.header["intent_name"] = b"Jane"
    nib.save(image, tmp_path / "a" / "t1.nii.gz")
    (tmp_path / "a" / "t1.json").write_text(json.dumps({
        "Modality": "MR", "PatientName": "Doe^Jane", "PatientID": "MRN4417",
        "AccessionNumber": "ACC90210", "InstitutionName": "St Elsewhere", "SeriesDescription":
        "T1 Doe^Jane"}))

    index_folder(tmp_path / "a", index=tmp_path / "index", model=TINY, workers=0)

    stored = b"".join(path.read_bytes() for path in (tmp_path / "index").rglob("*")
                      if path.is_file())
    for planted in (b"Doe", b"Jane", b"MRN4417", b"ACC90210", b"Elsewhere"):
        assert planted not in stored, planted


def test_a_damaged_volume_is_one_failure(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    data = np.zeros((16, 16, 4), dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a" / "whole.nii.gz")
    cut = (tmp_path / "a" / "whole.nii.gz").read_bytes()
    (tmp_path / "a" / "cut.nii.gz").write_bytes(cut[:40])
    (tmp_path / "a" / "text.nii").write_text("not a volume")

    summary = index_folder(tmp_path / "a", index=tmp_path / "index", model=TINY, workers=0)

    assert summary.indexed == 1
    assert sorted((Path(path).name, reason) for path, reason in summary.failures) == [
        ("cut.nii.gz", "not a NIfTI file: truncated or damaged gzip stream before the end of "
                       "the header"),
        ("text.nii", "not a NIfTI file: no NIfTI-1/NIfTI-2 header"),
    ]


def test_reference_volume_found_from_its_dicom_slice(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "dicom_series" / "dicom2nifti"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    root = tmp_path / "archive"
    for name in REFERENCE_SERIES:
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        shutil.copy(source / f"{name}_ground_truth.nii.gz", folder / "volume.nii.gz")
    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)
    assert (summary.indexed, summary.failed) == (len(REFERENCE_SERIES), 0)

    query = source / "philips/anatomical/001" / REFERENCE_SERIES["philips/anatomical/001"]
    hits = similar(query, index=tmp_path / "index", k=3).hits

    assert Path(hits[0].images[0].path).parent.name == "philips_anatomical_001"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    # The volume's slice positions are the DICOM series' own.
    dicom_positions = sorted(
        read_file(path, image_size=16, salt="s").frames[0].slice_position
        for path in (source / "philips/anatomical/001").iterdir())
    rows = _catalog_rows(tmp_path / "index", (
        "SELECT images.slice_position FROM images JOIN files ON files.id = images.file_id "
        "WHERE files.path LIKE '%philips_anatomical_001%' ORDER BY images.slice_order"))
    assert [row[0] for row in rows] == pytest.approx(dicom_positions, abs=1e-3)
