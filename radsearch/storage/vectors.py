"""Every embedding of an index, stored once at full precision: an append-only float32 file.

The catalog's ``vectors`` table holds one row per embedded object (id, collection, catalog row,
``slot``); the vector itself is row ``slot`` of the vector file beside the catalog (``vectors.f32``,
little-endian float32, ``dim`` values a row). A SQLite blob of 2,048 bytes takes half a 4 KB page
and a second copy in a search store another 2 KB: the file costs the raw bytes and nothing more.

Crash safety (the catalog stays the truth):

- a vector is written to its slot before the catalog row that references it is inserted, and the
  file is fsynced before that transaction commits (``sqlite.transaction`` calls the connection's
  ``before_commit``), so a committed row never references bytes that are not on disk;
- slots are handed out from a counter in the catalog (meta ``vectors.slots``) committed with the
  rows: a transaction rolled back (or killed) leaves bytes no committed row references, and the
  next one writes over them; a slot freed by a deletion is never written again, so a reader's
  snapshot always finds the bytes it references;
- compaction (``compact``) writes the live rows to a new file, recorded in the same transaction as
  the new slots; the old file is removed by the next writer to open the index (under its lock).

A vector row is never changed in place: a new value is a new row with a new, never reused id (see
``indexer.writer.put_vector``), so the id is also the vector's version.

An index written before the vector file kept its vectors as blobs in the ``vectors`` table
(a ``vec`` column, no ``slot``): it is read as it is, and moved to a file by the next writer
(``migrate``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.storage import sqlite

FILE_KEY = "vectors.file"  # meta: the vector file's name in the index folder
SLOTS_KEY = "vectors.slots"  # meta: the slots handed out in that file (the next free one)
FIRST_FILE = "vectors.f32"
_COMPACT_MIN_DEAD = 4096  # fewer dead slots than this are left where they are


class VectorFile:
    """The vector file of one catalog: written by the writer's connection, read by any."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None  # the writer's descriptor, on the file it writes
        self._written_to: str | None = None
        self._dirty = False
        self._maps: dict[str, np.memmap] = {}

    # -- writing ------------------------------------------------------------------------------
    def write(self, name: str, slot: int, vector: np.ndarray) -> None:
        if self._written_to != name:
            self.close_writer()
            self._fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o644)
            self._written_to = name
        data = sqlite.blob(vector)
        os.pwrite(self._fd, data, slot * len(data))
        self._dirty = True

    def flush(self) -> None:
        """Make what was written durable: called before the catalog commits rows that reference it."""
        if self._dirty and self._fd is not None:
            os.fsync(self._fd)
        self._dirty = False

    def close_writer(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
        self._fd, self._written_to = None, None

    # -- reading ------------------------------------------------------------------------------
    def rows(self, name: str, slots: np.ndarray, dim: int) -> np.ndarray:
        """Rows ``slots`` of file ``name`` as a float32 matrix (a copy)."""
        slots = np.asarray(slots, dtype=np.int64)
        if not len(slots):
            return np.zeros((0, dim), dtype=np.float32)
        mapped = self._maps.get(name)
        if mapped is None or mapped.shape[1] != dim or int(slots.max()) >= mapped.shape[0]:
            path = self.folder / name
            size = path.stat().st_size // (4 * dim) if path.exists() else 0
            if int(slots.max()) >= size:
                raise VectorFileError(f"{path} holds {size} vectors, the catalog references "
                                      f"more: it was cut short or removed")
            mapped = np.memmap(path, dtype="<f4", mode="r", shape=(size, dim))
            self._maps[name] = mapped
        return np.asarray(mapped[slots], dtype=np.float32)

    def close(self) -> None:
        self.close_writer()
        self._maps.clear()


class VectorFileError(RadsearchError):
    """The vector file does not hold a vector the catalog references (cut short, removed)."""

    def __init__(self, problem: str):
        super().__init__(f"{problem}: `radsearch check --repair` sets the index aside, and the "
                         "next `radsearch index` rebuilds it from the files")


def vector_file(conn: sqlite3.Connection) -> VectorFile:
    """The vector file of catalog ``conn`` (kept on the connection when it can hold it)."""
    found = getattr(conn, "vector_file", None)
    if found is None:
        path = next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")
        found = VectorFile(Path(path).parent)
        if isinstance(conn, sqlite.CatalogConnection):
            conn.vector_file = found
            conn.before_commit = found.flush
    return found


def in_blobs(conn: sqlite3.Connection) -> bool:
    """True for an index written before the vector file (vectors as blobs in the catalog)."""
    return any(row[1] == "vec" for row in conn.execute("PRAGMA table_info(vectors)"))


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _set_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                     "value = excluded.value", list(values.items()))


def file_name(conn: sqlite3.Connection) -> str:
    return _meta(conn, FILE_KEY) or FIRST_FILE


# -- writing (inside the writer's transaction) ----------------------------------------------------
def append(conn: sqlite3.Connection, vector: np.ndarray) -> int:
    """Write ``vector`` to the next free slot of the vector file and return the slot; the caller
    inserts the row referencing it in the same transaction."""
    slot = int(_meta(conn, SLOTS_KEY) or 0)
    name = file_name(conn)
    vector_file(conn).write(name, slot, vector)
    _set_meta(conn, {SLOTS_KEY: str(slot + 1), FILE_KEY: name})
    return slot


# -- reading ---------------------------------------------------------------------------------------
def read_by_ids(conn: sqlite3.Connection, vector_ids, dim: int) -> np.ndarray:
    """Vectors of the catalog's vector rows ``vector_ids``, in that order (all must exist)."""
    ids = [int(i) for i in vector_ids]
    if in_blobs(conn):
        found = dict(sqlite.select_in(conn, "SELECT id, vec FROM vectors WHERE id IN ({marks})", ids))
        return sqlite.blobs_to_matrix([found[i] for i in ids], dim)
    slots = dict(sqlite.select_in(conn, "SELECT id, slot FROM vectors WHERE id IN ({marks})", ids))
    missing = [i for i in ids if i not in slots]
    if missing:
        raise KeyError(f"no vector rows {missing[:5]}")
    return vector_file(conn).rows(file_name(conn), np.fromiter(
        (slots[i] for i in ids), dtype=np.int64, count=len(ids)), dim)


def read_vectors(
    conn: sqlite3.Connection, collection: str, ref_ids: list[int], dim: int
) -> np.ndarray:
    """Vectors of catalog rows ``ref_ids`` (in that order) from one collection."""
    found = dict(sqlite.select_in(
        conn, "SELECT ref_id, id FROM vectors WHERE collection = ? AND ref_id IN ({marks})",
        ref_ids, before=(collection,)))
    missing = [r for r in ref_ids if r not in found]
    if missing:
        raise KeyError(f"no {collection} vector for catalog rows {missing[:5]}")
    return read_by_ids(conn, [found[r] for r in ref_ids], dim)


def iter_collection(conn: sqlite3.Connection, collection: str, dim: int, *,
                    after: int = -1, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(vector ids, vectors) of a collection in id order, ``chunk`` at a time (never all at once)."""
    blobs = in_blobs(conn)
    while True:
        rows = conn.execute(
            f"SELECT id, {'vec' if blobs else 'slot'} FROM vectors WHERE collection = ? AND id > ? "
            "ORDER BY id LIMIT ?", (collection, after, chunk)).fetchall()
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        if blobs:
            matrix = sqlite.blobs_to_matrix([row[1] for row in rows], dim)
        else:
            matrix = vector_file(conn).rows(file_name(conn), np.fromiter(
                (row[1] for row in rows), dtype=np.int64, count=len(rows)), dim)
        yield ids, matrix
        after = int(ids[-1])


# -- upkeep by the writer (it holds the index's lock) ----------------------------------------------
_VECTORS_TABLE = """CREATE TABLE vectors_moved (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    ref_id INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    UNIQUE (collection, ref_id)
)"""
_VECTOR_TRIGGERS = ("images_drop_vector", "series_drop_vector", "studies_drop_vector",
                    "sentences_drop_vector")


def migrate(conn: sqlite3.Connection, schema: list[str]) -> bool:
    """Move an older index's blobs into a vector file (one transaction; the catalog's schema
    statements ``schema`` recreate what the table's triggers were), then give their pages back to
    the file system. True when there was something to move."""
    if not in_blobs(conn):
        return False
    name = FIRST_FILE
    with sqlite.transaction(conn):
        dim = None
        slot = 0
        last = -1
        while True:
            rows = conn.execute("SELECT id, vec FROM vectors WHERE id > ? ORDER BY id LIMIT 5000",
                                (last,)).fetchall()
            if not rows:
                break
            for _, value in rows:
                vector = np.frombuffer(value, dtype="<f4")
                dim = dim or len(vector)
                vector_file(conn).write(name, slot, vector)
                slot += 1
            last = rows[-1][0]
        for trigger in _VECTOR_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.execute(_VECTORS_TABLE)
        conn.execute("INSERT INTO vectors_moved(id, collection, ref_id, slot) SELECT id, "
                     "collection, ref_id, ROW_NUMBER() OVER (ORDER BY id) - 1 FROM vectors")
        conn.execute("DROP TABLE vectors")
        conn.execute("ALTER TABLE vectors_moved RENAME TO vectors")
        for statement in schema:
            conn.execute(statement)
        _set_meta(conn, {FILE_KEY: name, SLOTS_KEY: str(slot)})
    conn.execute("VACUUM")
    return True


def dead_slots(conn: sqlite3.Connection) -> int:
    """Slots of the file that no vector row references any more."""
    used = int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
    return int(_meta(conn, SLOTS_KEY) or 0) - used


def compact(conn: sqlite3.Connection, dim: int, *, force: bool = False) -> bool:
    """When more than half the file (and at least _COMPACT_MIN_DEAD slots) is dead, copy the live
    rows into a new file and point the rows at it, in one transaction. The old file stays until
    the next writer opens the index (``remove_stale``): a reader may still be reading it."""
    if in_blobs(conn):
        return False
    dead = dead_slots(conn)
    used = int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
    if not force and (dead < _COMPACT_MIN_DEAD or dead <= used):
        return False
    if dead == 0:
        return False
    old = file_name(conn)
    stem = old.removesuffix(".f32")
    generation = int(stem.rsplit("-", 1)[1]) + 1 if "-" in stem else 2
    new = f"vectors-{generation}.f32"
    files = vector_file(conn)
    with sqlite.transaction(conn):
        conn.execute("CREATE TEMP TABLE moved (slot INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
        conn.execute("INSERT INTO moved SELECT slot, ROW_NUMBER() OVER (ORDER BY slot) - 1 "
                     "FROM vectors")
        last = -1
        while True:
            rows = conn.execute("SELECT slot, new FROM moved WHERE slot > ? ORDER BY slot "
                                "LIMIT 50000", (last,)).fetchall()
            if not rows:
                break
            matrix = files.rows(old, np.asarray([row[0] for row in rows], dtype=np.int64), dim)
            for (_, target), vector in zip(rows, matrix):
                files.write(new, target, vector)
            last = rows[-1][0]
        conn.execute("UPDATE vectors SET slot = (SELECT new FROM moved WHERE moved.slot = "
                     "vectors.slot)")
        conn.execute("DROP TABLE moved")
        _set_meta(conn, {FILE_KEY: new, SLOTS_KEY: str(used)})
    return True


def remove_stale(conn: sqlite3.Connection) -> list[Path]:
    """Vector files of earlier generations (and bytes past the last slot handed out, left by a
    killed run): removed by the writer that opens the index, under its lock."""
    files = vector_file(conn)
    current = file_name(conn)
    removed = []
    for path in files.folder.glob("vectors*.f32"):
        if path.name != current:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check(conn: sqlite3.Connection, dim: int) -> str | None:
    """None when the vector file holds every slot the catalog has handed out, else one line. Each
    slot is written before the counter that hands it out commits, so the file is never shorter."""
    if in_blobs(conn):
        return None
    slots = int(_meta(conn, SLOTS_KEY) or 0)
    if not slots:
        return None
    path = vector_file(conn).folder / file_name(conn)
    held = path.stat().st_size // (4 * dim) if path.exists() else 0
    if held < slots:
        return f"{path} holds {held} vectors, the catalog {slots}: it was cut short or removed"
    return None
