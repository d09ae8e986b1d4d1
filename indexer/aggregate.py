"""Series and study vectors, recomputed for whatever a run changed (the ``dirty`` rows).

A series vector pools its slices' embeddings (mean of unit vectors, renormalised), a study vector
pools its series. Dirty flags are set in the same transaction as the change, so a run killed before
this step leaves them set and the next run finishes the work.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from radsearch import catalog
from radsearch.indexer.writer import put_vector
from radsearch.vectors import read_vectors


def _pool(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else vectors[0]


def _slice_sort_key(row: sqlite3.Row) -> tuple:
    # Geometric position first; instance number, then file order, where positions are missing.
    position = row["slice_position"]
    number = row["instance_number"]
    return (
        position is None,
        position if position is not None else 0.0,
        number is None,
        number if number is not None else 0,
        row["path"],
        row["frame"],
    )


def update_series(conn: sqlite3.Connection, dim: int) -> int:
    """Order the slices of each dirty series and pool its vector; returns the series updated."""
    dirty = [row[0] for row in conn.execute("SELECT id FROM series WHERE dirty = 1")]
    for series_id in dirty:
        with catalog.transaction(conn):
            rows = conn.execute(
                "SELECT images.id, slice_position, instance_number, frame, files.path "
                "FROM images JOIN files ON files.id = images.file_id WHERE series_id = ?",
                (series_id,),
            ).fetchall()
            if not rows:
                conn.execute("UPDATE studies SET dirty = 1 WHERE id = "
                             "(SELECT study_id FROM series WHERE id = ?)", (series_id,))
                conn.execute("DELETE FROM series WHERE id = ?", (series_id,))
                continue
            ordered = sorted(rows, key=_slice_sort_key)
            conn.executemany(
                "UPDATE images SET slice_order = ? WHERE id = ?",
                [(order, row["id"]) for order, row in enumerate(ordered)],
            )
            vectors = read_vectors(conn, "images", [row["id"] for row in ordered], dim)
            put_vector(conn, "series", series_id, _pool(vectors))
            conn.execute("UPDATE series SET dirty = 0 WHERE id = ?", (series_id,))
            conn.execute(
                "UPDATE studies SET dirty = 1 WHERE id = (SELECT study_id FROM series WHERE id = ?)",
                (series_id,),
            )
    return len(dirty)


def update_studies(conn: sqlite3.Connection, dim: int) -> int:
    """Pool each dirty study's series; drop studies left with neither images nor reports."""
    dirty = [row[0] for row in conn.execute("SELECT id FROM studies WHERE dirty = 1")]
    for study_id in dirty:
        with catalog.transaction(conn):
            series_ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM series WHERE study_id = ? ORDER BY id", (study_id,)
                )
            ]
            has_report = conn.execute(
                "SELECT 1 FROM reports WHERE study_id = ? LIMIT 1", (study_id,)
            ).fetchone()
            if not series_ids and not has_report:
                conn.execute("DELETE FROM studies WHERE id = ?", (study_id,))
                continue
            if series_ids:
                put_vector(conn, "studies", study_id, _pool(read_vectors(conn, "series", series_ids, dim)))
            else:
                conn.execute(
                    "DELETE FROM vectors WHERE collection = 'studies' AND ref_id = ?", (study_id,)
                )
            conn.execute("UPDATE studies SET dirty = 0 WHERE id = ?", (study_id,))
    return len(dirty)
