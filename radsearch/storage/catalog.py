"""The SQLite catalog: files, studies, series, images, reports, sentences and their vectors.

The catalog is the single source of truth. Each row's vector is a row of the ``vectors`` table,
inserted in the same transaction as the row it belongs to, so a killed run never leaves a row without
its vector or the reverse; the vector itself is a slot of the vector file beside the catalog, written
and made durable before that transaction commits (see ``vectors.py``). Search structures are derived,
rebuildable caches. Triggers delete a row's vector with the row.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from radsearch import terms
from radsearch.errors import RadsearchError
from radsearch.storage import sqlite as sqlite_helper
from radsearch.storage import vectors
from radsearch.storage.sqlite import connect_read_only as _connect_read_only
from radsearch.storage.sqlite import transaction

SCHEMA_VERSION = "1"

COLLECTIONS = ("images", "series", "studies", "sentences")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    dir TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped', 'failed')),
    reason TEXT,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_dir ON files(dir);
CREATE INDEX IF NOT EXISTS files_status ON files(status);

CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    patient_hash TEXT,
    study_date TEXT,
    description TEXT,
    dirty INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    modality TEXT,
    body_part TEXT,
    view TEXT,
    description TEXT,
    manufacturer TEXT,
    series_number INTEGER,
    dirty INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_id);

CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id),
    series_id INTEGER NOT NULL REFERENCES series(id),
    study_id INTEGER NOT NULL REFERENCES studies(id),
    instance_key TEXT,
    frame INTEGER NOT NULL,
    slice_position REAL,
    instance_number INTEGER,
    slice_order INTEGER,
    modality TEXT,
    body_part TEXT,
    view TEXT,
    study_date TEXT,
    rows INTEGER,
    columns INTEGER
);
CREATE INDEX IF NOT EXISTS images_file ON images(file_id);
CREATE INDEX IF NOT EXISTS images_series ON images(series_id);
CREATE INDEX IF NOT EXISTS images_study ON images(study_id);

CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    file_id INTEGER REFERENCES files(id),
    source TEXT NOT NULL CHECK (source IN ('sr', 'sidecar', 'csv')),
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_study ON reports(study_id);
CREATE INDEX IF NOT EXISTS reports_file ON reports(file_id);

CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY,
    report_id INTEGER NOT NULL REFERENCES reports(id),
    study_id INTEGER NOT NULL REFERENCES studies(id),
    section TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sentences_report ON sentences(report_id);

CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    ref_id INTEGER NOT NULL,
    slot INTEGER NOT NULL,  -- the vector's row in the vector file (vectors.py)
    UNIQUE (collection, ref_id)
);

CREATE TRIGGER IF NOT EXISTS images_drop_vector AFTER DELETE ON images BEGIN
    DELETE FROM vectors WHERE collection = 'images' AND ref_id = OLD.id; END;
CREATE TRIGGER IF NOT EXISTS series_drop_vector AFTER DELETE ON series BEGIN
    DELETE FROM vectors WHERE collection = 'series' AND ref_id = OLD.id; END;
CREATE TRIGGER IF NOT EXISTS studies_drop_vector AFTER DELETE ON studies BEGIN
    DELETE FROM vectors WHERE collection = 'studies' AND ref_id = OLD.id; END;
CREATE TRIGGER IF NOT EXISTS sentences_drop_vector AFTER DELETE ON sentences BEGIN
    DELETE FROM vectors WHERE collection = 'sentences' AND ref_id = OLD.id; END;
CREATE TRIGGER IF NOT EXISTS reports_drop_sentences AFTER DELETE ON reports BEGIN
    DELETE FROM sentences WHERE report_id = OLD.id; END;

-- Only with --keep-phi: a file's identifying attributes in clear (reading.phi.KEPT_ATTRIBUTES),
-- a JSON object, filed under the study and series keys. Never copied into a vector payload.
CREATE TABLE IF NOT EXISTS identifiers (
    file_id INTEGER PRIMARY KEY,
    study TEXT NOT NULL,
    series TEXT,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identifiers_study ON identifiers(study);
CREATE INDEX IF NOT EXISTS identifiers_series ON identifiers(series);
CREATE TRIGGER IF NOT EXISTS files_drop_identifiers AFTER DELETE ON files BEGIN
    DELETE FROM identifiers WHERE file_id = OLD.id; END;

-- One row per index run (radsearch.runs): written when it starts and again when it ends, so a
-- run killed on the way keeps finished NULL. Created on first write in an older index.
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    backend TEXT,
    started REAL NOT NULL,
    finished REAL,
    seconds REAL,
    indexed INTEGER,
    unchanged INTEGER,
    failed INTEGER,
    skipped INTEGER,
    removed INTEGER
);
"""

# Whether the index keeps patient identifiers (--keep-phi): "true" or "false", fixed when the
# first file is indexed.
KEEP_PHI_KEY = "privacy.keep_phi"


class CatalogDamagedError(RadsearchError):
    """The catalog's file cannot be read: cut short, overwritten, not a database."""


def damaged(path: Path, error: object) -> CatalogDamagedError:
    return CatalogDamagedError(
        f"{path} is damaged ({error}): `radsearch check --repair` sets it aside, and the next "
        "`radsearch index` rebuilds the index from the files")


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the catalog; WAL mode lets searches read a consistent snapshot while a run writes.
    A writer's connection moves an older index's vector blobs into the vector file.
    A file that is not a whole SQLite database raises CatalogDamagedError (one line)."""
    try:
        if readonly:
            conn = connect_read_only(path)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        else:
            conn = sqlite_helper.connect(path, factory=sqlite_helper.CatalogConnection)
            vectors.vector_file(conn)  # its fsync runs before each commit
            with transaction(conn):
                for statement in _statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
            vectors.migrate(conn, _statements())
    except sqlite3.DatabaseError as error:
        if is_damage(error):
            raise damaged(path, error) from None
        raise
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    if not readonly:
        normalise_terms(conn)
    return conn


def _statements() -> list[str]:
    return [statement for statement in _SCHEMA.split(";\n") if statement.strip()]


def is_damage(error: sqlite3.DatabaseError) -> bool:
    """Damage, not a full disk or a busy lock: SQLITE_CORRUPT (11) and SQLITE_NOTADB (26)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    text = str(error)
    return "malformed" in text or "not a database" in text


def quick_check(conn: sqlite3.Connection) -> str | None:
    """SQLite's quick_check over every page: None when whole, else its first complaint."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if problems == ["ok"] else problems[0]


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to a catalog (see ``sqlite.connect_read_only``)."""
    return _connect_read_only(path, factory=sqlite_helper.CatalogConnection)


def get_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM meta")}


def set_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the catalog, as `radsearch stats` reports them."""

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    return {
        "studies": one("SELECT COUNT(*) FROM studies"),
        "series": one("SELECT COUNT(*) FROM series"),
        "images": one("SELECT COUNT(*) FROM images"),
        "reports": one("SELECT COUNT(*) FROM reports"),
        "sentences": one("SELECT COUNT(*) FROM sentences"),
        "failed": one("SELECT COUNT(*) FROM files WHERE status = 'failed'"),
        "skipped": one("SELECT COUNT(*) FROM files WHERE status = 'skipped'"),
        "files": one("SELECT COUNT(*) FROM files"),
    }


def claim_phi(conn: sqlite3.Connection, keep: bool, where: object) -> None:
    """Record whether the index at ``where`` keeps patient identifiers, or refuse a run that
    disagrees with the record: PHI is never silently added to an index, nor dropped from one.
    An index that holds no file yet takes the choice asked for; one that holds files but no
    record was built without identifiers."""
    with transaction(conn):
        recorded = get_meta(conn).get(KEEP_PHI_KEY)
        holds_files = conn.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None
        if recorded is None or not holds_files:
            recorded = str(keep).lower() if not holds_files else "false"
            set_meta(conn, {KEEP_PHI_KEY: recorded})
    if recorded == str(keep).lower():
        return
    if recorded == "true":
        raise RadsearchError(f"{where}: this index keeps patient identifiers (it was built with "
                             "--keep-phi): run with --keep-phi, or use another --index")
    raise RadsearchError(f"{where}: this index holds no patient identifiers (built without "
                         "--keep-phi): index into a fresh --index to keep them")


def keeps_phi(conn: sqlite3.Connection) -> bool:
    """True when the index was built with --keep-phi."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (KEEP_PHI_KEY,)).fetchone()
    return row is not None and row[0] == "true"


TERMS_KEY = "terms.version"


def normalise_terms(conn: sqlite3.Connection) -> int:
    """Rewrite the modality, body part and view of series and images as defined terms
    (``radsearch.terms``) once per version of the terms, without re-embedding anything; the
    back-end points of every study touched are marked unsent, so that the next sync (the end of
    an index run, or `radsearch remove`) re-sends their payloads. Returns the rows changed."""
    changed = 0
    with transaction(conn):
        if get_meta(conn).get(TERMS_KEY) == terms.VERSION:
            return 0
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS renamed_studies (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM renamed_studies")
        for table in ("series", "images"):
            for field in terms.FIELDS:
                for (value,) in conn.execute(
                    f"SELECT DISTINCT {field} FROM {table} WHERE {field} IS NOT NULL"
                ).fetchall():
                    term = terms.normalise(field, value)
                    if term == value:
                        continue
                    conn.execute(f"INSERT OR IGNORE INTO renamed_studies SELECT DISTINCT study_id "
                                 f"FROM {table} WHERE {field} = ?", (value,))
                    changed += conn.execute(
                        f"UPDATE {table} SET {field} = ? WHERE {field} = ?", (term, value)
                    ).rowcount
        if changed and conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                    "AND name = 'backend_points'").fetchone():
            conn.execute(
                "UPDATE backend_points SET sent = 0 WHERE vector_id IN (SELECT v.id FROM vectors "
                "AS v WHERE (v.collection = 'studies' AND v.ref_id IN renamed_studies) "
                "OR (v.collection = 'series' AND v.ref_id IN (SELECT id FROM series WHERE "
                "study_id IN renamed_studies)) OR (v.collection = 'images' AND v.ref_id IN "
                "(SELECT id FROM images WHERE study_id IN renamed_studies)) "
                "OR (v.collection = 'sentences' AND v.ref_id IN (SELECT id FROM sentences WHERE "
                "study_id IN renamed_studies)))")
        conn.execute("DROP TABLE renamed_studies")
        set_meta(conn, {TERMS_KEY: terms.VERSION})
    return changed
