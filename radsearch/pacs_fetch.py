"""Pixels of studies indexed from a PACS, fetched when someone looks at them, and their UIDs for
links; the index keeps no UID in clear for either.

A PACS instance's key in the catalog (``dicomweb://host/path/instances/<hash>``, ``dimse://...``)
holds only a keyed hash of its SOP Instance UID, and its study's key a keyed hash of the Study
Instance UID (indexer.pacs_source). To fetch an instance, its study is found again in the PACS: the
studies of the date the index records for it are listed, and the one whose UID hashes, with the
index's key (radsearch.keys, outside the index), to the study's key is it; its instances are then
listed and matched to the catalog keys the same way. An index built with ``--keep-phi`` holds the
Study Instance UID and skips the search. The UIDs found are kept in this process's memory only.
The address of the PACS (scheme, host, path: no credentials, nothing about a patient) is recorded in
the catalog when it is indexed; credentials come from the environment as for indexing. Fetched
copies go to a bounded private cache (radsearch.pacs_cache).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from radsearch.errors import RadsearchError
from radsearch.pacs_cache import InstanceCache
from radsearch.storage import catalog
from radsearch.index_handle import resolve_index_path
from radsearch.storage.store import Store

SCHEMES = ("dicomweb://", "dimse://")
_ADDRESS = "pacs.address:"  # + a source's root -> the address it was indexed from
_INSTANCES = "/instances/"


def is_pacs_key(path: str) -> bool:
    """Whether ``path`` is the catalog key of an instance indexed from a PACS."""
    return path.startswith(SCHEMES) and _INSTANCES in path


def pacs_root(key: str) -> str:
    """The root of the source an instance key (or study folder) belongs to."""
    return key.rsplit(_INSTANCES, 1)[0].rsplit("/studies/", 1)[0]


def record_address(conn: sqlite3.Connection, root: str, address: str) -> None:
    """Note in the catalog the address the source ``root`` was indexed from (it says http or
    https, which its keys do not)."""
    with catalog.transaction(conn):
        catalog.set_meta(conn, {_ADDRESS + root: address})


class PacsFetcher:
    """One index's PACS sources, opened when first needed, and what was found in them."""

    def __init__(self, index: Path, *, attempts: int = 2, cache: InstanceCache | None = None):
        self.index = index
        self.attempts = attempts  # few: someone is waiting for the picture
        self.cache = cache if cache is not None else InstanceCache()
        self._sources: dict[str, object] = {}
        self._studies: dict[str, str | None] = {}  # study key -> its UID (None: not in the PACS)
        self._lock = threading.RLock()  # one request to a PACS at a time (a DIMSE association)

    def local_file(self, key: str) -> Path:
        """A file holding the instance ``key``: the cached copy, else one fetched now."""
        with _reading(self.index) as (store, conn):
            row = conn.execute(
                "SELECT files.sha256, studies.key AS study, studies.study_date FROM files "
                "JOIN images ON images.file_id = files.id "
                "JOIN studies ON studies.id = images.study_id WHERE files.path = ? LIMIT 1",
                (key,)).fetchone()
            if row is None:
                raise RadsearchError(f"{key}: no indexed image with that key")
            cached = self.cache.get(row["sha256"]) if row["sha256"] else None
            if cached is not None:
                return cached
            from radsearch.indexer.pacs_source import PacsUnavailable

            try:
                return self._fetch(store, conn, key, row)
            except PacsUnavailable as silent:
                raise RadsearchError(f"{key}: not fetched: {silent.root}: {silent.silence}"
                                     ) from None

    def _fetch(self, store: Store, conn: sqlite3.Connection, key: str, row) -> Path:
        with self._lock:
            source = self._source(conn, pacs_root(key))
            salt = store.salt
            if not source.knows(key):
                uid = self._study_uid(source, conn, salt, row["study"], row["study_date"])
                if uid is None:
                    raise RadsearchError(f"{key}: its study is no longer in the PACS "
                                         f"{source.root}")
                self._list_study(source, uid, salt)
            if not source.knows(key):
                raise RadsearchError(f"{key}: this instance is no longer in the PACS "
                                     f"{source.root}")
            spool = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.cache.prepare()))
            try:
                fetched = source.fetch_keys([key], spool, salt)
                if key not in fetched:
                    raise RadsearchError(f"{key}: the PACS {source.root} sent nothing for it")
                return self.cache.put(fetched[key])[1]
            finally:
                for leftover in spool.iterdir():
                    leftover.unlink()
                spool.rmdir()

    def study_uid(self, study_key: str) -> str | None:
        """The Study Instance UID of an indexed PACS study (None: not from a PACS, or not found)."""
        with _reading(self.index) as (store, conn):
            row = conn.execute(
                "SELECT files.path, studies.study_date FROM studies "
                "JOIN images ON images.study_id = studies.id "
                "JOIN files ON files.id = images.file_id "
                "WHERE studies.key = ? LIMIT 1", (study_key,)).fetchone()
            if row is None or not is_pacs_key(row["path"]):
                return None
            with self._lock:
                source = self._source(conn, pacs_root(row["path"]))
                return self._study_uid(source, conn, store.salt, study_key, row["study_date"])

    def close(self) -> None:
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()

    # --- helpers ---

    def _source(self, conn: sqlite3.Connection, root: str):
        source = self._sources.get(root)
        if source is None:
            from radsearch.indexer.pacs import open_source

            found = conn.execute("SELECT value FROM meta WHERE key = ?",
                                 (_ADDRESS + root,)).fetchone()
            address = found[0] if found else (root if root.startswith("dimse://") else None)
            if address is None:
                raise RadsearchError(f"{root}: the index does not record this PACS's address: run "
                                     "`radsearch index` from it once more, so that it does")
            source = open_source(address, concurrency=4, attempts=self.attempts, backoff_s=0.5)
            self._sources[root] = source
        return source

    def _study_uid(self, source, conn: sqlite3.Connection, salt: str, study_key: str,
                   study_date: str | None) -> str | None:
        if study_key in self._studies:
            return self._studies[study_key]
        uid = kept_study_uid(conn, study_key)  # a --keep-phi index holds it
        if uid is None:
            uid = source.locate_study(study_key, salt, study_date)
            if uid is None and study_date is not None:  # the PACS's date may differ from the file's
                uid = source.locate_study(study_key, salt, None)
        self._studies[study_key] = uid
        return uid

    @staticmethod
    def _list_study(source, uid: str, salt: str) -> None:
        from radsearch.indexer.pacs_source import PacsQuery

        source.found_files(source.list_instances(PacsQuery(studies=(uid,))), salt)


@contextmanager
def _reading(index: Path) -> Iterator[tuple[Store, sqlite3.Connection]]:
    """The index opened for reading, with one consistent snapshot of its catalog."""
    with Store.open_for_reading(index) as store, store.snapshot() as conn:
        yield store, conn


def kept_study_uid(conn: sqlite3.Connection, study_key: str) -> str | None:
    """The Study Instance UID a --keep-phi index holds for a study (None in any other index)."""
    row = conn.execute("SELECT attributes FROM identifiers WHERE study = ? LIMIT 1",
                       (study_key,)).fetchone()
    return json.loads(row[0]).get("StudyInstanceUID") if row else None


_fetchers: dict[str, PacsFetcher] = {}
_fetchers_lock = threading.Lock()


def fetcher(index: Path | None = None) -> PacsFetcher:
    """This process's fetcher for ``index`` (the default index if None): what it found in the PACS
    is kept between calls, so a viewer paging through a series lists its study once."""
    path = str(resolve_index_path(index))
    with _fetchers_lock:
        if path not in _fetchers:
            _fetchers[path] = PacsFetcher(Path(path))
        return _fetchers[path]


def local_path(path: str, index: Path | None = None) -> str:
    """``path`` itself, or for a PACS instance's key, a local copy of the instance (fetched from
    its PACS when the cache lacks it). One-line RadsearchError if it cannot be had."""
    if not is_pacs_key(path):
        return path
    return str(fetcher(index).local_file(path))


def forget_fetchers() -> None:
    """Close every PACS connection this process holds and forget the UIDs found in them (they are
    found again when next needed)."""
    with _fetchers_lock:
        for held in _fetchers.values():
            held.close()
        _fetchers.clear()
