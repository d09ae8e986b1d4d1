"""Is an index whole, and is its search back end in step with its catalog?

The catalog is the truth, with its vector file (``vectors.f32``); the faiss back end searches them
itself (its saved codes are checked against the catalog whenever they are loaded), and an embedded
store of its own (``qdrant-edge/``) is rebuilt from them.
A store is in step when it is this catalog's (the instance id of its record), holds the state of
the catalog's last sync (a generation number written on every sync, in the store and then in the
catalog) and, per collection, between the points the ledger says it acknowledged and those it may
hold. Readers check this cheaply on opening (no lock, no full read) and warn; a writer also runs
SQLite's quick_check over the store and rebuilds it when it is not in step. ``check_index`` runs
every check, and with ``repair`` mends what can be mended (see its doc).

A Qdrant server or cluster is shared by several catalogs (shards): it is not compared with one.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from radsearch.storage import catalog, vectors
from radsearch.storage.backends import EDGE_DIR, FAISS_DIR, BackendSpec
from radsearch.storage import sync as backend_sync
from radsearch.storage.backends.base import StoreDamagedError, StoreView
from radsearch.errors import IndexNotFoundError, RadsearchError

_STORE_DIRS = {"qdrant-edge": EDGE_DIR}  # stores of their own, compared with the catalog
_CACHE_DIRS = (FAISS_DIR,)  # derived from the catalog alone
DAMAGED_SUFFIX = ".damaged"
_TEMPORARY = re.compile(r"\.tmp\d+$")  # FaissIndex.save and the stores' JSON records: NAME.tmpPID


def store_directory(spec: BackendSpec, index: Path) -> Path | None:
    """Where an embedded store lives in the index folder (None: a Qdrant server)."""
    name = _STORE_DIRS.get(spec.kind)
    return None if name is None else Path(index) / name


def inspect_store(spec: BackendSpec, index: Path, *, thorough: bool = False) -> StoreView | None:
    """What the embedded store's files say (None: no store there). Raises StoreDamagedError."""
    directory = store_directory(spec, index)
    if directory is None:
        return None
    from radsearch.storage.backends.edge_backend import inspect_store as inspect_edge

    return inspect_edge(directory, thorough=thorough)


def out_of_step(conn: sqlite3.Connection, spec: BackendSpec, index: Path, *,
                thorough: bool = False) -> str | None:
    """One line saying how the embedded store disagrees with the catalog, or None when it agrees
    (or is a Qdrant server). Raises StoreDamagedError when its files cannot be read."""
    if store_directory(spec, index) is None:
        return None
    return compare(conn, spec, inspect_store(spec, index, thorough=thorough),
                   store_directory(spec, index), thorough=thorough)


def compare(conn: sqlite3.Connection, spec: BackendSpec, view: StoreView | None,
            where: Path | None, *, thorough: bool = False) -> str | None:
    """The first disagreement between a store (``view``) and the catalog's record and counts:
    with ``thorough``, the ledger's bounds (exact, it reads the ledger's index); without, the
    counts recorded by the last complete sync (compared only when no sync is unfinished)."""
    what = f"the {spec.kind} store {where}"
    if thorough:
        ledger = backend_sync.ledger_counts(conn)
    else:
        synced = backend_sync.synced_points(conn)
        ledger = None if synced is None else {name: (held, held) for name, held in synced.items()}
    acknowledged = sum(sent for sent, _ in (ledger or {}).values())
    if view is None:
        return f"{what} is missing ({acknowledged} points in the catalog)" if acknowledged else None
    meta = catalog.get_meta(conn)
    instance = meta.get("backend.instance")
    if acknowledged and instance and view.instance != instance:
        return f"{what} is not this catalog's (another store, or one made anew)"
    ours = backend_sync.generation(conn)
    theirs = view.generation
    if ours is not None and (theirs is None or not ours <= theirs <= ours + 1):
        return (f"{what} holds the state of sync {theirs or 0}, the catalog that of sync {ours} "
                "(an older copy put back?)")
    if ledger is None:
        return None
    for name in sorted(set(ledger) | set(view.counts)):
        sent, total = ledger.get(name, (0, 0))
        if name not in view.counts:
            if sent:
                return f"{what} lacks collection {name} ({sent} points in the catalog)"
            continue
        held = view.counts[name]
        if held is not None and not sent <= held <= total:
            return f"{what} holds {held} points in {name}, the catalog {sent}"
    return None


def remove_store(spec: BackendSpec, index: Path) -> None:
    """Delete an embedded store (it is rebuilt from the catalog by the next sync)."""
    directory = store_directory(spec, index)
    if directory is not None and directory.exists():
        shutil.rmtree(directory)


# --- radsearch check -----------------------------------------------------------------------------


@dataclass
class Finding:
    """One part of the index and what was found: ``ok``, or a problem (``repaired`` when mended)."""

    part: str  # catalog | store | files
    ok: bool
    message: str
    repaired: bool = False


@dataclass
class CheckReport:
    index: str
    backend: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left damaged or out of step."""
        return all(finding.ok or finding.repaired for finding in self.findings)

    def to_dict(self) -> dict:
        return {"index": self.index, "backend": self.backend, "ok": self.ok,
                "findings": [finding.__dict__ for finding in self.findings]}


def check_index(index: Path | None = None, *, repair: bool = False) -> CheckReport:
    """Verify the catalog (SQLite quick_check, an index's record), the index files (the embedded
    store's database checked in full, no leftover temporary files) and the back end against the
    catalog (record, sync generation, point counts).

    ``repair`` (it takes the index's write lock): a damaged catalog is set aside as
    ``catalog.sqlite.damaged`` with the embedded store, so that the next ``radsearch index``
    re-reads every file (a ``--reports`` CSV must be given again); a damaged or out-of-step
    embedded store is rebuilt from the catalog at once; leftover temporary files are removed.
    """
    from radsearch.index_handle import resolve_index_path
    from radsearch.storage.store import CATALOG_FILE, Store, _lock_folder, _recorded_spec

    path = resolve_index_path(index)
    catalog_path = path / CATALOG_FILE
    if not catalog_path.exists():
        raise IndexNotFoundError(f"{path}: no radsearch index here (run `radsearch index` first)")
    lock = _lock_folder(path) if repair else None
    try:
        report = CheckReport(index=str(path), backend="?")
        try:
            conn = catalog.connect_read_only(catalog_path)
        except sqlite3.DatabaseError as error:
            conn, problem = None, str(error)
        else:
            problem = catalog.quick_check(conn)
            if problem is None and not conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                problem = "it holds no tables"
        if problem is not None:
            if conn is not None:
                conn.close()
            report.findings.append(_damaged_catalog(path, catalog_path, problem, repair))
            return report
        conn.row_factory = sqlite3.Row
        dim = catalog.get_meta(conn).get("model.dim")
        problem = vectors.check(conn, int(dim)) if dim else None
        if problem is not None:
            conn.close()
            report.findings.append(_damaged_catalog(path, catalog_path, problem, repair))
            return report
        report.findings.append(Finding("catalog", True, f"{catalog_path}: whole"))
        spec = _recorded_spec(conn) or BackendSpec()
        report.backend = spec.describe()
        store_problem = _store_problem(conn, spec, path)
        conn.close()
        report.findings.append(_leftovers(path, repair))
        if store_problem is None:
            report.findings.append(Finding("store", True, _in_step(spec, path)))
            return report
        finding = Finding("store", False, store_problem)
        if repair:
            os.close(lock)
            lock = None
            remove_store(spec, path)
            with Store.open_for_repair(path) as store:
                store.sync_backend()
            finding.repaired = True
            finding.message += ": rebuilt from the catalog"
        report.findings.append(finding)
        return report
    finally:
        if lock is not None:
            os.close(lock)


def _in_step(spec: BackendSpec, path: Path) -> str:
    if spec.kind == "faiss":
        return "faiss: searches the catalog's own vectors (its codes are checked on loading)"
    if store_directory(spec, path) is not None:
        return f"{spec.describe()}: in step with the catalog"
    return f"{spec.describe()}: shared by several catalogs, not compared with this one"


def _store_problem(conn: sqlite3.Connection, spec: BackendSpec, path: Path) -> str | None:
    try:
        problem = out_of_step(conn, spec, path, thorough=True)
    except StoreDamagedError as error:
        return str(error)
    if problem is None and spec.kind == "qdrant-edge" and store_directory(spec, path).exists():
        problem = _edge_counts(conn, spec, path)
    return problem


def _edge_counts(conn: sqlite3.Connection, spec: BackendSpec, path: Path) -> str | None:
    """Qdrant Edge's shards counted exactly (this loads them, under their lock)."""
    from radsearch.storage.backends import open_backend

    ledger = backend_sync.ledger_counts(conn)
    with open_backend(spec, path, vector_name=catalog.get_meta(conn).get("model.name"),
                      read_only=True) as backend:
        counts = {name: backend.count(name) for name in {*catalog.COLLECTIONS, *ledger}}
    for name in sorted(counts):
        sent, total = ledger.get(name, (0, 0))
        if not sent <= counts[name] <= total:
            return (f"the qdrant-edge store {store_directory(spec, path)} holds {counts[name]} "
                    f"points in {name}, the catalog {sent}")
    return None


def _leftovers(path: Path, repair: bool) -> Finding:
    """Temporary files of a write that did not finish (a kill, a full disk)."""
    found = sorted(p for p in path.rglob("*.tmp*") if _TEMPORARY.search(p.name) and p.is_file())
    if not found:
        return Finding("files", True, "no leftover temporary files")
    message = f"{len(found)} leftover temporary file(s), e.g. {found[0]}"
    if not repair:
        return Finding("files", False, message)
    for leftover in found:
        leftover.unlink(missing_ok=True)
    return Finding("files", False, message + ": removed", repaired=True)


def _damaged_catalog(path: Path, catalog_path: Path, problem: str, repair: bool) -> Finding:
    message = f"{catalog_path} is damaged ({problem})"
    if not repair:
        return Finding("catalog", False, message + ": `radsearch check --repair` sets it aside")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = catalog_path.with_name(f"{catalog_path.name}{DAMAGED_SUFFIX}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{catalog_path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    for name in (*_STORE_DIRS.values(), *_CACHE_DIRS):
        if (path / name).exists():
            shutil.rmtree(path / name)
    for vector_file in path.glob("vectors*.f32"):  # the rows that referenced it are set aside
        os.replace(vector_file, vector_file.with_name(f"{vector_file.name}{DAMAGED_SUFFIX}-{stamp}"))
    return Finding("catalog", False, f"{message}: set aside as {aside.name}; the next `radsearch "
                   "index` re-reads every file (give --reports again if it was used)",
                   repaired=True)


def check_error(report: CheckReport) -> RadsearchError | None:
    """One line for a report with a problem left, for a command's exit status."""
    left = [finding for finding in report.findings if not (finding.ok or finding.repaired)]
    if not left:
        return None
    return RadsearchError(f"{report.index}: {len(left)} problem(s): {left[0].message}")
