"""The SQLite plumbing every database of an index shares: how a connection is opened, one
transaction, statements over long lists of values, and float32 blobs as matrices.

A connection may carry a ``before_commit`` callable (see ``CatalogConnection``): ``transaction``
calls it just before COMMIT, so that data kept beside the database (the catalog's vector file) is
on disk before the rows that reference it are.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# SQLite's default limit on host parameters is 999 (older builds): 900 leaves room for the others.
CHUNK = 900


class CatalogConnection(sqlite3.Connection):
    """A connection with a hook run before each commit made through :func:`transaction`."""

    before_commit: Callable[[], None] | None = None


def connect(path: Path | str, *, factory: type[sqlite3.Connection] = sqlite3.Connection
            ) -> sqlite3.Connection:
    """A read-write connection in autocommit mode (transactions are explicit) with the write-ahead
    log, which lets readers keep a consistent snapshot while one writer commits."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, factory=factory)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def connect_read_only(path: Path | str, *,
                      factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    """A read-only connection; on a read-only file system, where SQLite cannot make the WAL's
    shared-memory file, the database is opened as immutable (nothing can change it there)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0, isolation_level=None,
                           factory=factory)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        conn.close()
        if os.access(Path(path).parent, os.W_OK):
            raise
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None,
                               factory=factory)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One atomic unit: everything inside commits together or not at all.

    A read transaction (``write=False``) pins one consistent snapshot in WAL mode.
    """
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
        hook = getattr(conn, "before_commit", None)
        if write and hook is not None:
            hook()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction unless one is already open (then the caller's own is used)."""
    if conn.in_transaction:
        yield conn
        return
    with transaction(conn, write=False):
        yield conn


def chunks(values: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    """``values`` in slices short enough for one statement's host parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(values: Sequence) -> str:
    """``?,?,?`` for an ``IN (...)`` over ``values``."""
    return ",".join("?" * len(values))


def select_in(conn: sqlite3.Connection, sql: str, values: Sequence,
              before: Iterable = (), after: Iterable = ()) -> Iterator[tuple]:
    """Rows of ``sql``, whose ``{marks}`` is an ``IN`` list, over ``values`` in chunks; ``before``
    and ``after`` are the statement's other parameters around the list."""
    for part in chunks(list(values)):
        yield from conn.execute(sql.format(marks=marks(part)), (*before, *part, *after))


def blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blobs_to_matrix(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Little-endian float32 blobs as one (len(blobs), dim) float32 matrix."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)
