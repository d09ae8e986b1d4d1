"""FAISS vector collections, kept in step with the catalog.

Each collection (images, series, studies, sentences) is a FAISS ``IndexIDMap2`` whose ids are the
catalog's ``vectors.id``. The catalog holds every vector, so a FAISS file is only a cache: on load it
is reconciled with the catalog (missing vectors added, deleted ones removed), which makes a file
saved before a crash, or no file at all, harmless. Files are replaced atomically.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError

try:
    import faiss
except ImportError:  # faiss comes from an extra: faiss-cpu or faiss-gpu, never both
    raise RadsearchError(
        "FAISS is not installed: pip install 'radsearch[cpu]' (or 'radsearch[gpu]' on a CUDA machine)"
    ) from None

_FETCH_CHUNK = 50_000


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blobs_to_matrix(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


def read_vectors(
    conn: sqlite3.Connection, collection: str, ref_ids: list[int], dim: int
) -> np.ndarray:
    """Vectors of catalog rows ``ref_ids`` (in that order) from one collection."""
    found: dict[int, bytes] = {}
    for start in range(0, len(ref_ids), 900):
        chunk = ref_ids[start : start + 900]
        marks = ",".join("?" * len(chunk))
        for ref_id, blob in conn.execute(
            f"SELECT ref_id, vec FROM vectors WHERE collection = ? AND ref_id IN ({marks})",
            (collection, *chunk),
        ):
            found[ref_id] = blob
    missing = [r for r in ref_ids if r not in found]
    if missing:
        raise KeyError(f"no {collection} vector for catalog rows {missing[:5]}")
    return blobs_to_matrix([found[r] for r in ref_ids], dim)


class VectorCollection:
    """One FAISS collection of L2-normalised vectors searched by inner product."""

    def __init__(self, name: str, dim: int, path: Path, index: faiss.Index | None = None):
        self.name = name
        self.dim = dim
        self.path = path
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @classmethod
    def load(cls, conn: sqlite3.Connection, name: str, dim: int, directory: Path) -> VectorCollection:
        path = directory / f"{name}.faiss"
        index = None
        if path.exists():
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:
                index = None  # an unreadable cache is rebuilt from the catalog
            if index is not None and index.d != dim:
                index = None
        collection = cls(name, dim, path, index)
        collection.reconcile(conn)
        return collection

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def reconcile(self, conn: sqlite3.Connection) -> bool:
        """Make the FAISS index hold exactly the catalog's vectors; True when anything changed."""
        catalog_ids = np.fromiter(
            (row[0] for row in conn.execute(
                "SELECT id FROM vectors WHERE collection = ? ORDER BY id", (self.name,)
            )),
            dtype=np.int64,
        )
        held = self.ids()
        extra = np.setdiff1d(held, catalog_ids, assume_unique=True)
        missing = np.setdiff1d(catalog_ids, held, assume_unique=True)
        if extra.size:
            self.index.remove_ids(extra)
        for start in range(0, missing.size, _FETCH_CHUNK):
            chunk = missing[start : start + _FETCH_CHUNK]
            self._add_from_catalog(conn, chunk)
        return bool(extra.size or missing.size)

    def _add_from_catalog(self, conn: sqlite3.Connection, ids: np.ndarray) -> None:
        blobs: dict[int, bytes] = {}
        id_list = [int(i) for i in ids]
        for start in range(0, len(id_list), 900):
            part = id_list[start : start + 900]
            marks = ",".join("?" * len(part))
            blobs.update(conn.execute(f"SELECT id, vec FROM vectors WHERE id IN ({marks})", part))
        present = [i for i in id_list if i in blobs]
        matrix = blobs_to_matrix([blobs[i] for i in present], self.dim)
        if present:
            self.index.add_with_ids(matrix, np.asarray(present, dtype=np.int64))

    def save(self) -> None:
        """Write the index atomically: a reader sees the old file or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vector ids) per query; ``allowed_ids`` restricts the search (filters)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.size))
        if self.size == 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if allowed_ids is None:
            return self.index.search(queries, k)
        allowed = np.ascontiguousarray(allowed_ids, dtype=np.int64)
        if allowed.size == 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        selector = faiss.IDSelectorBatch(allowed.size, faiss.swig_ptr(allowed))
        params = faiss.SearchParameters(sel=selector)
        return self.index.search(queries, min(k, allowed.size), params=params)
