"""Vectors as the catalog stores them: little-endian float32 blobs, one row per embedded object.

The catalog's ``vectors`` table is the source of truth for every embedding; the search back ends
(``radsearch.storage.backends``) hold copies brought in step with it. A vector row is never changed in
place: a new value is a new row with a new, never reused id (see ``indexer.writer.put_vector``), so
the id is also the vector's version.
"""

from __future__ import annotations

import sqlite3

import numpy as np


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
