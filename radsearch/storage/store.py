"""An index directory: the SQLite catalog, the model record and the search back end.

Layout::

    INDEX/catalog.sqlite      catalog (WAL mode) - the source of truth, with the back-end ledger
    INDEX/vectors.f32         every vector, once, at full precision (``vectors.py``)
    INDEX/faiss/              the faiss back end's saved codes (IVF-SQ8 above 50k vectors): it
                              searches the catalog's own vectors and rows (``catalog_backend``)
    INDEX/qdrant-edge/        the qdrant-edge back end: one Edge shard per collection

The one run that writes holds an OS lock (flock) on the index folder itself for its whole length,
so no file that could be deleted stands for it.

The back end is recorded in the catalog (meta ``backend``) when an index is first written, so later
commands use it without being told. Every store keeps its own record (model, salt, instance id):
machines writing one Qdrant cluster adopt the hash key of whichever came first (the key itself is
kept outside the index and the cluster: ``radsearch.keys``), so their study keys agree, and a
machine with no catalog of its own can search the cluster from that record alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from radsearch import health, keys

from radsearch.storage import catalog, vectors
from radsearch.storage.backends import FAISS_DIR, Backend, BackendSpec, open_backend
from radsearch.storage import sync as backend_sync
from radsearch.storage.backends.base import StoreDamagedError, StoreUnopenableError
from radsearch.errors import (
    IndexNotFoundError,
    IndexOutOfStepWarning,
    ModelMismatchError,
    RadsearchError,
    StoreUnavailableWarning,
)
from radsearch.reading.prepare import (
    CtWindow,
    ct_windows_from_record,
    ct_windows_record,
    describe_ct_windows,
)

CATALOG_FILE = "catalog.sqlite"
_MODEL_KEYS = ("model.name", "model.weights_hash", "model.dim")
# How CT is rendered for the model (``--ct-windows``); fixed when the index is created.
CT_WINDOWS_KEY = "preprocessing.ct_windows"


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
    """An open index. Use :meth:`open_for_writing` or :meth:`open_for_reading`."""

    def __init__(self, path: Path, conn: sqlite3.Connection | None, lock: int | None,
                 spec: BackendSpec, record: dict | None = None):
        self.path = path
        self.conn = conn
        self.spec = spec
        self._lock = lock
        self._record = record  # the back end's record, for a reader without a catalog
        self._backend: Backend | None = None
        self.switched_from: BackendSpec | None = None
        self.repairs: list[str] = []  # one line for each part rebuilt on opening (a writer)

    @classmethod
    def open_for_writing(cls, path: Path, describe: dict, backend: BackendSpec | None = None,
                         shard: str | None = None,
                         ct_windows: Sequence[CtWindow] | None = None,
                         keep_phi: bool = False) -> Store:
        """Create or open an index to add embeddings of the model ``describe`` (Encoder.describe()),
        kept in ``backend`` (default: the one recorded, else faiss) as shard ``shard`` ("i/n"),
        CT rendered in ``ct_windows`` (``()``: grayscale; None: the index's recorded choice),
        keeping patient identifiers in the catalog when ``keep_phi`` (see catalog.claim_phi)."""
        path.mkdir(parents=True, exist_ok=True)
        _refuse_read_only(path)

        def claim(store: Store) -> None:
            problem = catalog.quick_check(store.conn)
            if problem is not None:
                raise catalog.damaged(path / CATALOG_FILE, problem)
            store._claim_model(model_record(describe))
            problem = vectors.check(store.conn, store.dim)
            if problem is not None:
                raise vectors.VectorFileError(problem)
            store._claim_ct_windows(ct_windows)
            store._claim_shard(shard)
            catalog.claim_phi(store.conn, keep_phi, path)
            store._claim_backend(backend)
            store._rebuild_store_out_of_step()
            store._bind_backend()

        return cls._open_locked(path, lambda conn: BackendSpec(), claim)

    @classmethod
    def open_for_repair(cls, path: Path) -> Store:
        """Open an index to bring its back end in step with its catalog (``health.check_index``):
        the writer's lock and checks, with no model to claim."""
        def mend(store: Store) -> None:
            store._rebuild_store_out_of_step()
            store._bind_backend()

        return cls._open_locked(path, lambda conn: _recorded_spec(conn) or BackendSpec(), mend)

    @classmethod
    def _open_locked(cls, path: Path, spec_of: Callable[[sqlite3.Connection], BackendSpec],
                     prepare: Callable[[Store], None]) -> Store:
        """The writer's way in: the folder's lock, the catalog, then ``prepare``; whatever fails
        on the way releases what was taken."""
        lock = _lock_folder(path)
        try:
            conn = catalog.connect(path / CATALOG_FILE)
        except BaseException:
            os.close(lock)
            raise
        store = cls(path, conn, lock, spec_of(conn))
        try:
            vectors.remove_stale(conn)
            prepare(store)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, path: Path, backend: BackendSpec | None = None) -> Store:
        """Open an index to search it: its catalog and recorded back end (or ``backend``). With no
        catalog at ``path``, a Qdrant ``backend`` alone is searched from its own record."""
        if (path / CATALOG_FILE).exists():
            conn = catalog.connect(path / CATALOG_FILE, readonly=True)
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                conn.close()  # a first run stopped before its first commit (a full disk)
                raise IndexNotFoundError(f"{path}: no radsearch index here yet (run `radsearch "
                                         "index` first)")
            dim = catalog.get_meta(conn).get("model.dim")
            problem = vectors.check(conn, int(dim)) if dim else None
            if problem is not None:
                conn.close()
                raise vectors.VectorFileError(problem)
            recorded = _recorded_spec(conn) or BackendSpec()
            if backend is not None and (backend.kind, backend.url) != (recorded.kind, recorded.url):
                conn.close()
                raise RadsearchError(
                    f"{path}: this index uses {recorded.describe()}, not {backend.describe()} "
                    "(another store is searched with an --index that holds no index)")
            store = cls(path, conn, None, recorded)
            try:
                store._warn_out_of_step()
            except BaseException:
                store.close()
                raise
            return store
        if backend is not None and backend.kind == "qdrant":
            store = cls(path, None, None, backend)
            record = store.backend.metadata()
            if not record:
                store.close()
                raise IndexNotFoundError(f"{backend.describe()}: no radsearch index there")
            store._record = record
            return store
        raise IndexNotFoundError(f"{path}: no radsearch index here (run `radsearch index` first)")

    # -- claims made by the one writer --------------------------------------------------------
    def _claim_model(self, record: dict[str, str]) -> None:
        with catalog.transaction(self.conn):
            meta = catalog.get_meta(self.conn)
            if "model.name" not in meta:
                catalog.set_meta(self.conn, {**record, **keys.create_key()})
                return
        self._move_key_out()
        for key in _MODEL_KEYS:
            if meta[key] != record[key]:
                raise ModelMismatchError(
                    f"{self.path}: index holds embeddings of model {meta['model.name']} "
                    f"(weights {meta['model.weights_hash'][:12]}); refusing to add embeddings of "
                    f"{record['model.name']} (weights {record['model.weights_hash'][:12]}): "
                    "use another --index"
                )

    def _move_key_out(self) -> None:
        """An index made when the hash key (its salt) was kept in the catalog: the key moves to a
        key file and its value is overwritten in the catalog (see ``radsearch.keys``)."""
        entries = keys.move_legacy_salt(catalog.get_meta(self.conn))
        if entries is None:
            return
        self.conn.execute("PRAGMA secure_delete = ON")  # zero the old value, do not free it
        with catalog.transaction(self.conn):
            catalog.set_meta(self.conn, entries)
            self.conn.execute("DELETE FROM meta WHERE key = ?", (keys.LEGACY_SALT,))
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor keep it in the log

    def _claim_ct_windows(self, requested: Sequence[CtWindow] | None) -> None:
        """Record the CT rendering of a new index; refuse another one for an index that has one
        (its embeddings and new ones would not be comparable). An index made before the choice was
        recorded holds grayscale embeddings, unless it holds no files yet."""
        with catalog.transaction(self.conn):
            recorded = catalog.get_meta(self.conn).get(CT_WINDOWS_KEY)
            if recorded is None:
                fresh = requested is not None and not self._holds_files()
                recorded = ct_windows_record(requested if fresh else ())
                catalog.set_meta(self.conn, {CT_WINDOWS_KEY: recorded})
        if requested is not None and ct_windows_record(requested) != recorded:
            raise RadsearchError(
                f"{self.path}: this index renders CT as "
                f"{describe_ct_windows(ct_windows_from_record(recorded))}, not "
                f"{describe_ct_windows(requested)}: the embeddings would not be comparable; "
                "leave out --ct-windows to use the index's choice, or use another --index")

    def _claim_shard(self, shard: str | None) -> None:
        with catalog.transaction(self.conn):
            meta = catalog.get_meta(self.conn)
            recorded = meta.get("shard")
            if recorded == shard:
                return
            if recorded is None and shard is not None and not self._holds_files():
                catalog.set_meta(self.conn, {"shard": shard})
                return
        if recorded is None:
            raise RadsearchError(f"{self.path}: this index was built without --shard: "
                                 "index shard runs into fresh --index directories")
        raise RadsearchError(f"{self.path}: this index is shard {recorded}: run it with "
                             f"--shard {recorded}, or use another --index")

    def _holds_files(self) -> bool:
        return self.conn.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None

    def _claim_backend(self, requested: BackendSpec | None) -> None:
        recorded = _recorded_spec(self.conn)
        if requested is None:
            spec = recorded or BackendSpec()
        elif recorded is not None and (requested.kind, requested.url) == (recorded.kind, recorded.url):
            spec = BackendSpec(recorded.kind, recorded.url,
                               {**recorded.options, **requested.options})
        else:
            spec = requested
            if recorded is not None:
                self.switched_from = recorded  # the ledger rebinds: everything is sent again
        with catalog.transaction(self.conn):
            catalog.set_meta(self.conn, {"backend": json.dumps(spec.to_record(), sort_keys=True)})
        self.spec = spec

    def _bind_backend(self) -> None:
        """Agree with the back end's record (model, hash key) and tie the ledger to this store."""
        meta = self.meta
        mine = {key: meta[key]
                for key in (*_MODEL_KEYS, keys.KEY_ID, keys.KEY_CHECK, CT_WINDOWS_KEY)}
        record = self.backend.initialise({**mine, "instance": str(uuid.uuid4())})
        for key in _MODEL_KEYS:
            if record.get(key) != mine[key]:
                raise ModelMismatchError(
                    f"{self.spec.describe()} holds embeddings of model {record.get('model.name')} "
                    f"(weights {str(record.get('model.weights_hash'))[:12]}), not {mine['model.name']}"
                )
        theirs = record.get(CT_WINDOWS_KEY, ct_windows_record(()))  # older records: grayscale
        if theirs != mine[CT_WINDOWS_KEY]:
            raise RadsearchError(
                f"{self.spec.describe()} renders CT as "
                f"{describe_ct_windows(ct_windows_from_record(theirs))}, not "
                f"{describe_ct_windows(self.ct_windows)}: use the same --ct-windows on every machine")
        self._agree_on_key(record, mine)
        if self.spec.kind == "faiss":
            backend_sync.drop_ledger(self.conn)  # it searches the catalog: nothing is sent
        else:
            backend_sync.bind(self.conn, record["instance"])
        self._release_exclusive()

    # -- the back end in step with the catalog ------------------------------------------------
    def _rebuild_store_out_of_step(self) -> None:
        """A writer's check: an embedded store that is damaged, missing or not the catalog's
        (an older copy put back, a collection deleted) is removed, so that binding makes a new
        one and the sync sends it every point again."""
        try:
            problem = health.out_of_step(self.conn, self.spec, self.path, thorough=True)
        except StoreDamagedError as error:
            problem = str(error)
        if problem is None:
            return
        health.remove_store(self.spec, self.path)
        self.repairs.append(f"{problem}: rebuilt it from the catalog")

    def _warn_out_of_step(self) -> None:
        """A reader's cheap check (no lock, no full read): one warning line when the store
        disagrees with the catalog; a damaged store is an error (it cannot answer)."""
        if "backend" not in self.meta:
            return  # an index from before back ends: the back end asks for one index run
        try:
            problem = health.out_of_step(self.conn, self.spec, self.path)
        except StoreDamagedError as error:
            raise StoreDamagedError(f"{error}: `radsearch index` or `radsearch check --repair` "
                                    "rebuilds it from the catalog") from None
        if problem is not None:
            warnings.warn(f"{problem}: results may be missing or stale until `radsearch index` "
                          "or `radsearch check --repair` brings it back in step",
                          IndexOutOfStepWarning, stacklevel=3)

    def _agree_on_key(self, record: dict, mine: dict[str, str]) -> None:
        """Hash with the key of the back end's record: a store written by several machines
        (a Qdrant cluster) has one key, that of the first; a record that still holds the key
        itself (an older radsearch's salt) loses it to a key file."""
        legacy = record.get(keys.LEGACY_SALT)
        theirs = keys.check_value(legacy) if legacy else record.get(keys.KEY_CHECK)
        if theirs != mine[keys.KEY_CHECK]:
            if self._holds_files():
                raise RadsearchError(
                    f"{self.path}: this index's study keys are hashed with another key than "
                    f"{self.spec.describe()}'s: index into a fresh --index directory")
            entries = keys.move_legacy_salt(record) if legacy else {
                keys.KEY_ID: record[keys.KEY_ID], keys.KEY_CHECK: record[keys.KEY_CHECK]}
            keys.discard_key_file(self.meta)  # this new index's own key, which hashed nothing
            with catalog.transaction(self.conn):
                catalog.set_meta(self.conn, entries)  # the store's key wins
            mine = {**mine, **entries}
            keys.hash_key(self.meta, self.spec.describe())  # here, or one line saying to copy it
        if legacy:
            self.backend.update_record({keys.LEGACY_SALT: None, keys.KEY_ID: mine[keys.KEY_ID],
                                        keys.KEY_CHECK: mine[keys.KEY_CHECK]})

    # -- the back end -------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The search back end, opened on first use (read-only for a reader)."""
        if self._backend is None:
            name = self.meta["model.name"] if self.conn is not None or self._record else None
            if self.spec.kind == "faiss" and self.conn is not None:
                from radsearch.storage.backends.catalog_backend import CatalogBackend

                self._backend = CatalogBackend(self.conn, self.path / FAISS_DIR, self.dim,
                                               read_only=self._lock is None,
                                               options=dict(self.spec.options))
                return self._backend
            try:
                self._backend = open_backend(self.spec, self.path, vector_name=name,
                                             read_only=self._lock is None)
            except StoreUnopenableError as error:
                if self._lock is not None or self.conn is None:
                    raise
                self._backend = self._catalog_stand_in(error)
        return self._backend

    def _catalog_stand_in(self, error: StoreUnopenableError) -> Backend:
        """A reader whose store cannot be opened on this disk answers from the catalog, which
        holds every vector and payload the store was sent: the same results, by exact search."""
        from radsearch.storage.backends.catalog_backend import CatalogBackend

        warnings.warn(f"{error}; meanwhile answering from the catalog (exact search over its "
                      "vectors, slower on a large index)", StoreUnavailableWarning, stacklevel=4)
        return CatalogBackend(self.conn, None, self.dim, options={"faiss_index": "flat"})

    def _release_exclusive(self) -> None:
        """A store that admits one process at a time is held only while used."""
        if self._backend is not None and self._backend.exclusive:
            self._backend.close()
            self._backend = None

    def sync_backend(self, collections: tuple[str, ...] = catalog.COLLECTIONS) -> dict:
        """Bring the back end in step with the catalog (see ``backends.sync``) and persist it;
        the faiss back end, which searches the catalog itself, only brings its codes up to date
        (after the vector file is compacted, when deletions left it mostly dead)."""
        if self.spec.kind == "faiss":
            vectors.compact(self.conn, self.dim)
            return {name: backend_sync.SyncCounts(sent=added, deleted=removed)
                    for name, (added, removed) in self.backend.catch_up(collections).items()}
        try:
            return backend_sync.sync(self.conn, self.backend, self.dim, collections)
        finally:
            self._release_exclusive()

    # -- the record ---------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, str]:
        if self.conn is None:
            return dict(self._record or {})
        return catalog.get_meta(self.conn)

    @property
    def salt(self) -> str:
        """The secret that keys this index's identifier hashes, read from outside the index
        (``radsearch.keys``); raises HashKeyError, in one line, when it is not on this machine."""
        return keys.hash_key(self.meta, str(self.path) if self.conn is not None
                             else self.spec.describe())

    @property
    def model_name(self) -> str:
        return self.meta["model.name"]

    @property
    def dim(self) -> int:
        return int(self.meta["model.dim"])

    @property
    def ct_windows(self) -> tuple[CtWindow, ...]:
        """The Hounsfield windows CT is rendered in for this index's model (empty: grayscale)."""
        return ct_windows_from_record(self.meta.get(CT_WINDOWS_KEY))

    def check_model(self, describe: dict) -> None:
        """Refuse to query with a model whose weights differ from the index's."""
        meta = self.meta
        if describe["weights_hash"] != meta["model.weights_hash"]:
            raise ModelMismatchError(
                f"{self.path}: index was built with {meta['model.name']} weights "
                f"{meta['model.weights_hash'][:12]}, but the loaded model has "
                f"{describe['weights_hash'][:12]}"
            )

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of the catalog, even while a run writes."""
        if self.conn is None:
            raise IndexNotFoundError(
                f"{self.path}: no catalog here; only searches run against {self.spec.describe()} "
                "from a machine that did not index it")
        with catalog.transaction(self.conn, write=False):
            yield self.conn

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self.conn is not None:
            vectors.vector_file(self.conn).close()
            self.conn.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock_folder(path: Path) -> int:
    """An exclusive flock on the index folder, held until the descriptor is closed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RadsearchError(f"{path}: another radsearch run is writing to this index") from None
    return fd


def _refuse_read_only(path: Path) -> None:
    """One line for an index this process cannot write (a read-only mount or permissions)."""
    targets = [path] + [p for p in (path / CATALOG_FILE,) if p.exists()]
    if all(os.access(target, os.W_OK) for target in targets):
        return
    raise RadsearchError(f"{path}: the index is read-only: searches and `show` work; "
                         "`radsearch index` needs write access to it")


def _recorded_spec(conn: sqlite3.Connection) -> BackendSpec | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'backend'").fetchone()
    return BackendSpec.from_record(json.loads(row[0])) if row else None
