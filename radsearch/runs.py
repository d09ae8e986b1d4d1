"""The record of index runs in the catalog's ``runs`` table: when each started and ended, how long
it took, what it did, and the files it could not read.

A run's row is written in a transaction of its own when the run starts, and completed when it ends:
a run killed on the way (or stopped by an error) keeps ``finished`` empty and is shown as one that
did not finish. The record is read by no part of indexing, so whatever state it is left in, the
next run resumes as it would without it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from radsearch.storage import catalog

COUNTS = ("indexed", "unchanged", "failed", "skipped", "removed")


def record_start(conn: sqlite3.Connection, root: str, backend: str, started: float) -> int:
    """File a new run started at ``started`` (seconds since the epoch); returns its id."""
    with catalog.transaction(conn):
        cursor = conn.execute("INSERT INTO runs(root, backend, started) VALUES (?, ?, ?)",
                              (root, backend, started))
    return int(cursor.lastrowid)


def record_end(conn: sqlite3.Connection, run_id: int, finished: float, seconds: float,
               counts: dict[str, int]) -> None:
    """Complete run ``run_id``: its end, its duration and its counts (COUNTS)."""
    with catalog.transaction(conn):
        conn.execute(
            "UPDATE runs SET finished = ?, seconds = ?, indexed = ?, unchanged = ?, failed = ?, "
            "skipped = ?, removed = ? WHERE id = ?",
            (finished, seconds, *(int(counts[name]) for name in COUNTS), run_id))


def _utc(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_run(conn: sqlite3.Connection) -> dict | None:
    """The newest run, or None (no run yet, or an index made before runs were recorded).

    ``finished`` None means the run did not finish: it is still going, or it was stopped before
    its end; its counts are then those of the files it recorded before it stopped (``unchanged``
    and ``removed`` unknown). ``failures`` are the files the run could not read, with the reason,
    from the catalog's rows it wrote.
    """
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is None:
        return None
    row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    started = row["started"]
    failures = [
        {"path": path, "reason": reason}
        for path, reason in conn.execute(
            "SELECT path, reason FROM files WHERE status = 'failed' AND indexed_at >= ? "
            "ORDER BY path", (started,))
    ]
    if row["finished"] is not None:
        counts = {name: row[name] for name in COUNTS}
    else:
        # Report files count among a finished run's reports, not its indexed files.
        written = dict(conn.execute(
            "SELECT status, COUNT(*) FROM files WHERE indexed_at >= ? "
            "AND NOT (status = 'indexed' AND kind = 'report') GROUP BY status",
            (started,)).fetchall())
        counts = {"indexed": written.get("indexed", 0), "unchanged": None,
                  "failed": written.get("failed", 0), "skipped": written.get("skipped", 0),
                  "removed": None}
    return {
        "root": row["root"],
        "backend": row["backend"],
        "started": _utc(started),
        "finished": _utc(row["finished"]),
        "seconds": None if row["seconds"] is None else round(float(row["seconds"]), 3),
        **counts,
        "failures": failures,
    }
