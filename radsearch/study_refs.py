"""What a user names - a study key, a Study/Series/SOP Instance UID, an indexed file - as a study.

The catalog answers every kind of name; a store searched from a machine without the catalog
(a Qdrant cluster) knows studies and series by key, so there a key or a Study/Series UID works.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.reading import salted_hash
from radsearch.storage.backends import PointFilter
from radsearch.storage.store import Store


def resolve_study_id(store: Store, conn: sqlite3.Connection, ref: str) -> int | None:
    """A study's catalog id from its key, a Study/Series/SOP Instance UID, or an indexed file's path."""
    # A PACS instance's key (dicomweb://..., dimse://...) is its path as it stands.
    path = ref if "://" in ref else os.path.abspath(ref)
    for sql, value in (
        ("SELECT id FROM studies WHERE key = ?", ref),
        ("SELECT images.study_id FROM images JOIN files ON files.id = images.file_id "
         "WHERE files.path = ?", path),
        ("SELECT reports.study_id FROM reports JOIN files ON files.id = reports.file_id "
         "WHERE files.path = ?", path),
    ):
        row = conn.execute(sql + " LIMIT 1", (value,)).fetchone()
        if row is not None:
            return int(row[0])
    # A UID last: hashing it needs the index's key, which a copy of the index may not have.
    hashed = salted_hash(ref, store.salt)
    for sql in ("SELECT id FROM studies WHERE key = ?", "SELECT study_id FROM series WHERE key = ?",
                "SELECT study_id FROM images WHERE instance_key = ?"):
        row = conn.execute(sql + " LIMIT 1", (hashed,)).fetchone()
        if row is not None:
            return int(row[0])
    hashed_part = ref.removeprefix("group:")  # a CSV group's study: "group:" + a salted hash
    if len(hashed_part) >= 8 and hashed_part.isalnum():  # a unique prefix of a key, as listed
        rows = conn.execute(
            "SELECT id FROM studies WHERE substr(key, 1, ?) = ? LIMIT 2", (len(ref), ref)
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
    return None


def studies_of_file(conn: sqlite3.Connection, path: str) -> set[str]:
    """The keys of the studies an indexed file (an image or a report) belongs to."""
    return {row[0] for row in conn.execute(
        "SELECT studies.key FROM images JOIN files ON files.id = images.file_id "
        "JOIN studies ON studies.id = images.study_id WHERE files.path = ? UNION "
        "SELECT studies.key FROM reports JOIN files ON files.id = reports.file_id "
        "JOIN studies ON studies.id = reports.study_id WHERE files.path = ?", (path, path))}


def catalog_study_key(store: Store, ref: str) -> str | None:
    """The key of the study ``ref`` names in the catalog, or None."""
    with store.snapshot() as conn:
        study_id = resolve_study_id(store, conn, ref)
        if study_id is None:
            return None
        return conn.execute("SELECT key FROM studies WHERE id = ?", (study_id,)).fetchone()[0]


def backend_study_key(store: Store, ref: str) -> str | None:
    """The key of the study ``ref`` names (a study key, a Study or Series UID) among the back
    end's points, or None. The plain key is tried first: hashing a UID needs the index's key."""
    for keys in ([ref], None):
        if keys is None:
            keys = [salted_hash(ref, store.salt)]
        for collection, field in (("studies", "study"), ("series", "series"),
                                  ("sentences", "study")):
            found = store.backend.fetch(collection, PointFilter.build(any_of={field: keys}), 1)
            if found:
                return found[0].payload["study"]
    return None


def study_key(store: Store, ref: str) -> str:
    """The key of the study ``ref`` names: from the catalog where there is one, else from the
    back end's points; one line saying so where neither knows it."""
    key = catalog_study_key(store, ref) if store.conn is not None else None
    if key is None and store.conn is None:
        key = backend_study_key(store, ref)
    if key is None:
        raise RadsearchError(f"{ref}: no such file, and no indexed study, series or image with "
                             "that id")
    return key


SHOWN_KEY_LENGTH = 12  # of a hashed key: unique in any real index, and >= the 8 a prefix needs


def display_name(key: str, cwd: Path | None = None) -> str:
    """How a list names a study: a folder or file study by its path (see :func:`display_path`);
    a DICOM or CSV-group study by the first characters of its key, a prefix that
    :func:`resolve_study_id` takes back (in an index with its catalog) while it is unique."""
    kind, _, rest = key.partition(":")
    if kind in ("file", "dir") and rest:
        return display_path(rest, cwd)
    return key[:len("group:") + SHOWN_KEY_LENGTH] if kind == "group" else key[:SHOWN_KEY_LENGTH]


def display_path(path: str, cwd: Path | None = None) -> str:
    """``path`` relative to ``cwd`` (default: the working directory) when it lies below it."""
    try:
        return str(Path(path).relative_to(cwd or Path.cwd()))
    except ValueError:
        return path


def stored_study_vector(store: Store, key: str) -> np.ndarray:
    """The stored embedding of the study with key ``key``."""
    records = store.backend.fetch("studies", PointFilter.build(any_of={"study": [key]}), 1,
                                  with_vectors=True)
    if not records:
        raise RadsearchError("that study has no image embedding to compare")
    return np.asarray(records[0].vector, dtype=np.float32)
