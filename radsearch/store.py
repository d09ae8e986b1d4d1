"""An index directory: the SQLite catalog, the FAISS collections and the model record.

Layout::

    INDEX/catalog.sqlite        catalog (WAL mode) - the source of truth
    INDEX/vectors/NAME.faiss    one FAISS cache per collection
    INDEX/write.lock            held by the one run that writes
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from radsearch import catalog
from radsearch.errors import IndexNotFoundError, ModelMismatchError, RadsearchError
from radsearch.vectors import VectorCollection

CATALOG_FILE = "catalog.sqlite"
VECTORS_DIR = "vectors"
LOCK_FILE = "write.lock"


def default_index_path() -> Path:
    """``$RADSEARCH_INDEX``, else ``~/.radsearch/index``."""
    configured = os.environ.get("RADSEARCH_INDEX")
    return Path(configured).expanduser() if configured else Path.home() / ".radsearch" / "index"


def model_record(describe: dict) -> dict[str, str]:
    """The meta entries that identify the embedding model of an index."""
    return {
        "model.name": str(describe["name"]),
        "model.weights_hash": str(describe["weights_hash"]),
        "model.dim": str(describe["dim"]),
        "model.preprocessing": json.dumps(describe["preprocessing"], sort_keys=True),
    }


class Store:
    """An open index directory. Use :meth:`open_for_writing` or :meth:`open_for_reading`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: IO | None):
        self.path = path
        self.conn = conn
        self._lock = lock
        self._collections: dict[str, VectorCollection] = {}
        self._seen_version: int | None = None

    @classmethod
    def open_for_writing(cls, path: Path, describe: dict) -> Store:
        """Create or open an index to add embeddings of the model ``describe`` (Encoder.describe())."""
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / LOCK_FILE, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RadsearchError(f"{path}: another radsearch run is writing to this index") from None
        conn = catalog.connect(path / CATALOG_FILE)
        store = cls(path, conn, lock)
        try:
            store._claim_model(model_record(describe))
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, path: Path) -> Store:
        if not (path / CATALOG_FILE).exists():
            raise IndexNotFoundError(f"{path}: no radsearch index here (run `radsearch index` first)")
        return cls(path, catalog.connect(path / CATALOG_FILE, readonly=True), None)

    def _claim_model(self, record: dict[str, str]) -> None:
        with catalog.transaction(self.conn):
            meta = catalog.get_meta(self.conn)
            if "model.name" not in meta:
                catalog.set_meta(self.conn, {**record, "salt": secrets.token_hex(16)})
                return
        for key in ("model.name", "model.weights_hash", "model.dim"):
            if meta[key] != record[key]:
                raise ModelMismatchError(
                    f"{self.path}: index holds embeddings of model {meta['model.name']} "
                    f"(weights {meta['model.weights_hash'][:12]}); refusing to add embeddings of "
                    f"{record['model.name']} (weights {record['model.weights_hash'][:12]}): "
                    "use another --index"
                )

    @property
    def meta(self) -> dict[str, str]:
        return catalog.get_meta(self.conn)

    @property
    def salt(self) -> str:
        return self.meta["salt"]

    @property
    def model_name(self) -> str:
        return self.meta["model.name"]

    @property
    def dim(self) -> int:
        return int(self.meta["model.dim"])

    def check_model(self, describe: dict) -> None:
        """Refuse to query with a model whose weights differ from the index's."""
        meta = self.meta
        if describe["weights_hash"] != meta["model.weights_hash"]:
            raise ModelMismatchError(
                f"{self.path}: index was built with {meta['model.name']} weights "
                f"{meta['model.weights_hash'][:12]}, but the loaded model has "
                f"{describe['weights_hash'][:12]}"
            )

    def collection(self, name: str) -> VectorCollection:
        """The FAISS collection ``name``, loaded and reconciled with the catalog on first use."""
        if name not in self._collections:
            self._collections[name] = VectorCollection.load(
                self.conn, name, self.dim, self.path / VECTORS_DIR
            )
        return self._collections[name]

    def refresh_collections(self) -> None:
        """Reconcile loaded collections, unless no other connection committed since the last time."""
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        if version == self._seen_version:
            return
        for collection in self._collections.values():
            collection.reconcile(self.conn)
        self._seen_version = version

    def save_collections(self) -> None:
        """Bring every collection in step with the catalog and write it atomically."""
        for name in catalog.COLLECTIONS:
            collection = self.collection(name)
            collection.reconcile(self.conn)
            collection.save()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of the catalog and the collections, even while a run writes."""
        with catalog.transaction(self.conn, write=False):
            self.refresh_collections()
            yield self.conn

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
