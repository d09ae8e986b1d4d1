"""Series and study vectors, recomputed for whatever a run changed (the ``dirty`` rows).

A series (volume) vector pools its slices' embeddings with the encoder's ``pool_slices`` (slices in
slice order with their positions; the plain renormalised mean unless the model has trained slice
pooling), a study vector is the renormalised mean of its series. Dirty flags are set in the same
transaction as the change, so a run killed before this step leaves them set and the next run
finishes the work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np

from radsearch.storage import catalog
from radsearch.encoders.slice_pooling import mean_pool
from radsearch.indexer.writer import put_vector
from radsearch.storage.vectors import read_vectors

# ``Encoder.pool_slices``: slice vectors (n, dim) in slice order, positions (n,) or None -> (dim,).
SlicePool = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def _mean_pool(vectors: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    return mean_pool(vectors)


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


# Series fields that each image also records (as read from its own file).
_SHARED_FIELDS = ("modality", "body_part", "view")


def _settle_series_fields(conn: sqlite3.Connection, series_id: int) -> None:
    # Images of one series can disagree (a folder case holding CT and MR files): the series takes
    # each field's most common value among its images, ties to the alphabetically first, so the
    # result never depends on which file a run happened to write last (a resumed run's order).
    for field in _SHARED_FIELDS:
        row = conn.execute(
            f"SELECT {field} FROM images WHERE series_id = ? AND {field} IS NOT NULL "
            f"GROUP BY {field} ORDER BY COUNT(*) DESC, {field} LIMIT 1", (series_id,)).fetchone()
        if row is not None:
            conn.execute(f"UPDATE series SET {field} = ? WHERE id = ?", (row[0], series_id))


def update_series(conn: sqlite3.Connection, dim: int, pool: SlicePool | None = None) -> int:
    """Order the slices of each dirty series and pool its vector with ``pool`` (the encoder's
    ``pool_slices``; by default the mean); returns the number of series updated."""
    pool = pool or _mean_pool
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
            positions = [row["slice_position"] for row in ordered]
            known = None if None in positions else np.asarray(positions, dtype=np.float64)
            volume = np.asarray(pool(vectors, known), dtype=np.float32)
            if volume.shape != (dim,):
                raise ValueError(f"slice pooling returned shape {volume.shape}, expected ({dim},)")
            put_vector(conn, "series", series_id, volume)
            _settle_series_fields(conn, series_id)
            conn.execute("UPDATE series SET dirty = 0 WHERE id = ?", (series_id,))
            conn.execute(
                "UPDATE studies SET dirty = 1 WHERE id = (SELECT study_id FROM series WHERE id = ?)",
                (series_id,),
            )
    return len(dirty)


def update_studies(conn: sqlite3.Connection, dim: int) -> int:
    """Pool each dirty study's series; drop studies left with neither images nor a report file."""
    dirty = [row[0] for row in conn.execute("SELECT id FROM studies WHERE dirty = 1")]
    for study_id in dirty:
        with catalog.transaction(conn):
            series_ids = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM series WHERE study_id = ? ORDER BY id", (study_id,)
                )
            ]
            # A CSV report describes images: a study whose images were all regrouped elsewhere
            # keeps no CSV report. Reports of their own files (SR, report.txt) keep a study.
            has_file_report = conn.execute(
                "SELECT 1 FROM reports WHERE study_id = ? AND file_id IS NOT NULL LIMIT 1",
                (study_id,),
            ).fetchone()
            if not series_ids and not has_file_report:
                conn.execute("DELETE FROM reports WHERE study_id = ?", (study_id,))
                conn.execute("DELETE FROM studies WHERE id = ?", (study_id,))
                continue
            if series_ids:
                series_vectors = read_vectors(conn, "series", series_ids, dim)
                put_vector(conn, "studies", study_id, mean_pool(series_vectors))
            else:
                conn.execute(
                    "DELETE FROM vectors WHERE collection = 'studies' AND ref_id = ?", (study_id,)
                )
            conn.execute("UPDATE studies SET dirty = 0 WHERE id = ?", (study_id,))
    return len(dirty)
