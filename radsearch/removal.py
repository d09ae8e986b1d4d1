"""Take studies, series or files out of an index, keeping it whole on every back end.

What goes: every file named, under a folder named, or of a study, series or image named (by key,
UID or an indexed file); with them their images, reports, sentences and vectors. The series and
studies they touched are recomputed (a series left without images and a study left with neither
images nor reports go), then the back end is brought in step with the catalog (``Store.sync_backend``),
so that a removed study is found by no search, on FAISS, qdrant-edge or a Qdrant cluster alike.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radsearch.errors import RadsearchError
from radsearch.index_handle import checked_encoder, resolve_index_path
from radsearch.storage import catalog
from radsearch.storage.store import Store
from radsearch.study_refs import resolve_study_id


@dataclass
class RemoveSummary:
    """What ``remove`` took out (with ``dry_run``: would take out)."""

    index: str
    dry_run: bool
    files: list[str] = field(default_factory=list)
    studies: int = 0  # studies removed whole
    images: int = 0
    reports: int = 0
    deleted: int = 0  # back-end points deleted
    sent: int = 0  # back-end points re-sent (recomputed series and studies)

    def to_dict(self) -> dict:
        return asdict(self)


def remove(refs: Sequence[str | Path], *, index: Path | None = None,
           dry_run: bool = False) -> RemoveSummary:
    """Remove what ``refs`` name - indexed files or folders (paths), studies, series or images
    (keys or UIDs) - from ``index``; ``dry_run`` says what would go and changes nothing.
    A reference that names nothing indexed is an error, and then nothing is removed."""
    if not refs:
        raise RadsearchError("name at least one indexed file, folder, study, series or image")
    path = resolve_index_path(index)
    with Store.open_for_reading(path) as reader:
        if reader.conn is None:
            raise RadsearchError(f"{path}: no catalog here: remove runs where the index was built")
        with reader.snapshot() as conn:
            file_ids, study_ids = _resolve(reader, conn, refs)  # an unknown name fails here
            summary = _describe(conn, path, dry_run, file_ids, study_ids)
        meta = reader.meta
    if dry_run:
        return summary
    from radsearch.indexer import aggregate, writer

    with Store.open_for_writing(path, _describe_model(meta), shard=meta.get("shard"),
                                keep_phi=meta.get(catalog.KEEP_PHI_KEY) == "true") as store:
        conn = store.conn
        file_ids, study_ids = _resolve(store, conn, refs)  # again, under the write lock
        summary = _describe(conn, path, dry_run, file_ids, study_ids)
        with catalog.transaction(conn):
            for file_id in file_ids:
                writer.forget_file_content(conn, file_id)
                conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            for study_id in study_ids:  # reports from a CSV have no file: they go with their study
                conn.execute("DELETE FROM reports WHERE study_id = ?", (study_id,))
                conn.execute("UPDATE studies SET dirty = 1 WHERE id = ?", (study_id,))
        aggregate.update_series(conn, store.dim, checked_encoder(store).pool_slices)
        aggregate.update_studies(conn, store.dim)
        for counts in store.sync_backend().values():
            summary.sent += counts.sent
            summary.deleted += counts.deleted
    return summary


def _describe_model(meta: dict[str, str]) -> dict:
    """The model record of the index, as ``Encoder.describe()`` gives it: removing embeds nothing."""
    return {"name": meta["model.name"], "weights_hash": meta["model.weights_hash"],
            "dim": int(meta["model.dim"]),
            "preprocessing": json.loads(meta.get("model.preprocessing", "{}"))}


def _resolve(store: Store, conn: sqlite3.Connection,
             refs: Sequence[str | Path]) -> tuple[list[int], list[int]]:
    """The files to remove, and the studies that go whole: those named, and those left with no
    file (their reports from a CSV, which have no file of their own, go with them)."""
    from radsearch.reading import salted_hash

    files: set[int] = set()
    studies: set[int] = set()
    for ref in refs:
        text = str(ref)
        found = _files_under(conn, os.path.abspath(text))
        if not found:
            hashed = salted_hash(text, store.salt)
            found = _ids(conn, "SELECT DISTINCT file_id FROM images WHERE series_id IN "
                         "(SELECT id FROM series WHERE key = ?) OR instance_key = ?", hashed, hashed)
        if not found:
            study_id = None if Path(text).exists() else resolve_study_id(store, conn, text)
            if study_id is None:
                raise RadsearchError(f"{text}: no indexed file, folder, study, series or image "
                                     "by that name (nothing was removed)")
            studies.add(study_id)
            found = _ids(conn, "SELECT file_id FROM images WHERE study_id = ? UNION SELECT file_id "
                         "FROM reports WHERE study_id = ? AND file_id IS NOT NULL", study_id, study_id)
        files |= found
    removed = json.dumps(sorted(files))
    # An image that is a study of its own (``file:`` key: it had its own report) takes the study,
    # and so its report, with it.
    for (study_id,) in conn.execute(
        "SELECT id FROM studies WHERE key IN (SELECT 'file:' || path FROM files WHERE id IN "
        "(SELECT value FROM json_each(?)))", (removed,)).fetchall():
        studies.add(int(study_id))
        files |= _ids(conn, "SELECT file_id FROM reports WHERE study_id = ? AND file_id IS NOT NULL",
                      study_id)
    removed = json.dumps(sorted(files))
    for (study_id,) in conn.execute(
        "SELECT study_id FROM images WHERE file_id IN (SELECT value FROM json_each(?)) UNION "
        "SELECT study_id FROM reports WHERE file_id IN (SELECT value FROM json_each(?))",
        (removed, removed),
    ).fetchall():
        left = conn.execute(
            "SELECT 1 FROM images WHERE study_id = ? AND file_id NOT IN (SELECT value FROM "
            "json_each(?)) UNION ALL SELECT 1 FROM reports WHERE study_id = ? AND file_id IS NOT NULL "
            "AND file_id NOT IN (SELECT value FROM json_each(?)) LIMIT 1",
            (study_id, removed, study_id, removed)).fetchone()
        if left is None:
            studies.add(study_id)
    return sorted(files), sorted(studies)


def _files_under(conn: sqlite3.Connection, path: str) -> set[int]:
    prefix = path.rstrip(os.sep) + os.sep
    return _ids(conn, "SELECT id FROM files WHERE path = ? OR substr(path, 1, ?) = ?",
                path, len(prefix), prefix)


def _ids(conn: sqlite3.Connection, sql: str, *args: object) -> set[int]:
    return {int(row[0]) for row in conn.execute(sql, args)}


def _describe(conn: sqlite3.Connection, index: Path, dry_run: bool, file_ids: list[int],
              study_ids: list[int]) -> RemoveSummary:
    files, studies = json.dumps(file_ids), json.dumps(study_ids)
    return RemoveSummary(
        index=str(index), dry_run=dry_run, studies=len(study_ids),
        files=[row[0] for row in conn.execute(
            "SELECT path FROM files WHERE id IN (SELECT value FROM json_each(?)) ORDER BY path",
            (files,))],
        images=conn.execute("SELECT COUNT(*) FROM images WHERE file_id IN "
                            "(SELECT value FROM json_each(?))", (files,)).fetchone()[0],
        reports=conn.execute("SELECT COUNT(*) FROM reports WHERE file_id IN (SELECT value FROM "
                             "json_each(?)) OR study_id IN (SELECT value FROM json_each(?))",
                             (files, studies)).fetchone()[0],
    )
