"""`radsearch remove`: files, folders, studies and series leave the catalog and every back end
together, the studies they touched are recomputed; `radsearch demo` keeps to an index of its own."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radsearch import remove, search, stats
from radsearch.cli import app
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.storage.store import Store
from radsearch.storage.vectors import read_vectors
from tests.backend_params import ALL_BACKENDS

TINY = "hashing-tiny"
COLLECTIONS = ("studies", "series", "images", "sentences")
runner = CliRunner()


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(path)


def _corpus(root: Path) -> dict:
    samples = root / "samples"  # two images, each a study with its own report
    samples.mkdir(parents=True)
    for seed, name in enumerate(("effusion", "fracture")):
        _image(samples / f"{name}.png", seed)
        (samples / f"{name}.txt").write_text(f"IMPRESSION: {name} seen.")
    own = root / "own"  # an MR study of two slices, and a CT study
    own.mkdir()
    for number in (1, 2):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{number}"
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0, 0, 5 * number]
        ds.save_as(own / f"mr{number}.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), own / "ct.dcm")
    return {"samples": samples, "own": own,
            "ct_uid": str(pydicom.dcmread(own / "ct.dcm").StudyInstanceUID)}


def _where(kind: str, root: Path) -> dict:
    return {"backend": kind, "url": str(root / "qdrant-local") if kind == "qdrant" else None}


def _catalog_counts(index: Path) -> dict:
    with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        found = dict(conn.execute("SELECT collection, COUNT(*) FROM vectors GROUP BY collection"))
    return {name: found.get(name, 0) for name in COLLECTIONS}


def _backend_counts(index: Path) -> dict:
    with Store.open_for_reading(index) as store:
        return {name: store.backend.count(name) for name in COLLECTIONS}


def _paths_found(index: Path) -> set[str]:
    found = set()
    for target in ("images", "reports"):
        for hit in search("effusion fracture", index=index, k=50, target=target).hits:
            found |= {image.path for image in hit.images}
    return found


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_removing_a_folder_a_study_and_a_file_keeps_every_backend_in_step(kind, tmp_path):
    corpus = _corpus(tmp_path / "studies")
    index = tmp_path / "index"
    index_folder(tmp_path / "studies", index=index, workers=0, model=TINY, **_where(kind, tmp_path))
    assert stats(index=index)["studies"] == 4

    plan = remove([corpus["samples"]], index=index, dry_run=True)
    assert plan.dry_run and plan.studies == 2 and plan.reports == 2 and len(plan.files) == 4
    assert stats(index=index)["studies"] == 4  # a dry run changes nothing

    done = remove([corpus["samples"]], index=index)
    assert done.studies == 2 and done.deleted > 0
    assert stats(index=index)["studies"] == 2
    assert not any(path.startswith(str(corpus["samples"])) for path in _paths_found(index))
    assert _backend_counts(index) == _catalog_counts(index)

    remove([corpus["ct_uid"]], index=index)  # a DICOM study by its Study Instance UID
    assert stats(index=index)["studies"] == 1
    assert _backend_counts(index) == _catalog_counts(index)

    remove([str(corpus["own"] / "mr1.dcm")], index=index)  # one slice of a two-slice series
    assert _backend_counts(index) == _catalog_counts(index) == \
        {"studies": 1, "series": 1, "images": 1, "sentences": 0}
    with Store.open_for_reading(index) as store, store.snapshot() as conn:
        image_id = conn.execute("SELECT id FROM images").fetchone()[0]
        study_id = conn.execute("SELECT id FROM studies").fetchone()[0]
        image = read_vectors(conn, "images", [image_id], store.dim)[0]
        study = read_vectors(conn, "studies", [study_id], store.dim)[0]
    np.testing.assert_allclose(study, image / np.linalg.norm(image), atol=1e-6)  # recomputed


def test_a_name_that_matches_nothing_removes_nothing(tmp_path):
    corpus = _corpus(tmp_path / "studies")
    index = tmp_path / "index"
    index_folder(tmp_path / "studies", index=index, workers=0, model=TINY)
    with pytest.raises(RadsearchError, match="studeis: no indexed file, folder, study"):
        remove([corpus["samples"], tmp_path / "studeis"], index=index)
    assert stats(index=index)["studies"] == 4


def test_cli_remove_dry_run_json_and_removal(tmp_path):
    corpus = _corpus(tmp_path / "studies")
    index = tmp_path / "index"
    index_folder(tmp_path / "studies", index=index, workers=0, model=TINY)
    target = str(corpus["samples"] / "effusion.png")
    result = runner.invoke(app, ["remove", target, "--index", str(index), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["dry_run"] and data["studies"] == 1
    assert data["files"] == sorted([target, target[:-4] + ".txt"])
    result = runner.invoke(app, ["remove", target, "--index", str(index)])
    assert result.exit_code == 0 and "removed 2 files" in result.output
    assert stats(index=index)["studies"] == 3


def test_demo_indexes_into_its_own_index_and_says_where(isolated_home):
    result = runner.invoke(app, ["demo", "--model", TINY])
    assert result.exit_code == 0, result.output
    demo = isolated_home / ".radsearch" / "demo"
    assert str(demo) in result.output
    assert stats(index=demo)["studies"] > 0
    assert not (isolated_home / ".radsearch" / "index").exists()
