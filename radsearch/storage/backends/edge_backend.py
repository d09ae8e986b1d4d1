"""Qdrant embedded: the real Qdrant engine in-process (``qdrant-edge-py``), on disk.

Layout::

    DIR/COLLECTION/        one Edge shard per collection (segments, WAL, HNSW, payload indexes)
    DIR/radsearch.json     the store's record (model, salt, instance)
    DIR/sync.json          the number of the last catalog sync the store completed
    DIR/edge.lock          held by the one process that has the shards open

Each collection has one named vector, HNSW (built by ``persist``) and payload indexes on every
filter field; filtered searches use ACORN so that a selective filter still returns k hits. An Edge
shard admits one process at a time, so this store is opened briefly: searches wait for an index
run's final write (``lock_timeout`` seconds, default 120) rather than fail.

Edge maps its segment and WAL files into memory; they are sparse, and a page written (even by
loading a shard) past a full disk kills the process with SIGBUS, with no message. So before a
shard is opened, and before each write, the disk must have room for every hole of the store's
files plus what the write adds (``diskspace.require_free``), else one line says so. A store that
cannot be opened for that reason, or on a read-only disk, raises ``StoreUnopenableError``: a reader
then answers from the catalog (``catalog_backend``), a writer stops.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from radsearch.storage.backends.base import (
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    Backend,
    Hit,
    Point,
    PointFilter,
    Record,
    StoreDamagedError,
    StoreUnopenableError,
    StoreView,
)
from radsearch.diskspace import mount_point, require_free, sparse_bytes
from radsearch.errors import RadsearchError
from radsearch.optional import require

require("qdrant-edge")
import qdrant_edge as qe  # noqa: E402

RECORD_FILE = "radsearch.json"
SYNC_FILE = "sync.json"
LOCK_FILE = "edge.lock"
_BATCH = 512
# Room kept free beyond a store's holes; a new collection's files declare about 180 MB (WAL,
# vector chunks, payload pages, payload indexes) and a point costs its vector and payload in
# the WAL, the segment and the HNSW graph (a generous 4 copies).
_SPARE_BYTES = 16 << 20
_NEW_COLLECTION_BYTES = 192 << 20
_POINT_COPIES = 4


class QdrantEdgeBackend(Backend):
    """Options: ``hnsw_m`` (16), ``ef_construct`` (100), ``hnsw_ef`` (128), ``on_disk`` (vectors
    memory-mapped from disk instead of cached in RAM), ``full_scan_threshold`` and
    ``indexing_threshold`` (KB of vectors below which a segment is searched exhaustively / left
    without HNSW; Qdrant's defaults 10000 and 10000), ``lock_timeout`` (seconds)."""

    kind = "qdrant-edge"
    exclusive = True

    def __init__(self, directory: Path, *, vector_name: str, read_only: bool = False,
                 options: dict | None = None):
        options = options or {}
        self.directory = Path(directory)
        self.vector_name = vector_name
        self.read_only = read_only
        self.hnsw_m = int(options.get("hnsw_m", 16))
        self.ef_construct = int(options.get("ef_construct", 100))
        self.hnsw_ef = int(options.get("hnsw_ef", 128))
        self.on_disk = _flag(options.get("on_disk", False))
        self.full_scan_threshold = int(options.get("full_scan_threshold", 10_000))
        self.indexing_threshold = int(options.get("indexing_threshold", 10_000))
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock: IO | None = None
        if read_only and not self.directory.is_dir():
            return  # nothing written yet: an empty store
        if not os.access(self.directory if self.directory.is_dir() else self.directory.parent,
                         os.W_OK):
            raise StoreUnopenableError(
                f"{self.directory} is on a read-only file system (mounted at "
                f"{mount_point(self.directory)}) or may not be written: Qdrant Edge writes to its "
                "segments even to search")
        if read_only:  # refused here, so that a reader can turn to the catalog at once
            self._require_room_to_open()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire(self.directory / LOCK_FILE, float(options.get("lock_timeout", 120)))

    def _shard(self, name: str) -> qe.EdgeShard | None:
        if name not in self._shards:
            path = self.directory / name
            if self._lock is None or not (path / "edge_config.json").exists():
                return None
            self._require_room_to_open()
            self._shards[name] = qe.EdgeShard.load(str(path))
        return self._shards[name]

    def _require_room(self, adding: int, what: str) -> None:
        """Refuse a write (or a load, which writes too) that could meet a full disk in a mapped
        page: the holes of the store's files and ``adding`` bytes must fit."""
        require_free(self.directory, sparse_bytes(self.directory) + adding + _SPARE_BYTES, what)

    def _require_room_to_open(self) -> None:
        try:
            self._require_room(0, "opening the qdrant-edge store")
        except RadsearchError as error:
            raise StoreUnopenableError(str(error)) from None

    def create_collection(self, name: str, dim: int) -> None:
        shard = self._shard(name)
        if shard is not None:
            size = _vector_size(self.directory / name, self.vector_name)
            if size != dim:
                raise RadsearchError(
                    f"{self.directory / name}: holds no {dim}-d vector {self.vector_name!r}")
            return
        self._require_room(_NEW_COLLECTION_BYTES, f"creating collection {name} in qdrant-edge")
        memory = qe.Memory.Cold if self.on_disk else qe.Memory.Cached
        config = qe.EdgeConfig(
            vectors={self.vector_name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot,
                                                           memory=memory)},
            hnsw_config=qe.HnswIndexConfig(m=self.hnsw_m, ef_construct=self.ef_construct,
                                           full_scan_threshold=self.full_scan_threshold),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold),
        )
        shard = qe.EdgeShard.create(str(self.directory / name), config)
        for field in KEYWORD_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        for field in INTEGER_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer))
        self._shards[name] = shard

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        shard = self._require(collection)
        for start in range(0, len(points), _BATCH):
            batch = points[start : start + _BATCH]
            size = sum(np.asarray(p.vector).size * 4 + len(json.dumps(p.payload)) for p in batch)
            self._require_room(size * _POINT_COPIES, f"writing {len(batch)} points to qdrant-edge")
            shard.update(qe.UpdateOperation.upsert_points([
                qe.Point(p.id, {self.vector_name: np.asarray(p.vector, dtype=np.float32).tolist()},
                         p.payload)
                for p in batch
            ]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        shard = self._shard(collection)
        if shard is None:
            return
        for start in range(0, len(ids), _BATCH):
            shard.update(qe.UpdateOperation.delete_points(list(ids[start : start + _BATCH])))

    def _require(self, collection: str) -> qe.EdgeShard:
        shard = self._shard(collection)
        if shard is None:
            raise RadsearchError(f"no collection {collection}: create it first")
        return shard

    def search(self, collection: str, vector: np.ndarray, k: int,
               filter: PointFilter | None = None) -> list[Hit]:
        shard = self._shard(collection)
        if shard is None or k <= 0:
            return []
        condition = to_edge_filter(filter)
        params = qe.SearchParams(
            hnsw_ef=max(self.hnsw_ef, k),
            acorn=qe.AcornSearchParams(enable=True) if condition is not None else None,
        )
        found = shard.query(qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(),
                                   using=self.vector_name),
            filter=condition, with_payload=True, params=params,
        ))
        return [Hit(str(point.id), float(point.score), point.payload or {}) for point in found]

    def fetch(self, collection: str, filter: PointFilter, limit: int, *,
              with_vectors: bool = False) -> list[Record]:
        shard = self._shard(collection)
        if shard is None:
            return []
        records, _ = shard.scroll(qe.ScrollRequest(
            limit=limit, filter=to_edge_filter(filter), with_payload=True,
            with_vector=[self.vector_name] if with_vectors else False,
        ))
        return [Record(str(r.id), r.payload or {},
                       np.asarray(r.vector[self.vector_name], dtype=np.float32)
                       if with_vectors else None)
                for r in records]

    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        shard = self._shard(collection)
        if shard is None:
            return 0
        return int(shard.count(qe.CountRequest(exact=True, filter=to_edge_filter(filter))))

    def metadata(self) -> dict | None:
        path = self.directory / RECORD_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def initialise(self, record: dict) -> dict:
        existing = self.metadata()
        if existing is not None:
            return existing
        _write_json(self.directory / RECORD_FILE, record)
        return record

    def set_generation(self, value: int) -> None:
        _write_json(self.directory / SYNC_FILE, {"generation": value})

    def update_record(self, changes: dict) -> None:
        record = {**(self.metadata() or {}), **changes}
        path = self.directory / RECORD_FILE
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        kept = {key: value for key, value in record.items() if value is not None}
        tmp.write_text(json.dumps(kept, sort_keys=True))
        os.replace(tmp, path)

    def persist(self) -> None:
        """Build HNSW for what was added, then flush segments to disk."""
        if self.read_only:
            return
        for shard in self._shards.values():
            self._require_room(0, "optimising the qdrant-edge store")
            shard.optimize()
            shard.flush()

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one; a failed write leaves no .tmp."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def inspect_store(directory: Path, *, thorough: bool = False) -> StoreView | None:
    """The store at ``directory`` as its files show it, without loading a shard or taking its
    lock (None: there is none); collections are present or not, not counted. ``thorough`` is
    accepted for the other stores' sake: a shard is verified by loading it."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    try:
        record = json.loads((directory / RECORD_FILE).read_text()) \
            if (directory / RECORD_FILE).exists() else {}
        sync = json.loads((directory / SYNC_FILE).read_text()) \
            if (directory / SYNC_FILE).exists() else {}
    except (OSError, ValueError) as error:
        raise StoreDamagedError(f"{directory} is damaged ({error})") from None
    counts: dict[str, int | None] = {
        path.parent.name: None for path in directory.glob("*/edge_config.json")}
    generation = sync.get("generation")
    return StoreView(record.get("instance"), int(generation) if generation else None, counts)


def to_edge_filter(filter: PointFilter | None) -> qe.Filter | None:
    if filter is None or filter.empty:
        return None
    must = [qe.FieldCondition(field, match=qe.MatchAny(list(values)))
            for field, values in filter.any_of]
    must += [qe.FieldCondition(field, range=qe.RangeFloat(
        gte=None if low is None else float(low), lte=None if high is None else float(high)))
        for field, low, high in filter.ranges]
    must_not = [qe.FieldCondition(field, match=qe.MatchAny(list(values)))
                for field, values in filter.none_of]
    return qe.Filter(must=must or None, must_not=must_not or None)


def _vector_size(path: Path, name: str) -> int | None:
    config = json.loads((path / "edge_config.json").read_text())
    vectors = config.get("vectors") or config.get("vector_data") or {}
    params = vectors.get(name)
    return None if params is None else int(params.get("size"))


def _flag(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _acquire(path: Path, timeout: float) -> IO:
    handle = open(path, "a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise RadsearchError(
                    f"{path.parent}: the qdrant-edge store is held by another radsearch process "
                    f"(waited {timeout:.0f} s)") from None
            time.sleep(0.1)
