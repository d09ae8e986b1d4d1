"""Modality, view and body part as DICOM defined terms: one spelling in the index, aliases as one
filter in every query, and indexes written before re-normalised without re-embedding."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from radsearch import Filters, label_query, search, similar
from radsearch.storage.backends import PointFilter
from radsearch.encoders import create_model
from radsearch.indexer import index_folder
from radsearch.index_handle import backend_spec
from radsearch.storage.store import Store
from radsearch.terms import filter_values, normalise
from tests.backend_params import ALL_BACKENDS

TINY = "hashing-tiny"
# image, modality, view, body part, as a CSV manifest writes them
ROWS = [
    ("a.png", "MRI", "Axial", "Head"),
    ("b.png", "MR", "Transverse", "head"),
    ("c.png", "CT", "Coronal", "Abdomen and pelvis"),
    ("d.png", "X-ray", "PA", "Thorax"),
]


@pytest.mark.parametrize("field, written, term", [
    ("modality", "MRI", "MR"), ("modality", " mr ", "MR"), ("modality", "Magnetic resonance", "MR"),
    ("modality", "X-ray", "DX"), ("modality", "ultrasound", "US"), ("modality", "PET", "PT"),
    ("view", "Transverse", "AXIAL"), ("view", "sagittal", "SAGITTAL"), ("view", "LL", "LATERAL"),
    ("view", "Lateral", "LATERAL"), ("view", "AP Supine", "AP"),
    ("body_part", "Thorax", "CHEST"), ("body_part", "Abdomen and pelvis", "ABDOMENPELVIS"),
    ("body_part", "c-spine", "CSPINE"), ("body_part", "Head & Neck", "HEADNECK"),
    ("body_part", "knee", "KNEE"), ("view", "3D Reconstruction", "3D RECONSTRUCTION"),
])
def test_values_become_defined_terms(field: str, written: str, term: str) -> None:
    assert normalise(field, written) == term


@pytest.mark.parametrize("field, aliases", [
    ("modality", ["MR", "MRI", "mri", "Magnetic Resonance"]),
    ("modality", ["US", "Ultrasound"]),
    ("modality", ["XRAY", "X-ray", "XR", "radiograph"]),
    ("view", ["AXIAL", "Transverse", "ax"]),
    ("body_part", ["CHEST", "thorax"]),
])
def test_aliases_are_one_filter(field: str, aliases: list[str]) -> None:
    values = {filter_values(field, alias) for alias in aliases}
    assert len(values) == 1
    assert normalise(field, aliases[0]) in values.pop()


def test_xray_filter_covers_every_radiograph_and_dx_only_itself() -> None:
    assert {"CR", "DX", "RG"} <= set(filter_values("modality", "X-ray"))
    assert "CR" not in filter_values("modality", "DX")


def _corpus(root: Path) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, *_ in ROWS:
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(images / name)
    shutil.copy(get_testdata_file("MR_small.dcm"), images / "mr.dcm")
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["image_path", "text", "modality", "view", "body_part"])
        for name, modality, view, body_part in ROWS:
            out.writerow([f"images/{name}", f"Brain mass in {name}. No effusion.", modality, view,
                          body_part])
    return manifest


def _where(kind: str, root: Path) -> dict:
    return {"backend": kind, "url": str(root / "qdrant-local") if kind == "qdrant" else None}


def _studies(hits) -> set[str]:
    return {hit.study for hit in hits}


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_aliases_find_the_same_studies_on_every_backend(kind: str, tmp_path: Path) -> None:
    manifest = _corpus(tmp_path / "studies")
    index = tmp_path / "index"
    where = _where(kind, tmp_path)
    index_folder(tmp_path / "studies", index=index, reports=manifest, workers=0, model=TINY,
                 **where)
    mr = _studies(search("brain", index=index, k=50, filters=Filters(modality="MR")).hits)
    mri = _studies(search("brain", index=index, k=50, filters=Filters(modality="MRI")).hits)
    assert len(mr) == 3 and mr == mri  # a.png (MRI), b.png (MR) and the DICOM MR
    in_reports = [_studies(search("brain mass", index=index, k=50, target="reports",
                                  filters=Filters(modality=m)).hits) for m in ("MR", "mri")]
    assert len(in_reports[0]) == 2 and in_reports[0] == in_reports[1]
    axial = [_studies(search("brain", index=index, k=50, filters=Filters(view=v)).hits)
             for v in ("AXIAL", "transverse")]
    assert len(axial[0]) >= 2 and axial[0] == axial[1]
    chest = [_studies(search("x", index=index, k=50, filters=Filters(body_part=b)).hits)
             for b in ("CHEST", "thorax")]
    assert len(chest[0]) == 1 and chest[0] == chest[1]
    probe = tmp_path / "studies" / "images" / "c.png"
    assert _studies(similar(probe, index=index, k=50, filters=Filters(modality="MR")).hits) == \
        _studies(similar(probe, index=index, k=50, filters=Filters(modality="MRI")).hits) == mr
    labelled = [{hit.study for hit in label_query("brain", min_prob=0.01, index=index,
                                                   filters=Filters(modality=m)).hits}
                for m in ("MR", "MRI")]
    assert labelled[0] == labelled[1] and labelled[0] <= mr
    # Results show one spelling: the defined term.
    shown = {m for hit in search("brain", index=index, k=50).hits for m in hit.modalities}
    assert shown == {"MR", "CT", "DX"}


def _payload_values(index: Path, kind: str, root: Path, collection: str, field: str) -> set:
    spec = backend_spec(**_where(kind, root)) if kind == "qdrant" else None
    with Store.open_for_reading(index, spec) as store:
        records = store.backend.fetch(collection, PointFilter.build(), 1000)
    out: set = set()
    for record in records:
        value = record.payload.get(field)
        out |= set(value) if isinstance(value, list) else {value}
    return out - {None}


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_an_index_written_before_is_renormalised_without_reembedding(kind: str,
                                                                    tmp_path: Path) -> None:
    manifest = _corpus(tmp_path / "studies")
    index = tmp_path / "index"
    where = _where(kind, tmp_path)
    index_folder(tmp_path / "studies", index=index, reports=manifest, workers=0, model=TINY,
                 **where)
    # As an older radsearch wrote it: values as the manifest spelt them, in the catalog and in the
    # back end's payloads, and no record of the terms' version.
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        for table in ("images", "series"):
            conn.execute(f"UPDATE {table} SET modality = 'MRI', view = 'Transverse' "
                         "WHERE modality = 'MR' AND view = 'AXIAL'")
        if kind != "faiss":  # the faiss back end reads payloads from the catalog itself
            conn.execute("UPDATE backend_points SET sent = 0")
    with Store.open_for_writing(index, create_model(TINY).describe()) as store:
        store.sync_backend()
    assert "MRI" in _payload_values(index, kind, tmp_path, "images", "modality")
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'terms.version'")
        vectors_before = conn.execute("SELECT id, slot FROM vectors ORDER BY id").fetchall()

    summary = index_folder(tmp_path / "studies", index=index, reports=manifest, workers=0,
                           model=TINY)

    assert summary.indexed == 0
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        assert conn.execute("SELECT id, slot FROM vectors ORDER BY id").fetchall() == vectors_before
        for table in ("images", "series"):
            assert {row[0] for row in conn.execute(f"SELECT modality FROM {table}")} == \
                {"MR", "CT", "DX"}
            assert "TRANSVERSE" not in {row[0] for row in conn.execute(f"SELECT view FROM {table}")}
    for collection in ("images", "series", "studies", "sentences"):
        assert _payload_values(index, kind, tmp_path, collection, "modality") == {"MR", "CT", "DX"}
        assert "TRANSVERSE" not in _payload_values(index, kind, tmp_path, collection, "view")
