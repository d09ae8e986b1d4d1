"""The faiss back end of an index answers from the catalog itself: every search, count and fetch
equals the contract's reference semantics (exact search; ``PointFilter.matches`` on the payloads the
catalog's rows make), under every kind of filter, in every collection, with flat and IVF indexes;
an index written with each approximate kind, and the filter selection a reader keeps."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from radsearch.indexer import index_folder
from radsearch.storage import payloads
from radsearch.storage.backends import PointFilter
from radsearch.storage.backends.base import exact_search
from radsearch.storage.backends.catalog_backend import CatalogBackend
from radsearch.storage.store import Store
from radsearch.storage.vectors import read_by_ids
from tests.corpus import build_corpus

TINY = "hashing-tiny"
COLLECTIONS = ("images", "series", "studies", "sentences")


@pytest.fixture(scope="module")
def index(tmp_path_factory, shared_data) -> Path:
    root = tmp_path_factory.mktemp("catalog-backend") / "studies"
    info = build_corpus(root, shared_data, medpix_images=12)
    twice = root / "twice"  # one image twice in one study: one point
    twice.mkdir()
    other = sorted((shared_data / "medpix2" / "images").iterdir())[-1]  # in no other study
    assert other.name not in {Path(row["image_path"]).name for row in info["medpix"]}
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(other, twice / name)
    index = tmp_path_factory.mktemp("catalog-backend") / "index"
    index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0)
    return index


def _reference(conn, collection: str, dim: int) -> tuple[list[str], list[dict], np.ndarray]:
    """Every point of a collection as the contract defines it: one per point id, made by the
    newest row (the largest vector id)."""
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM vectors WHERE collection = ? ORDER BY id", (collection,))]
    latest: dict[str, tuple[int, dict]] = {}
    for vid, pid, payload in sorted(payloads.build_payloads(conn, collection, ids)):
        latest[pid] = (vid, payload)
    points = list(latest.items())
    vectors = read_by_ids(conn, [vid for _, (vid, _) in points], dim)
    return [pid for pid, _ in points], [payload for _, (_, payload) in points], vectors


def _filters(payloads_: list[dict]) -> list[PointFilter]:
    values = {field: sorted({v for p in payloads_ for v in
                             (p.get(field) if isinstance(p.get(field), list) else [p.get(field)])
                             if v is not None})
              for field in ("modality", "body_part", "view", "study", "series")}
    days = sorted(p["study_day"] for p in payloads_ if p.get("study_day"))
    out = [PointFilter()]
    for field, found in values.items():
        for value in found[:2]:
            out.append(PointFilter.build(any_of={field: [value]}))
            out.append(PointFilter.build(none_of={field: [value]}))
    out.append(PointFilter.build(any_of={"modality": ["CT", "MR"]}, none_of={"view": ["AXIAL"]}))
    out.append(PointFilter.build(any_of={"modality": ["NOT A MODALITY"]}))
    if days:
        middle = days[len(days) // 2]
        out += [PointFilter.build(ranges={"study_day": (middle, None)}),
                PointFilter.build(ranges={"study_day": (None, middle)}),
                PointFilter.build(any_of={"modality": values["modality"][:1]},
                                  ranges={"study_day": (days[0], days[-1])})]
    return out


@pytest.mark.parametrize("options", [{}, {"faiss_index": "ivfsq", "faiss_params": {
    "nlist": 2, "nprobe": 2, "k_factor": 64}}], ids=["flat", "ivfsq"])
def test_search_count_and_fetch_equal_the_reference_semantics(index, options, tmp_path):
    store = Store.open_for_reading(index)
    backend = CatalogBackend(store.conn, tmp_path / "faiss", store.dim, read_only=True,
                             options=options)
    try:
        rng = np.random.default_rng(0)
        checked = 0
        for collection in COLLECTIONS:
            ids, payloads_, vectors = _reference(store.conn, collection, store.dim)
            assert ids, collection
            for flt, query in itertools.product(_filters(payloads_), range(2)):
                vector = rng.standard_normal(store.dim).astype(np.float32)
                vector /= np.linalg.norm(vector)
                passing = np.asarray([i for i, p in enumerate(payloads_) if flt.matches(p)],
                                     dtype=np.int64)
                scores, _ = exact_search(vectors[passing], vector, 5)
                hits = backend.search(collection, vector, 5, flt)
                np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
                # Each hit is a passing point of that score (equal vectors tie: either may come).
                exact = vectors[passing] @ vector
                for hit in hits:
                    tied = {ids[passing[r]] for r in np.flatnonzero(abs(exact - hit.score) < 1e-5)}
                    assert hit.id in tied, (collection, flt)
                    assert hit.payload == payloads_[ids.index(hit.id)]
                assert len({h.id for h in hits}) == len(hits)
                assert backend.count(collection, flt) == len(passing), (collection, flt)
                fetched = backend.fetch(collection, flt, 1000, with_vectors=True)
                assert sorted(r.id for r in fetched) == sorted(ids[i] for i in passing)
                for record in fetched:
                    np.testing.assert_array_equal(record.vector, vectors[ids.index(record.id)])
                checked += 1
        assert checked > 60
    finally:
        backend.close()
        store.close()


def test_one_image_twice_in_a_study_is_one_point(index):
    with Store.open_for_reading(index) as store:
        twice = store.conn.execute(
            "SELECT COUNT(*) FROM images JOIN files ON files.id = images.file_id "
            "WHERE files.path LIKE '%/twice/%'").fetchone()[0]
        assert twice == 2
        hits = store.backend.search("images", np.ones(store.dim, np.float32), 1000)
        paths = [h.payload["path"] for h in hits if "/twice/" in h.payload["path"]]
        assert paths == [max(paths)] and paths[0].endswith("b.jpg")  # the newer row's payload
        assert store.backend.count("images") == store.conn.execute(
            "SELECT COUNT(*) FROM images").fetchone()[0] - 1


def test_writes_through_the_contract_are_refused_in_one_line(index):
    with Store.open_for_reading(index) as store:
        with pytest.raises(Exception, match="points are written by `radsearch index`"):
            store.backend.upsert("images", [])


def test_the_writer_sees_its_own_commits(tmp_path, shared_data):
    """The writer's own commits leave SQLite's data_version as it was: its back end must still
    notice them, or it would answer from the index it loaded before."""
    from radsearch.encoders import create_model
    from radsearch.indexer import writer
    from radsearch.storage import catalog

    root = tmp_path / "studies"
    build_corpus(root, shared_data)
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0)
    with Store.open_for_writing(index, create_model(TINY).describe()) as store:
        query = np.ones(store.dim, np.float32) / np.sqrt(store.dim)
        last = store.backend.search("images", query, 100)[-1]
        image = store.conn.execute("SELECT i.id FROM images AS i JOIN files AS f ON "
                                   "f.id = i.file_id WHERE f.path = ?",
                                   (last.payload["path"],)).fetchone()[0]
        with catalog.transaction(store.conn):  # the last image now holds the query itself
            writer.put_vector(store.conn, "images", image, query)
        top = store.backend.search("images", query, 1)[0]
        assert top.id == last.id and top.score > 0.999


@pytest.mark.parametrize("kind", ["hnsw", "ivfsq"])
def test_an_index_is_written_with_each_approximate_faiss_kind(kind, tmp_path):
    """HNSW over the vector file keeps SQ8 codes, trained like IVF's lists before the first add:
    `radsearch index --backend-opt faiss_index=hnsw` once failed there."""
    from PIL import Image

    root = tmp_path / "studies"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / f"{i:02d}.png")
    index = tmp_path / "index"
    options = {"faiss_index": kind, "faiss_params": {"nlist": 4, "nprobe": 4}} if kind == "ivfsq" else {
        "faiss_index": kind}
    summary = index_folder(root, index=index, model=TINY, workers=0, backend="faiss",
                           backend_options=options)
    assert summary.images == 40
    with Store.open_for_reading(index) as store:
        assert CatalogBackend(store.conn, index / "faiss", store.dim, read_only=True).recorded_choice(
            "images").kind == kind
        ids, _, vectors = _reference(store.conn, "images", store.dim)
        hits = store.backend.search("images", vectors[7], 3)
        assert hits[0].id == ids[7] and hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_a_kept_selection_is_dropped_when_the_catalog_changes(tmp_path):
    """A reader keeps its last filter selection for the count and search of one query; a writer's
    commit in between makes it select again."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    root = tmp_path / "studies"
    (root / "a").mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "a" / "ct.dcm")
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0)
    ct = PointFilter.build(any_of={"modality": ["CT"]})
    with Store.open_for_reading(index) as store:
        reader = CatalogBackend(store.conn, index / "faiss", store.dim, read_only=True)
        query = np.ones(store.dim, np.float32) / np.sqrt(store.dim)
        assert reader.count("studies", ct) == 1 and len(reader.search("studies", query, 10, ct)) == 1

        other = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        other.StudyInstanceUID, other.SeriesInstanceUID = generate_uid(), generate_uid()
        other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        (root / "b").mkdir()
        other.save_as(root / "b" / "ct.dcm")
        index_folder(root, index=index, model=TINY, workers=0)  # another connection commits

        assert reader.count("studies", ct) == 2
        assert len(reader.search("studies", query, 10, ct)) == 2
