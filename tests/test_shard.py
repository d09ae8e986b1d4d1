"""`index --shard i/n`: n machines fill one Qdrant store without duplicates or gaps, and any
machine - even one that indexed nothing - searches it with the answers of a single run."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

from radsearch import search
from radsearch.storage.backends import BackendSpec, PointFilter
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.indexer.discover import Shard
from radsearch.storage.store import Store
from tests.corpus import build_corpus

pytestmark = pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None,
                                reason="qdrant-client is not installed")
TINY = "hashing-tiny"
SHARDS = 3


def test_every_key_belongs_to_exactly_one_shard():
    shards = [Shard.parse(f"{i}/{SHARDS}") for i in range(1, SHARDS + 1)]
    keys = [f"study:1.2.3.{i}" for i in range(300)] + [f"folder:case{i}" for i in range(300)]
    owners = [[shard.owns(key) for shard in shards].count(True) for key in keys]
    assert owners == [1] * len(keys)
    assert min(sum(shard.owns(key) for key in keys) for shard in shards) > 150  # spread evenly
    for bad in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(RadsearchError, match="--shard"):
            Shard.parse(bad)


def _points(url: str) -> dict:
    """What the store holds, described without salted keys: files per collection, texts."""
    with Store.open_for_reading(Path("/nonexistent"), BackendSpec("qdrant", url)) as store:
        fetch = lambda name: store.backend.fetch(name, PointFilter(), 10_000)  # noqa: E731
        return {
            "images": sorted((r.payload["path"], r.payload["frame"]) for r in fetch("images")),
            "series": len(fetch("series")),
            "studies": sorted(tuple(i["path"] for i in r.payload["preview"]) for r in fetch("studies")),
            "sentences": sorted(r.payload["text"] for r in fetch("sentences")),
        }


def _files(index: Path) -> set[str]:
    with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM files")}


def _answers(**where) -> list:
    out = []
    for query in ("prostate calcifications", "brain mass"):
        for target in ("images", "reports"):
            hits = search(query, k=5, target=target, **where).hits
            out.append(sorted((round(h.score, 4), sorted(i.path for i in h.images),
                               sorted(s.text for s in h.sentences)) for h in hits if h.score > 1e-6))
    return out


def test_three_shards_fill_one_store_like_a_single_run(tmp_path, shared_data):
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data)
    single_url, cluster_url = str(tmp_path / "single"), str(tmp_path / "cluster")
    index_folder(root, index=tmp_path / "single-index", reports=info["reports_csv"], model=TINY,
                 workers=0, backend="qdrant", url=single_url)

    files = []
    for number in range(1, SHARDS + 1):
        index = tmp_path / f"shard{number}"
        summary = index_folder(root, index=index, reports=info["reports_csv"], model=TINY,
                               workers=0, backend="qdrant", url=cluster_url,
                               shard=f"{number}/{SHARDS}")
        assert summary.failed + summary.indexed + summary.skipped == len(_files(index))
        files.append(_files(index))
    # no file indexed twice, none left out
    assert sum(len(f) for f in files) == len(set().union(*files))
    assert set().union(*files) == _files(tmp_path / "single-index")
    assert sum(1 for f in files if f) >= 2  # the corpus really was split

    assert _points(cluster_url) == _points(single_url)
    # a machine with no catalog of its own searches the cluster; answers match the single run
    elsewhere = tmp_path / "no-index-here"
    assert (_answers(index=elsewhere, backend="qdrant", url=cluster_url)
            == _answers(index=tmp_path / "single-index"))

    again = index_folder(root, index=tmp_path / "shard2", model=TINY, workers=0,
                         shard=f"2/{SHARDS}")
    assert (again.indexed, again.sent, again.deleted) == (0, 0, 0)
    with pytest.raises(RadsearchError, match="shard 2/3"):
        index_folder(root, index=tmp_path / "shard2", model=TINY, workers=0, shard="1/3")
    with pytest.raises(RadsearchError, match="shard 2/3"):
        index_folder(root, index=tmp_path / "shard2", model=TINY, workers=0)
