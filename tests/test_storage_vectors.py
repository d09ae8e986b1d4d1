"""Each vector stored once, in the vector file beside the catalog: what a rolled-back or failed
commit leaves, compaction under a reader, and an index written before the file (vectors as blobs
in the catalog), searched as it is and moved by the next writer."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radsearch import search
from radsearch.indexer import index_folder, writer
from radsearch.storage import catalog, vectors
from radsearch.storage.store import Store

TINY = "hashing-tiny"
QUERIES = ("mass", "fracture", "edema")


def _studies(root: Path, count: int) -> Path:
    rng = np.random.default_rng(1)
    for number in range(count):
        folder = root / f"study{number}"
        folder.mkdir(parents=True)
        Image.fromarray((rng.random((32, 32)) * 255).astype("uint8")).save(folder / "image.png")
        (folder / "report.txt").write_text(f"FINDINGS: mass number {number}. IMPRESSION: stable.")
    return root


def _answers(index: Path) -> list:
    return [[(round(h.score, 5), sorted(i.path for i in h.images), sorted(s.text for s in h.sentences))
             for h in search(query, index=index, k=5, target=target).hits]
            for query in QUERIES for target in ("images", "reports")]


def _all_vectors(index: Path) -> dict[tuple[str, int], np.ndarray]:
    with Store.open_for_reading(index) as store, store.snapshot() as conn:
        rows = conn.execute("SELECT collection, ref_id, id FROM vectors ORDER BY id").fetchall()
        matrix = vectors.read_by_ids(conn, [row[2] for row in rows], store.dim)
    return {(row[0], row[1]): matrix[i] for i, row in enumerate(rows)}


def _describe(index: Path) -> dict:
    with Store.open_for_reading(index) as store:
        meta = store.meta
    return {"name": meta["model.name"], "weights_hash": meta["model.weights_hash"],
            "dim": int(meta["model.dim"]), "preprocessing": {}}


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    root = _studies(tmp_path / "studies", 8)
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0)
    return root, index


def test_the_vectors_are_stored_once_beside_a_catalog_that_holds_none(indexed):
    _, index = indexed
    stored = _all_vectors(index)
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(vectors)")}
        slots = [row[0] for row in conn.execute("SELECT slot FROM vectors ORDER BY slot")]
    assert "vec" not in columns and slots == list(range(len(stored)))
    dim = len(next(iter(stored.values())))
    assert (index / "vectors.f32").stat().st_size == len(stored) * dim * 4
    assert not list((index / "faiss").glob("*")) if (index / "faiss").exists() else True


def test_a_rolled_back_write_leaves_nothing_and_its_slots_are_written_again(indexed):
    _, index = indexed
    before = _all_vectors(index)
    dim = len(next(iter(before.values())))
    with Store.open_for_writing(index, {**_describe(index)}) as store:
        conn = store.conn
        handed_out = vectors.dead_slots(conn) + len(before)
        with pytest.raises(RuntimeError), catalog.transaction(conn):
            writer.put_vector(conn, "studies", 10_000, np.full(dim, 0.5, np.float32))
            raise RuntimeError("a failure before the commit")
        assert int(catalog.get_meta(conn)[vectors.SLOTS_KEY]) == handed_out
        with catalog.transaction(conn):
            writer.put_vector(conn, "studies", 10_001, np.full(dim, 0.25, np.float32))
        slot = conn.execute("SELECT slot FROM vectors WHERE ref_id = 10001").fetchone()[0]
        assert slot == handed_out  # the rolled-back slot, written again
        np.testing.assert_array_equal(vectors.read_vectors(conn, "studies", [10_001], dim)[0],
                                      np.full(dim, 0.25, np.float32))
        with catalog.transaction(conn):
            conn.execute("DELETE FROM vectors WHERE ref_id = 10001")
    assert _all_vectors(index).keys() == before.keys()


def test_a_vector_file_that_cannot_be_made_durable_keeps_its_rows_out(indexed, monkeypatch):
    """The file is fsynced before the catalog commits the rows that reference it: when that
    fails, the transaction is rolled back, so no committed row references bytes not on disk."""
    _, index = indexed
    dim = _describe(index)["dim"]
    with Store.open_for_writing(index, _describe(index)) as store:
        def failing_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(vectors.os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="Input/output"), catalog.transaction(store.conn):
            writer.put_vector(store.conn, "studies", 20_000, np.ones(dim, np.float32))
        monkeypatch.undo()
        assert store.conn.execute("SELECT COUNT(*) FROM vectors WHERE ref_id = 20000"
                                  ).fetchone()[0] == 0


def test_compaction_keeps_every_vector_and_a_reader_of_the_old_file_reads_it_whole(indexed):
    root, index = indexed
    for number in range(6):
        shutil.rmtree(root / f"study{number}")
    index_folder(root, index=index, model=TINY, workers=0, prune=True)
    kept = _all_vectors(index)
    answers = _answers(index)

    reader = Store.open_for_reading(index)
    dim = reader.dim
    with reader.snapshot() as conn:  # a snapshot taken before compaction
        old_ids = [row[0] for row in conn.execute("SELECT id FROM vectors ORDER BY id")]
        with Store.open_for_writing(index, _describe(index)) as store:
            dead = vectors.dead_slots(store.conn)
            assert dead > len(kept) and vectors.compact(store.conn, store.dim, force=True)
            assert vectors.dead_slots(store.conn) == 0
        assert (index / "vectors.f32").exists() and (index / "vectors-2.f32").exists()
        np.testing.assert_array_equal(vectors.read_by_ids(conn, old_ids, dim),
                                      np.stack([kept[key] for key in kept]))
    reader.close()

    assert {key: value.tolist() for key, value in _all_vectors(index).items()} == \
        {key: value.tolist() for key, value in kept.items()}
    assert _answers(index) == answers
    with Store.open_for_writing(index, _describe(index)):
        pass  # the next writer removes the older generation
    assert not (index / "vectors.f32").exists()
    assert (index / "vectors-2.f32").stat().st_size == len(kept) * dim * 4
    assert _answers(index) == answers


def _as_written_before_the_vector_file(index: Path) -> None:
    """Rewrite an index as radsearch wrote it before: every vector a blob in the catalog."""
    stored = _all_vectors(index)
    with sqlite3.connect(index / "catalog.sqlite", isolation_level=None) as conn:
        conn.execute("BEGIN")
        for trigger in ("images", "series", "studies", "sentences"):
            conn.execute(f"DROP TRIGGER {trigger}_drop_vector")
        conn.execute("CREATE TABLE old (id INTEGER PRIMARY KEY, collection TEXT NOT NULL, "
                     "ref_id INTEGER NOT NULL, vec BLOB NOT NULL, UNIQUE (collection, ref_id))")
        rows = conn.execute("SELECT id, collection, ref_id FROM vectors").fetchall()
        conn.executemany("INSERT INTO old VALUES (?, ?, ?, ?)",
                         [(vid, c, r, stored[(c, r)].astype("<f4").tobytes()) for vid, c, r in rows])
        conn.execute("DROP TABLE vectors")
        conn.execute("ALTER TABLE old RENAME TO vectors")
        for table in ("images", "series", "studies", "sentences"):
            conn.execute(f"CREATE TRIGGER {table}_drop_vector AFTER DELETE ON {table} BEGIN "
                         f"DELETE FROM vectors WHERE collection = '{table}' AND ref_id = OLD.id; END")
        conn.execute("DELETE FROM meta WHERE key LIKE 'vectors.%' OR key LIKE 'faiss.%'")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    (index / "vectors.f32").unlink()
    shutil.rmtree(index / "faiss", ignore_errors=True)


def test_an_index_with_its_vectors_in_the_catalog_is_searched_then_moved_by_the_next_run(indexed):
    root, index = indexed
    answers, stored = _answers(index), _all_vectors(index)
    _as_written_before_the_vector_file(index)

    assert _answers(index) == answers  # searched as it is: a reader changes nothing
    assert not (index / "vectors.f32").exists()
    summary = index_folder(root, index=index, model=TINY, workers=0)
    assert summary.indexed == 0 and summary.failures == []
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        assert "vec" not in {row[1] for row in conn.execute("PRAGMA table_info(vectors)")}
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the blobs' pages freed
    assert {k: v.tolist() for k, v in _all_vectors(index).items()} == \
        {k: v.tolist() for k, v in stored.items()}
    assert _answers(index) == answers
