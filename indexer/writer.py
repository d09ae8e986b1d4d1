"""The write stage: catalog rows and their vectors, always inside the caller's transaction."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np

from radsearch.indexer.discover import FoundFile
from radsearch.reading import ReadResult
from radsearch.reports import Sentence
from radsearch.terms import normalise_metadata
from radsearch.storage import vectors

# Image metadata copied onto each image row so that filters need no joins.
_IMAGE_FILTER_FIELDS = ("modality", "body_part", "view", "study_date")


def put_vector(conn: sqlite3.Connection, collection: str, ref_id: int, vector: np.ndarray) -> None:
    """Store a row's vector as a new vector row, its value in a new slot of the vector file.
    Ids are never reused (SQLite would reuse the largest after a delete), so an id names one value
    and the back ends sync by ids alone."""
    conn.execute("DELETE FROM vectors WHERE collection = ? AND ref_id = ?", (collection, ref_id))
    conn.execute(
        "INSERT INTO vectors(id, collection, ref_id, slot) VALUES (?, ?, ?, ?)",
        (_next_vector_id(conn), collection, ref_id, vectors.append(conn, vector)),
    )


def _next_vector_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'vectors.last_id'").fetchone()
    largest = conn.execute("SELECT COALESCE(MAX(id), 0) FROM vectors").fetchone()[0]
    next_id = max(int(row[0]) if row else 0, int(largest)) + 1
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('vectors.last_id', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(next_id),),
    )
    return next_id


def put_file(
    conn: sqlite3.Connection,
    found: FoundFile,
    *,
    status: str,
    sha256: str | None,
    reason: str | None = None,
) -> int:
    """Insert or update the row of one file; returns its id."""
    conn.execute(
        "INSERT INTO files(path, dir, size, mtime_ns, sha256, kind, status, reason, indexed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
        "dir = excluded.dir, size = excluded.size, mtime_ns = excluded.mtime_ns, "
        "sha256 = excluded.sha256, kind = excluded.kind, status = excluded.status, "
        "reason = excluded.reason, indexed_at = excluded.indexed_at",
        (found.path, found.dir, found.size, found.mtime_ns, sha256, found.kind, status, reason,
         time.time()),
    )
    return int(conn.execute("SELECT id FROM files WHERE path = ?", (found.path,)).fetchone()[0])


def touch_file(conn: sqlite3.Connection, found: FoundFile) -> None:
    """Record a new size/mtime for a file whose content did not change."""
    conn.execute(
        "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
        (found.size, found.mtime_ns, found.path),
    )


def forget_file_content(conn: sqlite3.Connection, file_id: int) -> None:
    """Drop what a file contributed (images, reports) and mark the series/studies to recompute."""
    conn.execute(
        "UPDATE series SET dirty = 1 WHERE id IN (SELECT series_id FROM images WHERE file_id = ?)",
        (file_id,),
    )
    conn.execute(
        "UPDATE studies SET dirty = 1 WHERE id IN (SELECT study_id FROM images WHERE file_id = ? "
        "UNION SELECT study_id FROM reports WHERE file_id = ?)",
        (file_id, file_id),
    )
    conn.execute("DELETE FROM images WHERE file_id = ?", (file_id,))
    conn.execute("DELETE FROM reports WHERE file_id = ?", (file_id,))
    conn.execute("DELETE FROM identifiers WHERE file_id = ?", (file_id,))


def remove_file(conn: sqlite3.Connection, path: str) -> None:
    row = conn.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
    if row is not None:
        forget_file_content(conn, int(row[0]))
        conn.execute("DELETE FROM files WHERE id = ?", (int(row[0]),))


def put_study(
    conn: sqlite3.Connection,
    key: str,
    *,
    patient_hash: str | None = None,
    study_date: str | None = None,
    description: str | None = None,
) -> int:
    conn.execute(
        "INSERT INTO studies(key, patient_hash, study_date, description, dirty) "
        "VALUES (?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET dirty = 1, "
        "patient_hash = COALESCE(excluded.patient_hash, patient_hash), "
        "study_date = COALESCE(excluded.study_date, study_date), "
        "description = COALESCE(excluded.description, description)",
        (key, patient_hash, study_date, description),
    )
    return int(conn.execute("SELECT id FROM studies WHERE key = ?", (key,)).fetchone()[0])


def put_identifiers(
    conn: sqlite3.Connection, file_id: int, *, study: str, series: str | None, identifiers: dict
) -> None:
    """What `--keep-phi` keeps of one file (reading.phi.KEPT_ATTRIBUTES, in clear), filed under
    its study and series keys; the catalog only, never a vector payload."""
    conn.execute(
        "INSERT INTO identifiers(file_id, study, series, attributes) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(file_id) DO UPDATE SET study = excluded.study, series = excluded.series, "
        "attributes = excluded.attributes",
        (file_id, study, series, json.dumps(identifiers, sort_keys=True, ensure_ascii=False)),
    )


def put_series(conn: sqlite3.Connection, key: str, study_id: int, metadata: dict) -> int:
    metadata = normalise_metadata(metadata)  # MRI -> MR, Transverse -> AXIAL, from any source
    conn.execute(
        "INSERT INTO series(key, study_id, modality, body_part, view, description, manufacturer, "
        "series_number, dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET "
        "dirty = 1, study_id = excluded.study_id, "
        "modality = COALESCE(excluded.modality, modality), "
        "body_part = COALESCE(excluded.body_part, body_part), "
        "view = COALESCE(excluded.view, view), "
        "description = COALESCE(excluded.description, description), "
        "manufacturer = COALESCE(excluded.manufacturer, manufacturer), "
        "series_number = COALESCE(excluded.series_number, series_number)",
        (
            key,
            study_id,
            metadata.get("modality"),
            metadata.get("body_part"),
            metadata.get("view"),
            metadata.get("series_description"),
            metadata.get("manufacturer"),
            metadata.get("series_number"),
        ),
    )
    return int(conn.execute("SELECT id FROM series WHERE key = ?", (key,)).fetchone()[0])


def put_images(
    conn: sqlite3.Connection,
    *,
    file_id: int,
    study_id: int,
    series_id: int,
    result: ReadResult,
    metadata: dict,
    vectors: np.ndarray,
) -> None:
    """One image row and one vector per frame of a decoded file."""
    metadata = normalise_metadata(metadata)
    filters = [metadata.get(field) for field in _IMAGE_FILTER_FIELDS]
    for frame, vector in zip(result.frames, vectors, strict=True):
        cursor = conn.execute(
            "INSERT INTO images(file_id, series_id, study_id, instance_key, frame, slice_position, "
            "instance_number, modality, body_part, view, study_date, rows, columns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                file_id,
                series_id,
                study_id,
                result.instance_uid_hash,
                frame.frame_index,
                frame.slice_position,
                frame.instance_number,
                *filters,
                metadata.get("rows"),
                metadata.get("columns"),
            ),
        )
        put_vector(conn, "images", int(cursor.lastrowid), vector)


def put_report(
    conn: sqlite3.Connection,
    *,
    study_id: int,
    file_id: int | None,
    source: str,
    text: str,
    sentences: list[Sentence],
    vectors: np.ndarray,
) -> int:
    """A report, its sentences and one vector per sentence."""
    report_id = int(
        conn.execute(
            "INSERT INTO reports(study_id, file_id, source, text) VALUES (?, ?, ?, ?)",
            (study_id, file_id, source, text),
        ).lastrowid
    )
    for sentence, vector in zip(sentences, vectors, strict=True):
        cursor = conn.execute(
            "INSERT INTO sentences(report_id, study_id, section, idx, text) VALUES (?, ?, ?, ?, ?)",
            (report_id, study_id, sentence.section, sentence.index, sentence.text),
        )
        put_vector(conn, "sentences", int(cursor.lastrowid), vector)
    conn.execute("UPDATE studies SET dirty = 1 WHERE id = ?", (study_id,))
    return report_id
