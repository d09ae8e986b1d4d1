"""The ``faiss`` back end of an index: FAISS over the catalog's own vectors and rows.

Nothing is copied out of the catalog. A point is a catalog vector row; its id and payload are built
from the catalog's tables when it is returned (``payloads.build_payloads``) and filters are SQL over
those tables (the same fields the payloads carry, with ``PointFilter.matches``'s semantics); its
vector is read from the vector file (``vectors.py``). FAISS holds only what makes search fast:

- up to ``EXACT_LIMIT`` vectors, an exact index filled in memory when the collection is first
  searched, never saved (it would be a second copy);
- above, IVF-SQ8 codes (or HNSW / IVF-PQ on request) saved as ``faiss/COLLECTION.KIND.faiss``,
  whose candidates are re-ranked with the catalog's full-precision vectors.

The FAISS ids are the catalog's vector ids, which are never reused, so a saved index is brought in
step with the catalog on loading (missing ids added, removed ones dropped or the index rebuilt): a
file saved before a crash, or none, is harmless. The index kind follows the collection's size and
is recorded in the catalog (meta ``faiss.COLLECTION``) by the writer.

Two catalog rows can make one point (the same image twice in a study, the same report twice):
search, fetch and count return it once, as the newest row (largest vector id) makes it.

A reader whose own store cannot be opened (Qdrant Edge on a read-only disk) is answered by this
class too, exactly (``flat``) and without writing anything.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.storage import catalog, payloads, sqlite, vectors
from radsearch.storage.backends.base import Backend, Hit, Point, PointFilter, Record
from radsearch.storage.backends.faiss_index import (
    EXACT_LIMIT,
    SEARCH_PARAMS,
    TRAINED_KINDS,
    FaissIndex,
    IndexChoice,
    choose_index,
    env_params,
    resolve_device,
    training_sample,
)

CHOICE_KEY = "faiss.{}"  # meta: the IndexChoice of a collection, as JSON
STATE_KEY = "faiss.{}.state"  # meta: [vectors, largest vector id] at the writer's last catch-up

# Per collection: the rows a point is made of, its date column, its identity (rows of one identity
# make one point, see payloads.point_id) and, per keyword field, its SQL value; a field in LISTS
# is a list over the study's images in the payload.
_FROM = {  # CROSS JOIN keeps this order: a study's rows are found through its key's index
    "images": "studies AS st CROSS JOIN images AS i ON i.study_id = st.id CROSS JOIN vectors AS v "
              "ON v.collection = 'images' AND v.ref_id = i.id JOIN series AS se "
              "ON se.id = i.series_id JOIN files AS f ON f.id = i.file_id",
    "series": "studies AS st CROSS JOIN series AS se ON se.study_id = st.id CROSS JOIN vectors AS v "
              "ON v.collection = 'series' AND v.ref_id = se.id",
    "studies": "studies AS st CROSS JOIN vectors AS v ON v.collection = 'studies' "
               "AND v.ref_id = st.id",
    "sentences": "studies AS st CROSS JOIN reports AS r ON r.study_id = st.id CROSS JOIN "
                 "sentences AS s ON s.report_id = r.id CROSS JOIN vectors AS v "
                 "ON v.collection = 'sentences' AND v.ref_id = s.id",
}
_DATE = {"images": "i.study_date", "series": "st.study_date", "studies": "st.study_date",
         "sentences": "st.study_date"}
_IDENTITY = {
    "images": "i.study_id || ':' || COALESCE(f.sha256, f.path) || ':' || i.frame",
    "series": "se.id",
    "studies": "st.id",
    "sentences": "s.study_id || ':' || s.idx || ':' || r.text",
}
# The newest row making the same point as each given row: only the rows of the same study are
# read (CROSS JOIN keeps SQLite's planner from scanning the whole collection instead).
_NEWEST = {
    "images": "SELECT v.id, (SELECT MAX(v2.id) FROM images AS i2 CROSS JOIN files AS f2 "
              "CROSS JOIN vectors AS v2 WHERE i2.study_id = i.study_id AND f2.id = i2.file_id "
              "AND v2.collection = 'images' AND v2.ref_id = i2.id AND i2.frame = i.frame AND "
              "COALESCE(f2.sha256, f2.path) = COALESCE(f.sha256, f.path)) FROM vectors AS v "
              "JOIN images AS i ON i.id = v.ref_id JOIN files AS f ON f.id = i.file_id "
              "WHERE v.id IN ({marks})",
    "sentences": "SELECT v.id, (SELECT MAX(v2.id) FROM reports AS r2 CROSS JOIN sentences AS s2 "
                 "CROSS JOIN vectors AS v2 WHERE r2.study_id = s.study_id AND r2.text = r.text "
                 "AND s2.report_id = r2.id AND s2.idx = s.idx AND v2.collection = 'sentences' "
                 "AND v2.ref_id = s2.id) FROM vectors AS v JOIN sentences AS s ON s.id = v.ref_id "
                 "JOIN reports AS r ON r.id = s.report_id WHERE v.id IN ({marks})",
}
_LISTS = ("studies", "sentences")  # modality, body_part, view: every value over the study's images


def _upper(column: str) -> str:
    return f"NULLIF(UPPER(TRIM({column})), '')"  # payloads._upper


def _keyword(collection: str, field: str) -> str | None:
    """The SQL value of a scalar keyword field (None: not in this collection's payload)."""
    if field == "study":
        return "st.key"
    if field == "series":
        return "se.key" if collection in ("images", "series") else None
    table = "i" if collection == "images" else "se"
    return _upper(f"{table}.{field}")


def _day(column: str) -> str:
    digits = f"REPLACE({column}, '-', '')"  # payloads.study_day
    return (f"(CASE WHEN LENGTH({digits}) = 8 AND {digits} NOT GLOB '*[^0-9]*' "
            f"THEN CAST({digits} AS INTEGER) END)")


def filter_sql(collection: str, flt: PointFilter | None) -> tuple[str, list]:
    """A WHERE clause over ``_FROM[collection]`` that holds exactly where ``flt.matches`` would
    on the payload the row makes."""
    clauses, args = ["v.collection = ?"], [collection]
    if flt is None:
        return clauses[0], args

    def test(field: str, values: tuple) -> tuple[str | None, list]:
        """SQL true when the field has one of ``values``; None when the payload has no field."""
        marks = sqlite.marks(values)
        if collection in _LISTS and field in ("modality", "body_part", "view"):
            return (f"EXISTS (SELECT 1 FROM images AS x WHERE x.study_id = st.id AND "
                    f"{_upper('x.' + field)} IN ({marks}))", [*map(str, values)])
        column = _keyword(collection, field)
        if column is None:
            return None, []
        # NULL IN (...) is NULL: false in a WHERE, and kept plain so that an index serves it
        # (a study's key); its negation is written out below.
        return f"{column} IN ({marks})", [*map(str, values)]

    for field, values in flt.any_of:
        sql, values_args = test(field, values)
        clauses.append(sql or "0")
        args += values_args
    for field, values in flt.none_of:
        sql, values_args = test(field, values)
        if sql is not None:
            clauses.append(f"NOT COALESCE({sql}, 0)")
            args += values_args
    for field, low, high in flt.ranges:
        day = _day(_DATE[collection])
        clauses.append(f"{day} IS NOT NULL")
        if low is not None:
            clauses.append(f"{day} >= ?")
            args.append(low)
        if high is not None:
            clauses.append(f"{day} <= ?")
            args.append(high)
    return " AND ".join(clauses), args


class CatalogBackend(Backend):
    """FAISS search over catalog ``conn`` (``dim``-d vectors); its index files in ``directory``
    (None: kept in memory only). Options as FaissBackend's: ``faiss_index``, ``faiss_params``,
    ``device``. Points are written by the indexer into the catalog, not through ``upsert``."""

    kind = "faiss"

    def __init__(self, conn: sqlite3.Connection, directory: Path | None, dim: int, *,
                 read_only: bool = True, options: dict | None = None):
        options = options or {}
        self.conn = conn
        self.directory = None if directory is None else Path(directory)
        self.dim = dim
        self.read_only = read_only or directory is None
        self.index_kind = str(options.get("faiss_index", "auto"))
        self.index_params = {**dict(options.get("faiss_params", {})), **env_params()}
        self.device = resolve_device(str(options.get("device", "auto")))
        self._indexes: dict[str, FaissIndex] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # the catalog's versions at each look
        self._selected: tuple[tuple, np.ndarray] | None = None  # see _select
        self._slots: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}  # ids, their slots, file

    # -- the FAISS index of a collection ------------------------------------------------------
    def _vectors(self, ids: np.ndarray, name: str | None = None) -> np.ndarray:
        """Full-precision vectors of vector ids: by the slots read with the collection's ids (no
        query per search), else from the catalog."""
        mapped = self._slots.get(name)
        if mapped is not None and len(ids):
            known, slots, file = mapped
            at = np.searchsorted(known, ids).clip(0, max(len(known) - 1, 0))
            if len(known) and np.array_equal(known[at], ids):
                return vectors.vector_file(self.conn).rows(file, slots[at], self.dim)
        return vectors.read_by_ids(self.conn, ids, self.dim)

    def _ids(self, name: str) -> np.ndarray:
        """The collection's vector ids, in order; their slots are kept for ``_vectors``."""
        if vectors.in_blobs(self.conn):
            self._slots.pop(name, None)
            return np.fromiter((row[0] for row in self.conn.execute(
                "SELECT id FROM vectors WHERE collection = ? ORDER BY id", (name,))), dtype=np.int64)
        rows = np.asarray(self.conn.execute(
            "SELECT id, slot FROM vectors WHERE collection = ? ORDER BY id", (name,)).fetchall(),
            dtype=np.int64).reshape(-1, 2)
        ids = np.ascontiguousarray(rows[:, 0])
        self._slots[name] = (ids, np.ascontiguousarray(rows[:, 1]), vectors.file_name(self.conn))
        return ids

    def _reader(self, name: str):
        return functools.partial(self._vectors, name=name)

    def recorded_choice(self, name: str) -> IndexChoice | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                (CHOICE_KEY.format(name),)).fetchone()
        return IndexChoice.from_dict(json.loads(row[0])) if row else None

    def _path(self, name: str, choice: IndexChoice) -> Path | None:
        return None if self.directory is None else self.directory / f"{name}.{choice.kind}.faiss"

    def _version(self) -> tuple[int, int]:
        """The catalog's version as this connection sees it: another connection's commits change
        data_version, this one's own total_changes."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0]), self.conn.total_changes

    def _index(self, name: str) -> FaissIndex | None:
        """The collection's index, loaded or built, in step with the catalog (None: no vectors)."""
        version = self._version()
        if name in self._indexes and self._seen.get(name) == version:
            return self._indexes[name]
        with sqlite.snapshot(self.conn):
            ids = self._ids(name)
            if not len(ids) and name not in self._indexes:
                return None
            self._catch_up(name, ids)
        self._seen[name] = version
        return self._indexes[name]

    def _catch_up(self, name: str, ids: np.ndarray, choice: IndexChoice | None = None
                  ) -> tuple[int, int]:
        """Make the loaded index hold exactly ``ids`` (loading or building it first);
        returns (added, removed)."""
        index = self._indexes.get(name)
        if index is None or (choice is not None and choice != index.choice):
            choice = choice or self.recorded_choice(name) or choose_index(
                len(ids), self.dim, "flat" if self.directory is None else self.index_kind,
                device=self.device, overrides=self.index_params)
            path = self._path(name, choice)
            index = (FaissIndex.load(path, self.dim, choice, device=self.device,
                                     search_params=self.index_params,
                                     vectors_of=self._reader(name))
                     if path is not None and choice.kind != "flat" else None)
            if index is None:
                index = self._build(name, choice, ids)
                self._indexes[name] = index
                return len(ids), 0
            self._indexes[name] = index
        held = index.ids()
        extra = np.setdiff1d(held, ids, assume_unique=True)
        missing = np.setdiff1d(ids, held, assume_unique=True)
        if extra.size and not index.removable:
            self._indexes[name] = self._build(name, index.choice, ids)
            return len(missing), len(extra)
        index.remove(extra)
        for start in range(0, missing.size, 50_000):
            chunk = missing[start : start + 50_000]
            index.add(self._vectors(chunk, name), chunk)
        return len(missing), len(extra)

    def _build(self, name: str, choice: IndexChoice, ids: np.ndarray) -> FaissIndex:
        """A new index of ``ids``, their vectors read a chunk at a time."""
        index = FaissIndex(self.dim, choice, device=self.device, search_params=self.index_params,
                           vectors_of=self._reader(name))
        if len(ids) and not index.trained:  # IVF's k-means and codebooks, or HNSW codes' SQ8 ranges
            sample = np.sort(training_sample(ids, choice.params.get("nlist", 1)))
            index.train(self._vectors(sample, name))
        for start in range(0, len(ids), 50_000):
            chunk = ids[start : start + 50_000]
            index.add(self._vectors(chunk, name), chunk)
        return index

    # -- reads --------------------------------------------------------------------------------
    def _select(self, collection: str, flt: PointFilter) -> np.ndarray:
        """The vector ids passing ``flt``; the last selection is kept while the catalog is
        unchanged, since a label query counts and then searches under one filter (each selection
        joins every study's images: 0.3 s at 100k studies)."""
        key = (collection, flt, self._version())
        if self._selected is not None and self._selected[0] == key:
            return self._selected[1]
        where, args = filter_sql(collection, flt)
        ids = np.fromiter((row[0] for row in self.conn.execute(
            f"SELECT v.id FROM {_FROM[collection]} WHERE {where}", args)), dtype=np.int64)
        self._selected = (key, ids)
        return ids

    def search(self, collection: str, vector: np.ndarray, k: int,
               filter: PointFilter | None = None) -> list[Hit]:
        if collection not in _FROM or k <= 0:
            return []
        with sqlite.snapshot(self.conn):
            index = self._index(collection)
            if index is None:
                return []
            allowed = excluded = None
            if filter is not None and filter.only_exclusions:
                excluded = self._select(collection, PointFilter(any_of=filter.none_of))
            elif filter is not None and not filter.empty:
                allowed = self._select(collection, filter)
            fetch = k
            while True:
                scores, ids = index.search(vector, fetch, allowed=allowed, excluded=excluded)
                hits = self._distinct(collection, scores, ids)
                if len(hits) >= k or len(ids) < fetch:
                    return hits[:k]
                fetch *= 2  # rows that make one point took places: look further

    def _distinct(self, collection: str, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        """Hits in score order, one per point, each as its newest row makes it."""
        newest = self._newest(collection, ids.tolist())
        first: dict[int, float] = {}
        for score, vid in zip(scores.tolist(), ids.tolist()):
            if vid in newest:
                first.setdefault(newest[vid], score)
        made = {vid: (pid, payload) for vid, pid, payload in
                payloads.build_payloads(self.conn, collection, list(first))}
        return [Hit(made[vid][0], score, made[vid][1]) for vid, score in first.items()
                if vid in made]

    def _newest(self, collection: str, ids: list[int]) -> dict[int, int]:
        """Vector id -> the newest vector id of the same point, for the rows that still exist."""
        sql = _NEWEST.get(collection)
        if sql is None:  # one row per point
            return dict(sqlite.select_in(self.conn, "SELECT id, id FROM vectors WHERE id IN "
                                         "({marks})", ids))
        return dict(sqlite.select_in(self.conn, sql, ids))

    def fetch(self, collection: str, filter: PointFilter, limit: int, *,
              with_vectors: bool = False) -> list[Record]:
        if collection not in _FROM or limit <= 0:
            return []
        where, args = filter_sql(collection, filter)
        with sqlite.snapshot(self.conn):
            ids = [row[0] for row in self.conn.execute(
                f"SELECT MAX(v.id) FROM {_FROM[collection]} WHERE {where} "
                f"GROUP BY {_IDENTITY[collection]} ORDER BY 1 LIMIT ?", (*args, limit))]
            made = payloads.build_payloads(self.conn, collection, ids)
            matrix = vectors.read_by_ids(self.conn, [vid for vid, _, _ in made], self.dim) \
                if with_vectors else None
        return [Record(pid, payload, None if matrix is None else matrix[i])
                for i, (_, pid, payload) in enumerate(made)]

    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        if collection not in _FROM:
            return 0
        where, args = filter_sql(collection, filter)
        # One row per point where no newer row can make the same point (vectors is unique by
        # collection and ref): a plain count, without DISTINCT's sort of every key, and under a
        # filter the selection the search that follows will use.
        if collection not in _NEWEST and filter is not None and not filter.empty:
            return int(len(self._select(collection, filter)))
        counted = f"DISTINCT {_IDENTITY[collection]}" if collection in _NEWEST else "*"
        return int(self.conn.execute(
            f"SELECT COUNT({counted}) FROM {_FROM[collection]} WHERE {where}", args).fetchone()[0])

    # -- the writer's upkeep ------------------------------------------------------------------
    def catch_up(self, collections: Sequence[str] = catalog.COLLECTIONS) -> dict[str, tuple[int, int]]:
        """Re-choose each collection's index for its size, bring its saved codes in step with the
        catalog (an exact index is built by whoever searches) and record the choice; returns the
        vectors added and removed since the last catch-up, per collection."""
        if self.read_only:
            raise RadsearchError("the catalog's FAISS index is kept up by the writer")
        changes = {}
        for name in collections:
            with sqlite.snapshot(self.conn):
                ids = self._ids(name)
                recorded = self.recorded_choice(name)
                count, last = self._state(name)
                if not len(ids) and recorded is None:
                    continue
                wanted = self._wanted(len(ids), recorded)
                added = int((ids > last).sum())
                changes[name] = (added, count + added - len(ids))
                if wanted.kind != "flat":
                    self._catch_up(name, ids, wanted)
                else:
                    self._indexes.pop(name, None)
            with catalog.transaction(self.conn):
                catalog.set_meta(self.conn, {
                    CHOICE_KEY.format(name): json.dumps(wanted.to_dict(), sort_keys=True),
                    STATE_KEY.format(name): json.dumps(
                        [len(ids), int(ids[-1]) if len(ids) else last])})
            self._save(name)
        self._seen.clear()
        return changes

    def _state(self, name: str) -> tuple[int, int]:
        """(vectors, largest vector id) of ``name`` at the last catch-up."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                (STATE_KEY.format(name),)).fetchone()
        count, last = json.loads(row[0]) if row else (0, 0)
        return int(count), int(last)

    def _wanted(self, size: int, current: IndexChoice | None) -> IndexChoice:
        wanted = choose_index(size, self.dim, self.index_kind, device=self.device,
                              overrides=self.index_params)
        if current is None:
            return wanted
        if wanted.kind == current.kind:
            outgrown = (wanted.kind in TRAINED_KINDS
                        and current.params["nlist"] * 4 < wanted.params["nlist"])
            asked = any(current.params.get(key) != value for key, value in self.index_params.items()
                        if key not in SEARCH_PARAMS)
            # Same kind: keep the recorded parameters unless others are asked for or outgrown.
            return wanted if asked or outgrown else current
        if (self.index_kind == "auto" and current.kind != "flat" and wanted.kind == "flat"
                and size >= EXACT_LIMIT // 2):
            return current  # hysteresis: a collection shrinking a little keeps its codes
        return wanted

    def _save(self, name: str) -> None:
        """Save the codes of ``name`` (an exact index is not saved) and drop its other files,
        those of an earlier kind and an older radsearch's (points.sqlite, NAME.faiss)."""
        index = self._indexes.get(name)
        keep = self._path(name, index.choice) if index is not None and index.external else None
        if keep is not None:
            index.save(keep)
        if self.directory is None or not self.directory.exists():
            return
        for path in self.directory.iterdir():
            legacy = path.name.startswith("points.sqlite") or path.name == f"{name}.faiss"
            if legacy or (path.name.startswith(f"{name}.") and path.suffix == ".faiss"
                          and path != keep):
                path.unlink(missing_ok=True)

    def choice(self, collection: str) -> IndexChoice | None:
        index = self._index(collection)
        return None if index is None else index.choice

    # -- the contract's writes: the catalog is this back end's store --------------------------
    def metadata(self) -> dict | None:
        return None  # the catalog is the record

    def initialise(self, record: dict) -> dict:
        return record

    def update_record(self, changes: dict) -> None:
        """The catalog is the record."""

    def set_generation(self, value: int) -> None:
        """Nothing to number: the index is checked against the catalog on every load."""

    def _refusal(self) -> RadsearchError:
        return RadsearchError("the faiss back end reads the catalog: points are written by "
                              "`radsearch index`, not sent")

    def create_collection(self, name: str, dim: int) -> None:
        raise self._refusal()

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        raise self._refusal()

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        raise self._refusal()

    def persist(self) -> None:
        if not self.read_only:
            self.catch_up()

    def close(self) -> None:
        self._indexes.clear()  # the connection is the Store's
