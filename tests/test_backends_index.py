"""A small real corpus indexed through `index_folder` into each back end gives the same answers;
the back end stays in step with the catalog through changes, pruning and interrupted syncs."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsearch import Filters, search, similar, stats
from radsearch.storage.backends import BackendSpec
from radsearch.storage import sync as backend_sync
from radsearch.cli import app
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.storage.store import Store
from tests.backend_params import ALL_BACKENDS
from tests.corpus import build_corpus
from tests.test_index_privacy import PLANTED, PLANTED_UIDS, planted_study  # noqa: F401 - a fixture

TINY = "hashing-tiny"
QUERIES = ("prostate calcifications", "brain mass with edema")
FILTERS = (Filters(), Filters(modality="CT"), Filters(modality="MRI"),
           Filters(date_from="2000-01-01", date_to="2030-12-31"))


KINDS = ALL_BACKENDS


def _where(kind: str, root: Path) -> dict:
    return {"backend": kind, "url": str(root / "qdrant-local") if kind == "qdrant" else None}


def answers(index: Path, **backend) -> list:
    """Every query's results per study (score, files, sentences, card), in a tie-proof order,
    leaving out studies that only tie at score 0 (which of them fill the k places is arbitrary);
    study keys are salted per store, so files stand for studies."""
    out = []
    for query in QUERIES:
        for target in ("images", "reports"):
            for flt in FILTERS:
                hits = search(query, index=index, k=4, target=target, filters=flt, **backend).hits
                out.append((len(hits), sorted(
                    ((-round(h.score, 4), sorted((i.path, i.frame) for i in h.images),
                      sorted(s.text for s in h.sentences), h.modalities, h.study_date)
                     for h in hits if h.score > 1e-6),
                    key=repr)))
    return out


def catalog_counts(index: Path) -> dict:
    """Vectors per collection in the catalog (a study with only a report has no study vector)."""
    with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        found = dict(conn.execute("SELECT collection, COUNT(*) FROM vectors GROUP BY collection"))
    return {name: found.get(name, 0) for name in ("studies", "series", "images", "sentences")}


def backend_counts(index: Path, **backend) -> dict:
    from radsearch.index_handle import backend_spec

    spec = backend_spec(backend.get("backend"), backend.get("url"))
    with Store.open_for_reading(index, spec) as store:
        return {name: store.backend.count(name)
                for name in ("studies", "series", "images", "sentences")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("backends") / "studies"
    return root, build_corpus(root, shared_data)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> list:
    root, info = corpus
    index = tmp_path_factory.mktemp("reference") / "index"
    index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0)
    return answers(index)


@pytest.mark.parametrize("kind", KINDS)
def test_each_back_end_gives_the_same_answers(kind, corpus, reference, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    where = _where(kind, tmp_path)
    summary = index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0,
                           backend=where["backend"], url=where["url"])
    assert summary.backend.startswith(kind) and summary.sent > 0
    # recorded: later commands find the back end without being told
    assert stats(index=index)["backend"].startswith(kind)
    assert answers(index) == reference
    assert backend_counts(index) == catalog_counts(index)
    again = index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0)
    assert (again.sent, again.deleted) == (0, 0)


def test_changes_and_pruning_reach_the_back_end(tmp_path, shared_data):
    work = tmp_path / "studies"
    info = build_corpus(work, shared_data)
    index = tmp_path / "index"
    where = _where("qdrant", tmp_path)
    index_folder(work, index=index, reports=info["reports_csv"], model=TINY, workers=0, **where)
    before = backend_counts(index)

    shutil.rmtree(work / "series")
    medpix = work / "medpix" / info["medpix"][0]["image_path"]
    shutil.copy(work / "medpix" / info["medpix"][1]["image_path"], medpix)
    summary = index_folder(work, index=index, model=TINY, workers=0, prune=True)
    assert summary.deleted > 0
    after = backend_counts(index)
    assert after == catalog_counts(index)
    assert after["series"] == before["series"] - 1 and after["images"] < before["images"]
    paths = {i.path for h in search("anything", index=index, k=50).hits for i in h.images}
    assert not any("/series/" in p for p in paths)


def test_one_image_twice_in_a_study_is_one_point_that_outlives_either_copy(corpus, tmp_path):
    root, info = corpus
    folder = tmp_path / "studies" / "case"
    folder.mkdir(parents=True)
    image = root / "medpix" / info["medpix"][0]["image_path"]
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(image, folder / name)
    index = tmp_path / "index"
    where = _where("qdrant", tmp_path)
    index_folder(folder.parent, index=index, model=TINY, workers=0, **where)
    assert backend_counts(index)["images"] == 1 and catalog_counts(index)["images"] == 3
    for name in ("a.jpg", "c.jpg"):
        (folder / name).unlink()
    index_folder(folder.parent, index=index, model=TINY, workers=0, prune=True)
    hits = search("anything", index=index, k=5).hits
    assert [(i.path for i in h.images) and [i.path for i in h.images] for h in hits] == [
        [str(folder / "b.jpg")]]


def test_an_interrupted_sync_is_finished_exactly_by_the_next_run(corpus, tmp_path, monkeypatch):
    root, info = corpus
    index = tmp_path / "index"
    where = _where("qdrant", tmp_path)
    real_send = backend_sync._send
    calls = []

    def failing_send(conn, backend, collection, *args):
        calls.append(collection)
        if collection == "sentences":  # after images, series and studies went out
            raise RuntimeError("connection lost")
        return real_send(conn, backend, collection, *args)

    monkeypatch.setattr(backend_sync, "_send", failing_send)
    with pytest.raises(RuntimeError):
        index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0, **where)
    monkeypatch.setattr(backend_sync, "_send", real_send)
    assert backend_counts(index)["sentences"] == 0
    finished = index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0)
    assert finished.sent == catalog_counts(index)["sentences"]
    assert backend_counts(index) == catalog_counts(index)


@pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None, reason="needs qdrant-edge")
def test_similar_and_the_cli_use_the_recorded_back_end(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(root / "medpix"), "--index", str(index), "--model",
                                 TINY, "--workers", "0", "--backend", "qdrant-edge",
                                 "--reports", str(info["reports_csv"])])
    assert result.exit_code == 0, result.output
    assert "(qdrant-edge)" in result.output and (index / "qdrant-edge").is_dir()
    image = root / "medpix" / info["medpix"][0]["image_path"]
    hits = similar(str(image), index=index, k=3).hits
    assert len(hits) == 3 and all(not h.study.endswith(info["medpix"][0]["image_path"]) for h in hits)
    shown = runner.invoke(app, ["stats", "--index", str(index)])
    assert "qdrant-edge" in shown.output


def test_a_back_end_of_another_model_is_refused(corpus, tmp_path):
    root, _ = corpus
    where = _where("qdrant", tmp_path)
    index_folder(root / "dicom", index=tmp_path / "one", model=TINY, workers=0, **where)
    other = {"name": "other-model", "weights_hash": "0" * 64, "dim": 64, "preprocessing": {}}
    with pytest.raises(RadsearchError, match="holds embeddings of model hashing-tiny"):
        Store.open_for_writing(tmp_path / "two", other, BackendSpec("qdrant", where["url"]))


@pytest.mark.parametrize("kind", KINDS[1:])
def test_no_planted_identifier_reaches_a_qdrant_store(kind, planted_study, tmp_path):
    index = tmp_path / "index"
    index_folder(planted_study, index=index, model=TINY, workers=0, **_where(kind, tmp_path))
    assert search("chest", index=index, k=3).hits
    store = index / "qdrant-edge" if kind == "qdrant-edge" else tmp_path / "qdrant-local"
    data = b"".join(p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file())
    for value in [*PLANTED.values(), *PLANTED_UIDS.values()]:
        assert value.encode() not in data


def test_searching_another_back_end_than_the_recorded_one_is_refused(corpus, tmp_path):
    root, _ = corpus
    index = tmp_path / "index"
    index_folder(root / "dicom", index=index, model=TINY, workers=0)
    with pytest.raises(RadsearchError, match="this index uses faiss, not qdrant-edge"):
        search("chest", index=index, backend="qdrant-edge")
    assert search("chest", index=index, backend="faiss").hits


def test_an_index_from_before_back_ends_is_searched_from_its_catalog(corpus, tmp_path):
    root, _ = corpus
    index = tmp_path / "index"
    index_folder(root / "dicom", index=index, model=TINY, workers=0)
    expected = search("chest", index=index).hits
    with sqlite3.connect(index / "catalog.sqlite") as conn:  # as radsearch 0.1 left it
        conn.execute("DELETE FROM meta WHERE key = 'backend'")
    shutil.rmtree(index / "faiss", ignore_errors=True)
    assert stats(index=index)["images"] == 3
    assert search("chest", index=index).hits == expected
    index_folder(root / "dicom", index=index, model=TINY, workers=0)
    assert search("chest", index=index).hits == expected
