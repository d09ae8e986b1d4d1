"""FAISS indexes over a SQLite store of points of their own, for a directory without a catalog
(an index folder's ``faiss`` back end searches its catalog instead: ``catalog_backend``). The contract
suite and the search benchmarks use it as a stand-alone store.

Layout::

    DIR/points.sqlite      points (id, payload), their vectors and filter terms, the record - the truth
    DIR/COLLECTION.faiss   one FAISS index per collection - a cache, reconciled with points.sqlite

Each upsert or delete commits to points.sqlite; FAISS files are written atomically by ``persist``.
On open a FAISS file is reconciled with the points (missing ones added, removed ones dropped), so a
file saved before a crash, or none, is harmless. The index kind follows the collection size (see
``faiss_index``) and is recorded per collection; HNSW and IVF indexes, which cannot remove ids,
are rebuilt from the stored vectors after deletions. Filters are SQL over the terms tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from radsearch.storage.backends.base import (
    Backend,
    Hit,
    Point,
    PointFilter,
    Record,
    integer_terms,
    keyword_terms,
)
from radsearch.storage.backends.faiss_index import (
    EXACT_LIMIT,
    MMAP_BYTES,
    SEARCH_PARAMS,
    TRAINED_KINDS,
    FaissIndex,
    IndexChoice,
    choose_index,
    env_params,
    resolve_device,
    training_sample,
)
from radsearch.storage import sqlite as sqlite_helper
from radsearch.storage.sqlite import blobs_to_matrix as _matrix
from radsearch.storage.sqlite import chunks, marks
from radsearch.errors import RadsearchError

POINTS_FILE = "points.sqlite"
_BUILD_CHUNK = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, dim INTEGER NOT NULL, choice TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    fid INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (collection, id)
);
CREATE INDEX IF NOT EXISTS points_collection ON points(collection, fid);
-- Vectors apart from payloads: a search reads payload rows only, several to a page.
CREATE TABLE IF NOT EXISTS point_vectors (fid INTEGER PRIMARY KEY, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terms (fid INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS terms_value ON terms(field, value, fid);
CREATE INDEX IF NOT EXISTS terms_fid ON terms(fid);
CREATE TABLE IF NOT EXISTS ints (fid INTEGER NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ints_value ON ints(field, value, fid);
CREATE INDEX IF NOT EXISTS ints_fid ON ints(fid);
CREATE TRIGGER IF NOT EXISTS points_drop_terms AFTER DELETE ON points BEGIN
    DELETE FROM terms WHERE fid = OLD.fid; DELETE FROM ints WHERE fid = OLD.fid;
    DELETE FROM point_vectors WHERE fid = OLD.fid; END;
"""


class FaissBackend(Backend):
    """Options: ``faiss_index`` (auto|flat|ivfsq|hnsw|ivfpq, else $RADSEARCH_FAISS_INDEX),
    ``faiss_params`` ({name: int}, then $RADSEARCH_FAISS_PARAMS: m, ef_construction, nlist, pq_m
    rebuild the index; ef_search, nprobe, k_factor only change how it is searched),
    ``device`` (auto|cpu|cuda)."""

    kind = "faiss"

    def __init__(self, directory: Path, *, read_only: bool = False, options: dict | None = None):
        options = options or {}
        self.directory = Path(directory)
        self.read_only = read_only
        self.index_kind = str(options.get("faiss_index", "auto"))
        self.index_params = {**dict(options.get("faiss_params", {})), **env_params()}
        self.device = resolve_device(str(options.get("device", "auto")))
        self._indexes: dict[str, FaissIndex] = {}
        self._stale: set[str] = set()  # collections whose index still holds removed ids
        self._seen_version: int | None = None
        self._info_dirty = True
        self._touched: set[str] = set()  # collections whose saved file is behind their points
        self._info: dict[str, tuple[int, IndexChoice]] = {}
        path = self.directory / POINTS_FILE
        if read_only:
            self.conn = sqlite_helper.connect_read_only(path) if path.exists() else None
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite_helper.connect(path)
            self.conn.executescript(_SCHEMA)

    # -- bookkeeping --------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only or self.conn is None:
            raise RadsearchError(f"{self.directory}: opened read-only")
        with sqlite_helper.transaction(self.conn):
            yield self.conn

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One consistent view of points.sqlite for a reader (a run may commit meanwhile)."""
        if not self.read_only or self.conn is None:
            yield
            return
        with sqlite_helper.snapshot(self.conn):
            yield

    def _refresh(self) -> None:
        """Reload the collection list, and reconcile loaded indexes with what another connection
        committed since the last look (this connection's own changes are applied as they happen)."""
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        if version == self._seen_version and not self._info_dirty:
            return
        with self._snapshot():
            self._info = {
                name: (dim, IndexChoice.from_dict(json.loads(choice)))
                for name, dim, choice in self.conn.execute(
                    "SELECT name, dim, choice FROM collections")
            }
            if self._seen_version is not None and version != self._seen_version:
                for name in list(self._indexes):
                    self._reconcile(name)
        self._seen_version = version
        self._info_dirty = False

    def create_collection(self, name: str, dim: int) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT dim FROM collections WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row[0] != dim:
                    raise RadsearchError(f"collection {name} holds {row[0]}-d vectors, not {dim}-d")
                return
            choice = choose_index(0, dim, self.index_kind, device=self.device,
                                  overrides=self.index_params)
            conn.execute("INSERT INTO collections(name, dim, choice) VALUES (?, ?, ?)",
                         (name, dim, json.dumps(choice.to_dict())))
        self._info_dirty = True

    def _collection(self, name: str) -> tuple[int, IndexChoice] | None:
        if self.conn is None:
            return None
        self._refresh()
        return self._info.get(name)

    def _index(self, name: str) -> FaissIndex | None:
        """The collection's index, loaded (memory-mapped when large and read-only) and reconciled."""
        info = self._collection(name)
        if info is None:
            return None
        if name in self._indexes and name not in self._stale:
            return self._indexes[name]  # every search but the first
        with self._snapshot():
            return self._load(name, info)

    def _load(self, name: str, info: tuple[int, IndexChoice]) -> FaissIndex:
        if name not in self._indexes:
            dim, choice = info
            path = self.directory / f"{name}.faiss"
            mmap = self.read_only and path.exists() and path.stat().st_size >= MMAP_BYTES
            loaded = FaissIndex.load(path, dim, choice, mmap=mmap, device=self.device,
                                     search_params=self.index_params)
            self._indexes[name] = loaded or FaissIndex(dim, choice, device=self.device,
                                                       search_params=self.index_params)
            if loaded is None and choice.kind in TRAINED_KINDS:
                self._stale.add(name)  # an IVF index is trained on its vectors: build it
            self._reconcile(name)
        if name in self._stale:
            self._rebuild(name)
        return self._indexes[name]

    def _fids(self, name: str) -> np.ndarray:
        return np.fromiter(
            (row[0] for row in self.conn.execute(
                "SELECT fid FROM points WHERE collection = ? ORDER BY fid", (name,))),
            dtype=np.int64,
        )

    def _reconcile(self, name: str) -> None:
        """Make the loaded index hold exactly the stored points of ``name``."""
        index = self._indexes[name]
        fids = self._fids(name)
        held = index.ids()
        extra = np.setdiff1d(held, fids, assume_unique=True)
        missing = np.setdiff1d(fids, held, assume_unique=True)
        if not (extra.size or missing.size):
            return
        self._touched.add(name)
        if index.mapped:  # mapped indexes are read-only: read it into memory to change it
            dim, choice = self._info[name]
            index = (FaissIndex.load(self.directory / f"{name}.faiss", dim, choice,
                                     device=self.device, search_params=self.index_params)
                     or FaissIndex(dim, choice, device=self.device, search_params=self.index_params))
            self._indexes[name] = index
        if (extra.size and not index.removable) or not index.trained:
            self._stale.add(name)
            return
        index.remove(extra)
        for start in range(0, missing.size, _BUILD_CHUNK):
            chunk = missing[start : start + _BUILD_CHUNK]
            index.add(self._vectors(chunk, index.dim), chunk)

    def _vectors(self, fids: np.ndarray, dim: int) -> np.ndarray:
        ids = [int(f) for f in fids]
        found = dict(sqlite_helper.select_in(
            self.conn, "SELECT fid, vec FROM point_vectors WHERE fid IN ({marks})", ids))
        return _matrix([found[i] for i in ids], dim)

    def _rebuild(self, name: str, choice: IndexChoice | None = None) -> None:
        """A new index of the stored points, read in chunks (never all vectors at once)."""
        dim, recorded = self._info[name]
        index = FaissIndex(dim, choice or recorded, device=self.device,
                           search_params=self.index_params)
        if index.choice.kind in TRAINED_KINDS:
            fids = self._fids(name)
            if len(fids):
                sample = training_sample(fids, index.choice.params["nlist"])
                index.train(self._vectors(np.sort(sample), dim))
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT v.fid, v.vec FROM point_vectors AS v JOIN points AS p ON p.fid = v.fid "
                "WHERE p.collection = ? AND v.fid > ? ORDER BY v.fid LIMIT ?",
                (name, last, _BUILD_CHUNK)).fetchall()
            if not rows:
                break
            index.add(_matrix([blob for _, blob in rows], dim),
                      np.asarray([fid for fid, _ in rows], dtype=np.int64))
            last = rows[-1][0]
        self._indexes[name] = index
        self._stale.discard(name)

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        info = self._collection(collection)
        if info is None:
            raise RadsearchError(f"no collection {collection}: create it first")
        dim = info[0]
        latest = list({point.id: point for point in points}.values())
        if not latest:
            return
        vectors = np.stack([np.asarray(p.vector, dtype=np.float32).reshape(-1) for p in latest])
        if vectors.shape[1] != dim:
            raise RadsearchError(f"{collection}: vectors are {vectors.shape[1]}-d, expected {dim}-d")
        blobs = [sqlite_helper.blob(vector) for vector in vectors]
        with self._write() as conn:
            # A point whose vector is unchanged keeps its place in the index: only its payload is
            # rewritten (no removal, so no rebuild of an HNSW or IVF index).
            same = self._same_vectors(conn, collection, latest, blobs)
            for point in latest:
                if point.id in same:
                    conn.execute("UPDATE points SET payload = ? WHERE fid = ?",
                                 (_dumps(point.payload), same[point.id]))
                    conn.execute("DELETE FROM terms WHERE fid = ?", (same[point.id],))
                    conn.execute("DELETE FROM ints WHERE fid = ?", (same[point.id],))
                    self._put_terms(conn, same[point.id], point.payload)
            changed = [i for i, point in enumerate(latest) if point.id not in same]
            removed = self._remove(conn, collection, [latest[i].id for i in changed])
            fids = []
            for i in changed:
                fid = conn.execute(
                    "INSERT INTO points(collection, id, payload) VALUES (?, ?, ?)",
                    (collection, latest[i].id, _dumps(latest[i].payload)),
                ).lastrowid
                conn.execute("INSERT INTO point_vectors(fid, vec) VALUES (?, ?)", (fid, blobs[i]))
                fids.append(fid)
                self._put_terms(conn, fid, latest[i].payload)
        self._apply(collection, removed, vectors[changed], np.asarray(fids, dtype=np.int64))

    def _same_vectors(self, conn: sqlite3.Connection, collection: str, points: list[Point],
                      blobs: list[bytes]) -> dict[str, int]:
        """Point id -> fid of the stored points whose vector equals the one given."""
        wanted = {point.id: blob for point, blob in zip(points, blobs)}
        same = {}
        for fid, point_id, blob in sqlite_helper.select_in(
            conn, "SELECT p.fid, p.id, v.vec FROM points AS p JOIN point_vectors AS v "
            "ON v.fid = p.fid WHERE p.collection = ? AND p.id IN ({marks})", list(wanted),
            before=(collection,)
        ):
            if blob == wanted[point_id]:
                same[point_id] = fid
        return same

    @staticmethod
    def _put_terms(conn: sqlite3.Connection, fid: int, payload: dict) -> None:
        conn.executemany("INSERT INTO terms(fid, field, value) VALUES (?, ?, ?)",
                         [(fid, f, v) for f, v in keyword_terms(payload)])
        conn.executemany("INSERT INTO ints(fid, field, value) VALUES (?, ?, ?)",
                         [(fid, f, v) for f, v in integer_terms(payload)])

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if self._collection(collection) is None or not ids:
            return
        with self._write() as conn:
            removed = self._remove(conn, collection, list(ids))
        self._apply(collection, removed, None, None)

    def _remove(self, conn: sqlite3.Connection, collection: str, ids: list[str]) -> np.ndarray:
        fids = [row[0] for row in sqlite_helper.select_in(
            conn, "SELECT fid FROM points WHERE collection = ? AND id IN ({marks})", ids,
            before=(collection,))]
        for part in chunks(fids):
            conn.execute(f"DELETE FROM points WHERE fid IN ({marks(part)})", part)
        return np.asarray(fids, dtype=np.int64)

    def _apply(self, collection: str, removed: np.ndarray, vectors, fids) -> None:
        """Mirror a committed change in the loaded index (an unloaded one reconciles on load)."""
        if not removed.size and (fids is None or not len(fids)):
            return  # payloads only: the index is unchanged
        self._touched.add(collection)
        index = self._indexes.get(collection)
        if index is None or collection in self._stale:
            return
        if (removed.size and not index.removable) or index.mapped:
            self._stale.add(collection)
            return
        index.remove(removed)
        if fids is not None and index.trained:
            index.add(vectors, fids)
        elif fids is not None:
            self._stale.add(collection)

    # -- reads --------------------------------------------------------------------------------
    def _where(self, collection: str, filter: PointFilter | None) -> tuple[str, list]:
        clauses, args = ["p.collection = ?"], [collection]
        for field, values in (filter.any_of if filter else ()):
            clauses.append("p.fid IN (SELECT fid FROM terms WHERE field = ? AND value IN "
                           f"({','.join('?' * len(values))}))")
            args += [field, *map(str, values)]
        for field, values in (filter.none_of if filter else ()):
            clauses.append("p.fid NOT IN (SELECT fid FROM terms WHERE field = ? AND value IN "
                           f"({','.join('?' * len(values))}))")
            args += [field, *map(str, values)]
        for field, low, high in (filter.ranges if filter else ()):
            clauses.append("p.fid IN (SELECT fid FROM ints WHERE field = ? AND value >= ? "
                           "AND value <= ?)")
            args += [field, -(2**63) if low is None else low, 2**63 - 1 if high is None else high]
        return " AND ".join(clauses), args

    def search(self, collection: str, vector: np.ndarray, k: int,
               filter: PointFilter | None = None) -> list[Hit]:
        # A run committing meanwhile can only remove a hit's payload: that hit is left out.
        index = self._index(collection)
        if index is None or k <= 0:
            return []
        allowed = excluded = None
        if filter is not None and filter.only_exclusions:
            where, args = self._where(collection, PointFilter(any_of=filter.none_of))
            excluded = self._select_fids(where, args)
        elif filter is not None and not filter.empty:
            allowed = self._select_fids(*self._where(collection, filter))
        scores, fids = index.search(vector, k, allowed=allowed, excluded=excluded)
        stored = self._payloads(fids)
        return [Hit(stored[f][0], float(s), stored[f][1])
                for s, f in zip(scores.tolist(), fids.tolist()) if f in stored]

    def _select_fids(self, where: str, args: list) -> np.ndarray:
        return np.fromiter((row[0] for row in self.conn.execute(
            f"SELECT p.fid FROM points AS p WHERE {where}", args)), dtype=np.int64)

    def _payloads(self, fids: np.ndarray) -> dict[int, tuple[str, dict]]:
        found = {}
        for part in chunks(fids.tolist()):
            rows = self.conn.execute(_PAYLOAD_SQL.get(len(part)) or _payload_sql(len(part)),
                                     part).fetchall()
            # One JSON document for all of them: a search's cost is mostly per-call overhead.
            payloads = _loads(f"[{','.join(row[2] for row in rows)}]")
            found.update(zip((row[0] for row in rows), zip((row[1] for row in rows), payloads)))
        return found

    def fetch(self, collection: str, filter: PointFilter, limit: int, *,
              with_vectors: bool = False) -> list[Record]:
        info = self._collection(collection)
        if info is None:
            return []
        where, args = self._where(collection, filter)
        rows = self.conn.execute(
            "SELECT p.id, p.payload, v.vec FROM points AS p JOIN point_vectors AS v ON v.fid = p.fid "
            f"WHERE {where} LIMIT ?", (*args, limit))
        return [Record(point_id, json.loads(payload),
                       _matrix([blob], info[0])[0] if with_vectors else None)
                for point_id, payload, blob in rows]

    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        if self._collection(collection) is None:
            return 0
        where, args = self._where(collection, filter)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM points AS p WHERE {where}",
                                     args).fetchone()[0])

    # -- record, persistence ------------------------------------------------------------------
    def metadata(self) -> dict | None:
        if self.conn is None:
            return None
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'record'").fetchone()
        return json.loads(row[0]) if row else None

    def initialise(self, record: dict) -> dict:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('record', ?)",
                         (json.dumps(record, sort_keys=True),))
        return self.metadata() or record

    def update_record(self, changes: dict) -> None:
        record = {**(self.metadata() or {}), **changes}
        record = {key: value for key, value in record.items() if value is not None}
        self.conn.execute("PRAGMA secure_delete = ON")  # the old value is zeroed, not left free
        with self._write() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES ('record', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value",
                         (json.dumps(record, sort_keys=True),))
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor left in the write-ahead log

    def set_generation(self, value: int) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES ('generation', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(value),))

    def persist(self) -> None:
        """Re-choose each changed collection's index for its size, rebuild if needed, save it."""
        if self.read_only:
            return
        self._refresh()
        for name in list(self._info):  # a run killed after its upserts left these files behind
            self._index(name)  # loading reconciles, and marks the collection touched if behind
        for name in sorted(self._touched):
            info = self._collection(name)
            if info is None:
                continue
            dim, current = info
            wanted = self._wanted(self.count(name), dim, current)
            if wanted != current:
                with self._write() as conn:
                    conn.execute("UPDATE collections SET choice = ? WHERE name = ?",
                                 (json.dumps(wanted.to_dict()), name))
                self._info[name] = (dim, wanted)
                self._rebuild(name, wanted)
            else:
                self._index(name)  # loaded, reconciled, rebuilt if it held removed ids
            self._indexes[name].save(self.directory / f"{name}.faiss")
        self._touched.clear()

    def _wanted(self, size: int, dim: int, current: IndexChoice) -> IndexChoice:
        wanted = choose_index(size, dim, self.index_kind, device=self.device,
                              overrides=self.index_params)
        if wanted.kind == current.kind:
            outgrown = (wanted.kind in TRAINED_KINDS
                        and current.params["nlist"] * 4 < wanted.params["nlist"])
            asked = any(current.params.get(key) != value for key, value in self.index_params.items()
                        if key not in SEARCH_PARAMS)
            # Same kind: keep the recorded parameters unless others are asked for or outgrown.
            return wanted if asked or outgrown else current
        if (self.index_kind == "auto" and current.kind != "flat" and wanted.kind == "flat"
                and size >= EXACT_LIMIT // 2):
            return current  # hysteresis: a collection shrinking a little keeps its graph
        return wanted

    def choice(self, collection: str) -> IndexChoice | None:
        info = self._collection(collection)
        return None if info is None else info[1]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._indexes.clear()


_loads = json.JSONDecoder().decode
_PAYLOAD_SQL: dict[int, str] = {}


def _payload_sql(count: int) -> str:
    """The statement reading ``count`` payloads (kept: the text is built once per size)."""
    sql = f"SELECT fid, id, payload FROM points WHERE fid IN ({','.join('?' * count)})"
    return _PAYLOAD_SQL.setdefault(count, sql)


def _dumps(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
