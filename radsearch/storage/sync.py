"""Bring a back end in step with the catalog, exactly, across crashes.

The catalog is the truth; a back end holds points built from it (``payloads``). The ledger, a table
of the catalog, records for each catalog vector the point it became, its version and whether the
back end has acknowledged it. A point is entered in the ledger (committed) *before* it is sent and
marked sent after the back end acknowledges it, and a ledger row is dropped only after its point is
deleted - so the ledger always lists every point this catalog may have put in the back end. A run
killed at any moment therefore leaves nothing orphaned; the next sync re-sends what was not
acknowledged and deletes what the catalog no longer has. Sends and deletes are idempotent.

Two catalog rows may make one point (the same content twice in one study): a point is deleted only
when no remaining row makes it, and a surviving row is re-sent so the payload is its own.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from radsearch.storage import catalog
from radsearch.storage import payloads
from radsearch.storage.backends.base import Backend
from radsearch.storage.sqlite import chunks, marks

_LEDGER = """
CREATE TABLE IF NOT EXISTS backend_points (
    vector_id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    point_id TEXT NOT NULL,
    version TEXT NOT NULL,
    sent INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS backend_points_point ON backend_points(collection, point_id);
CREATE INDEX IF NOT EXISTS backend_points_unsent ON backend_points(collection, point_id)
    WHERE sent = 0;
"""


@dataclass
class SyncCounts:
    sent: int = 0
    deleted: int = 0


def ensure_ledger(conn: sqlite3.Connection) -> None:
    with catalog.transaction(conn):
        for statement in _LEDGER.split(";\n"):
            if statement.strip():
                conn.execute(statement)


def drop_ledger(conn: sqlite3.Connection) -> None:
    """A back end that reads the catalog itself (faiss) is sent nothing: no ledger to keep."""
    with catalog.transaction(conn):
        conn.execute("DROP TABLE IF EXISTS backend_points")
        conn.execute("DELETE FROM meta WHERE key IN (?, ?, ?, ?)",
                     ("backend.instance", GENERATION_KEY, POINTS_KEY, SYNCING_KEY))


def bind(conn: sqlite3.Connection, instance: str) -> bool:
    """Tie the ledger to one back-end store; a different (or recreated) store starts empty, so the
    ledger is cleared and everything is sent again. True when it was cleared."""
    ensure_ledger(conn)
    with catalog.transaction(conn):
        if catalog.get_meta(conn).get("backend.instance") == instance:
            return False
        conn.execute("DELETE FROM backend_points")
        catalog.set_meta(conn, {"backend.instance": instance})
    return True


def sync(conn: sqlite3.Connection, backend: Backend, dim: int,
         collections: tuple[str, ...] = catalog.COLLECTIONS, batch: int = 512) -> dict[str, SyncCounts]:
    """Send what the catalog has and the back end lacks, delete what it no longer has, persist."""
    with catalog.transaction(conn):
        catalog.set_meta(conn, {SYNCING_KEY: "true"})
    counts = {name: sync_collection(conn, backend, name, dim, batch) for name in collections}
    backend.persist()
    _advance_generation(conn, backend)
    return counts


GENERATION_KEY = "backend.generation"
# The points each collection of the store holds after the last complete sync (JSON), and whether a
# sync has begun since (a run in progress, or killed): readers compare counts only when not.
POINTS_KEY = "backend.points"
SYNCING_KEY = "backend.syncing"


def generation(conn: sqlite3.Connection) -> int | None:
    """The number of the last sync that completed (None before the first)."""
    value = catalog.get_meta(conn).get(GENERATION_KEY)
    return int(value) if value else None


def _advance_generation(conn: sqlite3.Connection, backend: Backend) -> None:
    """Number the sync that just completed, in the store first, then in the catalog: a store
    one ahead of its catalog (a kill between the two) is still in step; one behind is an older
    copy of the store."""
    value = (generation(conn) or 0) + 1
    held = {name: sent for name, (sent, _) in ledger_counts(conn).items()}
    backend.set_generation(value)
    with catalog.transaction(conn):
        catalog.set_meta(conn, {GENERATION_KEY: str(value),
                                POINTS_KEY: json.dumps(held, sort_keys=True)})
        conn.execute("DELETE FROM meta WHERE key = ?", (SYNCING_KEY,))


def synced_points(conn: sqlite3.Connection) -> dict[str, int] | None:
    """The points per collection after the last complete sync; None while a sync is unfinished
    (or before the first)."""
    meta = catalog.get_meta(conn)
    if meta.get(SYNCING_KEY) or POINTS_KEY not in meta:
        return None
    return {name: int(count) for name, count in json.loads(meta[POINTS_KEY]).items()}


def ledger_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Per collection, (points the store acknowledged, points it may hold): a store in step with
    the catalog holds between the two (a run killed mid-sync leaves points sent but not marked)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'backend_points'").fetchone():
        return {}
    counts = {}
    for collection in catalog.COLLECTIONS:  # each count reads an index, not the table
        total, unsent = (int(conn.execute(
            "SELECT COUNT(DISTINCT point_id) FROM backend_points WHERE collection = ?" + extra,
            (collection,)).fetchone()[0]) for extra in ("", " AND sent = 0"))
        if total:
            counts[collection] = (total - unsent, total)
    return counts


def sync_collection(conn: sqlite3.Connection, backend: Backend, collection: str, dim: int,
                    batch: int = 512) -> SyncCounts:
    backend.create_collection(collection, dim)
    desired = payloads.versions(conn, collection)
    ledger = {
        vid: (pid, version, bool(sent))
        for vid, pid, version, sent in conn.execute(
            "SELECT vector_id, point_id, version, sent FROM backend_points WHERE collection = ?",
            (collection,),
        )
    }
    gone = [vid for vid in ledger if vid not in desired]
    send = [vid for vid, version in desired.items()
            if vid not in ledger or ledger[vid][1] != version or not ledger[vid][2]]
    counts = SyncCounts()
    counts.sent += _send(conn, backend, collection, dim, send, desired, batch)

    gone_points = {ledger[vid][0] for vid in gone}
    if gone_points:  # rows that make the same point as a removed row: send their own payload
        sending = set(send)
        survivors = [
            vid for (vid,) in conn.execute(
                "SELECT vector_id FROM backend_points WHERE collection = ? AND point_id IN "
                "(SELECT value FROM json_each(?))", (collection, _json_list(gone_points)))
            if vid in desired and vid not in sending
        ]
        counts.sent += _send(conn, backend, collection, dim, survivors, desired, batch)

    if gone:
        kept = {pid for (pid,) in conn.execute(
            "SELECT point_id FROM backend_points WHERE collection = ? AND point_id IN "
            "(SELECT value FROM json_each(?)) AND vector_id NOT IN (SELECT value FROM json_each(?))",
            (collection, _json_list(gone_points), _json_list(gone)))}
        doomed = sorted(gone_points - kept)
        backend.delete(collection, doomed)
        counts.deleted = len(doomed)
        for part in chunks(gone):
            with catalog.transaction(conn):
                conn.execute(f"DELETE FROM backend_points WHERE vector_id IN ({marks(part)})", part)
    return counts


def _send(conn: sqlite3.Connection, backend: Backend, collection: str, dim: int,
          vector_ids: list[int], desired: dict[int, str], batch: int) -> int:
    sent = 0
    for start in range(0, len(vector_ids), batch):
        points = payloads.build_points(conn, collection, vector_ids[start : start + batch], dim)
        with catalog.transaction(conn):  # intent first: the ledger never misses a sent point
            conn.executemany(
                "INSERT INTO backend_points(vector_id, collection, point_id, version, sent) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT(vector_id) DO UPDATE SET "
                "point_id = excluded.point_id, version = excluded.version, sent = 0",
                [(vid, collection, point.id, desired[vid]) for vid, point in points],
            )
        backend.upsert(collection, [point for _, point in points])
        with catalog.transaction(conn):
            conn.executemany("UPDATE backend_points SET sent = 1 WHERE vector_id = ?",
                             [(vid,) for vid, _ in points])
        sent += len(points)
    return sent


def _json_list(values) -> str:
    return json.dumps(sorted(values))
