"""Which PNG/JPEG images form a study: flat folders, study folders, report files, a reports CSV's
group column and folder keys, and regrouping an existing index."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from radsearch import Filters, search, stats
from radsearch.indexer import index_folder

TINY = "hashing-tiny"


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((32, 32), value, dtype=np.uint8)
    pixels[: value % 32] = 255 - value  # distinct images, distinct vectors
    Image.fromarray(pixels).save(path)
    return path


def _index(root: Path, index: Path, reports: Path | None = None, **kwargs):
    return index_folder(root, index=index, reports=reports, model=TINY, workers=0, **kwargs)


def _studies(index: Path) -> dict[str, list[str]]:
    """Study key -> names of its image files."""
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        rows = conn.execute(
            "SELECT studies.key, files.path FROM studies LEFT JOIN images ON images.study_id = "
            "studies.id LEFT JOIN files ON files.id = images.file_id ORDER BY files.path"
        ).fetchall()
    studies: dict[str, list[str]] = {}
    for key, path in rows:
        studies.setdefault(key, [])
        if path is not None:
            studies[key].append(Path(path).name)
    return studies


def _csv_reports(index: Path) -> dict[tuple[str, ...], str]:
    """Image names of each study that holds a CSV report -> the report's text."""
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        rows = conn.execute(
            "SELECT reports.text, (SELECT group_concat(name, ',') FROM (SELECT DISTINCT files.path "
            "AS name FROM images JOIN files ON files.id = images.file_id WHERE images.study_id = "
            "reports.study_id ORDER BY files.path)) FROM reports WHERE source = 'csv'"
        ).fetchall()
    return {tuple(Path(p).name for p in (paths or "").split(",") if p): text for text, paths in rows}


def test_a_flat_folder_of_unrelated_images_is_a_study_each(tmp_path):
    root = tmp_path / "flat"
    for value, name in ((40, "a.png"), (90, "b.png"), (200, "c.jpg")):
        _png(root / name, value)
    summary = _index(root, tmp_path / "index")
    assert sorted(map(sorted, _studies(tmp_path / "index").values())) == [["a.png"], ["b.png"],
                                                                          ["c.jpg"]]
    assert summary.notes == [f"3 PNG/JPEG image(s) directly in {root} became a study each: nothing "
                             "groups them (no group column in a reports CSV, no report.txt in the "
                             "folder)"]
    assert _index(root, tmp_path / "index").notes == []  # said once, when they are filed


def test_study_folders_and_folder_reports_keep_a_study_per_folder(tmp_path):
    root = tmp_path / "studies"
    _png(root / "case_a" / "1.png", 10)
    _png(root / "case_a" / "2.png", 20)
    _png(root / "case_b" / "1.png", 30)
    (root / "report.txt").write_text("FINDINGS: Both studies, one report.\n", encoding="utf-8")
    _png(root / "overview.png", 40)
    _png(root / "scout.png", 50)
    summary = _index(root, tmp_path / "index")
    groups = sorted(map(sorted, _studies(tmp_path / "index").values()))
    # A subfolder is a study; the indexed folder itself is one too when it has its own report.
    assert groups == [["1.png"], ["1.png", "2.png"], ["overview.png", "scout.png"]]
    assert summary.reports == 1 and summary.notes == []


def _medpix_like(root: Path) -> Path:
    """Five images of three cases, flat, and a manifest with a case column (like MedPix's)."""
    for value, name in ((10, "MPX1_a.png"), (20, "MPX1_b.png"), (30, "MPX2_a.png"),
                        (40, "MPX3_a.png"), (50, "MPX3_b.png")):
        _png(root / "images" / name, value)
    manifest = root / "manifest.csv"
    manifest.write_text(
        "image_path,text,modality,case_id\n"
        "images/MPX1_a.png,Left renal mass.,CT,MPX1\n"
        "images/MPX1_b.png,Mass enhances.,CT,MPX1\n"
        "images/MPX2_a.png,Normal brain.,MRI,MPX2\n"
        "images/MPX3_a.png,Right lung nodule.,CT,MPX3\n"
        "images/MPX3_b.png,Right lung nodule.,CT,MPX3\n",
        encoding="utf-8")
    return manifest


def test_a_csv_case_column_groups_images_into_studies(tmp_path):
    root = tmp_path / "medpix"
    manifest = _medpix_like(root)
    index = tmp_path / "index"
    summary = _index(root, index, manifest)

    assert summary.warnings == []
    assert summary.notes == ["5 PNG/JPEG image(s) grouped into 3 studies by the CSV column 'case_id'"]
    assert stats(index=index)["studies"] == 3
    # A case's report is its rows' distinct texts, in CSV order.
    assert _csv_reports(index) == {
        ("MPX1_a.png", "MPX1_b.png"): "Left renal mass.\n\nMass enhances.",
        ("MPX2_a.png",): "Normal brain.",
        ("MPX3_a.png", "MPX3_b.png"): "Right lung nodule.",
    }
    # One result per case, not one per image.
    hits = search("renal mass", index=index, k=10).hits
    assert len(hits) == 3 and len({hit.study for hit in hits}) == 3
    # The case ids are grouping values: hashed, never stored.
    assert b"MPX1\x00" not in (index / "catalog.sqlite").read_bytes()
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        keys = [key for (key,) in conn.execute("SELECT key FROM studies")]
    assert all(key.startswith("group:") and "MPX" not in key for key in keys)


def test_regrouping_an_existing_index(tmp_path):
    root = tmp_path / "medpix"
    manifest = _medpix_like(root)
    index = tmp_path / "index"
    by_image = root / "by_image.csv"  # the same rows without the case column
    by_image.write_text("".join(line.rsplit(",", 1)[0] + "\n"
                                for line in manifest.read_text().splitlines()), encoding="utf-8")

    _index(root, index)  # images/ is a subfolder: one study, as the index held it before
    assert list(map(len, _studies(index).values())) == [5]

    _index(root, index, manifest)  # the case column regroups it
    assert sorted(map(len, _studies(index).values())) == [1, 2, 2]
    _index(root, index)  # a run without the CSV keeps what the CSV grouped
    assert sorted(map(len, _studies(index).values())) == [1, 2, 2]

    _index(root, index, by_image)  # rows without a case: a study per image, each with its row
    studies = _studies(index)
    assert sorted(map(len, studies.values())) == [1, 1, 1, 1, 1]  # no study left without images
    assert set(_csv_reports(index)) == {(name,) for names in studies.values() for name in names}
    assert stats(index=index)["reports"] == 5

    _index(root, index, manifest)
    assert sorted(map(len, _studies(index).values())) == [1, 2, 2]
    assert stats(index=index)["reports"] == 3


def test_a_row_keyed_by_a_study_folder_attaches_to_that_folder(tmp_path):
    root = tmp_path / "studies"
    _png(root / "case_a" / "1.png", 10)
    _png(root / "case_a" / "2.png", 20)
    _png(root / "case_b" / "1.png", 30)
    (root / "ct").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct" / "IM1")
    index = tmp_path / "index"
    # An earlier run split case_a into a study per image (as its images had reports of their own).
    for name in ("1", "2"):
        (root / "case_a" / f"{name}.txt").write_text("Own report.", encoding="utf-8")
    _index(root, index)
    assert sorted(map(len, _studies(index).values())) == [1, 1, 1, 1]
    for name in ("1", "2"):
        (root / "case_a" / f"{name}.txt").unlink()

    table = root / "reports.csv"
    table.write_text("path,report,modality\ncase_a,Cystic renal lesion.,CT\n"
                     "ct,Chest CT without contrast.,\n", encoding="utf-8")
    summary = _index(root, index, table, prune=True)

    assert summary.warnings == []
    assert sorted(map(sorted, _studies(index).values())) == [["1.png"], ["1.png", "2.png"], ["IM1"]]
    assert _csv_reports(index) == {("1.png", "2.png"): "Cystic renal lesion.",
                                   ("IM1",): "Chest CT without contrast."}


def test_keys_above_the_indexed_folder_label_nothing(tmp_path):
    root = tmp_path / "studies"
    _png(root / "a.png", 10)
    _png(root / "b.png", 20)
    table = tmp_path / "reports.csv"
    table.write_text("path,report,modality\n/,Everything is an MR.,MR\n", encoding="utf-8")
    index = tmp_path / "index"
    summary = _index(root, index, table)

    assert summary.warnings == [
        f"1 report row(s) of {table} (line 2, e.g. '/') key a folder above the indexed folder "
        f"{root}: ignored, a key names a study inside it"]
    assert stats(index=index)["reports"] == 0
    assert search("anything", index=index, k=5, filters=Filters(modality="MR")).hits == []
    assert len(search("anything", index=index, k=5).hits) == 2


def test_keys_that_match_nothing_say_where_they_looked(tmp_path):
    root = tmp_path / "copied"
    _png(root / "MPX1_a.png", 10)  # copied flat, while the CSV keys images/MPX1_a.png
    table = tmp_path / "manifest.csv"
    table.write_text("image_path,text\nimages/MPX1_a.png,Renal mass.\nimages/MPX1_a.png,Again.\n"
                     "1.2.840.99,A study elsewhere.\n", encoding="utf-8")
    summary = _index(root, tmp_path / "index", table)
    assert summary.warnings == [
        f"reports CSV {table}: 1 key(s) on more than one row, their reports joined: "
        "images/MPX1_a.png on lines 2, 3",
        f"2 report row(s) of {table} matched no indexed study, e.g. images/MPX1_a.png: looked for "
        f"{tmp_path / 'images' / 'MPX1_a.png'}, which does not exist (path keys are relative to the "
        f"CSV's folder); an indexed file of that name is {root / 'MPX1_a.png'}",
    ]


def test_the_cli_groups_by_a_named_column_and_prints_the_note(tmp_path):
    from typer.testing import CliRunner

    from radsearch.cli import app

    root = tmp_path / "medpix"
    manifest = _medpix_like(root)
    # "modality" as the group: CT images together, MRI apart (any column can be named).
    result = CliRunner().invoke(app, ["index", str(root), "--index", str(tmp_path / "index"),
                                      "--reports", str(manifest), "--group-by", "Modality",
                                      "--model", TINY, "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "note 5 PNG/JPEG image(s) grouped into 2 studies by the CSV column 'modality'" in " ".join(
        result.output.split())
    assert stats(index=tmp_path / "index")["studies"] == 2


def test_a_group_study_is_shown_by_the_label_search_prints(tmp_path):
    from typer.testing import CliRunner

    from radsearch.cli import app

    root = tmp_path / "medpix"
    index = tmp_path / "index"
    _index(root, index, _medpix_like(root))
    runner = CliRunner()
    listed = runner.invoke(app, ["search", "renal mass", "-k", "1", "--index", str(index)],
                           terminal_width=120)
    assert listed.exit_code == 0, listed.output
    label = next(word for word in listed.output.split() if word.startswith("group:"))
    assert len(label) == 18
    shown = runner.invoke(app, ["show", label, "--index", str(index)], terminal_width=120)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("study group:")


def test_shards_keep_a_group_on_one_machine_whatever_folders_it_spans(tmp_path):
    from radsearch.indexer.discover import Shard

    root = tmp_path / "archive"
    folders = ["a", "f", "b", "x"]
    # Folder placement alone would split groups: the folders fall on both shards.
    assert len({Shard.parse("1/2").owns(f"folder:{name}") for name in folders}) == 2
    lines = ["path,report,case"]
    for case in range(8):
        for folder in (folders[case % 4], folders[(case + 1) % 4]):
            _png(root / folder / f"case{case}.png", 10 + 20 * case + folders.index(folder))
            lines.append(f"archive/{folder}/case{case}.png,Case {case} image in {folder}.,C{case}")
    table = tmp_path / "reports.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")

    held = []
    for number in (1, 2):
        index = tmp_path / f"shard{number}"
        _index(root, index, table, shard=f"{number}/2")
        held.append(_studies(index))
    all_keys = [key for studies in held for key in studies]
    assert len(all_keys) == len(set(all_keys)) == 8  # each case's study on one machine only
    assert sorted(len(names) for studies in held for names in studies.values()) == [2] * 8


def test_a_folder_key_over_several_dicom_studies_says_so(tmp_path):
    root = tmp_path / "studies"
    (root / "mixed").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):  # two Study Instance UIDs in one folder
        shutil.copy(get_testdata_file(name), root / "mixed" / name)
    table = root / "reports.csv"
    table.write_text("path,report\nmixed,Which study?\n", encoding="utf-8")
    summary = _index(root, tmp_path / "index", table)
    assert summary.warnings == [
        f"1 report row(s) of {table} matched no indexed study, e.g. mixed: its folder holds 2 "
        "studies; a folder key needs exactly one"]
    assert stats(index=tmp_path / "index")["reports"] == 0
