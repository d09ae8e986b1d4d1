"""A read-only stand-in for an embedded store that cannot be opened: the catalog's own vectors.

Qdrant Edge writes into its memory-mapped files even to load a shard for a search, so on a full
or read-only disk its store cannot be opened. The catalog holds every vector and everything its
payloads are built from, so a reader answers from it instead: the same points the ledger sends
(``payloads.build_points``), filters evaluated by the contract's reference semantics
(``PointFilter.matches``) and exact inner-product search. It reads every vector of a collection
into memory, once per catalog version, and writes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radsearch.storage import catalog
from radsearch.storage import payloads
from radsearch.storage.backends.base import Backend, Hit, Point, PointFilter, Record, exact_search
from radsearch.errors import RadsearchError


@dataclass(frozen=True)
class _Collection:
    ids: list[str]
    payloads: list[dict]
    vectors: np.ndarray


class CatalogBackend(Backend):
    """The points of catalog ``conn`` (``dim``-d vectors), searched exactly; reads only."""

    kind = "catalog"

    def __init__(self, conn: sqlite3.Connection, dim: int):
        self.conn = conn
        self.dim = dim
        self._collections: dict[str, _Collection] = {}
        self._seen_version: int | None = None

    def _collection(self, name: str) -> _Collection:
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._seen_version:  # another connection committed: read again
            self._collections.clear()
            self._seen_version = version
        if name not in self._collections:
            self._collections[name] = self._read(name)
        return self._collections[name]

    def _read(self, name: str) -> _Collection:
        if name not in catalog.COLLECTIONS:
            return _Collection([], [], np.zeros((0, self.dim), dtype=np.float32))
        vector_ids = sorted(payloads.versions(self.conn, name))
        # Several catalog rows can make one point (the same file twice in a study): the store
        # keeps the last one sent, and rows are sent in this order.
        latest: dict[str, Point] = {}
        for _, point in payloads.build_points(self.conn, name, vector_ids, self.dim):
            latest.pop(point.id, None)
            latest[point.id] = point
        points = list(latest.values())
        vectors = (np.stack([point.vector for point in points]).astype(np.float32) if points
                   else np.zeros((0, self.dim), dtype=np.float32))
        return _Collection([p.id for p in points], [p.payload for p in points], vectors)

    def _passing(self, found: _Collection, filter: PointFilter | None) -> np.ndarray:
        """Row numbers of the points that pass ``filter``."""
        if filter is None or filter.empty:
            return np.arange(len(found.ids), dtype=np.int64)
        return np.fromiter((row for row, payload in enumerate(found.payloads)
                            if filter.matches(payload)), dtype=np.int64)

    def search(self, collection: str, vector: np.ndarray, k: int,
               filter: PointFilter | None = None) -> list[Hit]:
        found = self._collection(collection)
        rows = self._passing(found, filter)
        scores, order = exact_search(found.vectors[rows], vector, k)
        return [Hit(found.ids[row], float(score), found.payloads[row])
                for score, row in zip(scores.tolist(), rows[order].tolist())]

    def fetch(self, collection: str, filter: PointFilter, limit: int, *,
              with_vectors: bool = False) -> list[Record]:
        found = self._collection(collection)
        rows = self._passing(found, filter)[: max(limit, 0)]
        return [Record(found.ids[row], found.payloads[row],
                       found.vectors[row] if with_vectors else None) for row in rows.tolist()]

    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        return int(len(self._passing(self._collection(collection), filter)))

    def metadata(self) -> dict | None:
        return None  # the catalog is the record

    def _refusal(self) -> RadsearchError:
        return RadsearchError("the catalog stands in for the search back end to read only")

    def create_collection(self, name: str, dim: int) -> None:
        raise self._refusal()

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        raise self._refusal()

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        raise self._refusal()

    def initialise(self, record: dict) -> dict:
        raise self._refusal()

    def update_record(self, changes: dict) -> None:
        raise self._refusal()

    def persist(self) -> None:
        """Nothing is written."""

    def close(self) -> None:
        self._collections.clear()  # the connection is the Store's
