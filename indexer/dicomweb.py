"""A PACS as a source of files to index, over DICOMweb: QIDO-RS lists the instances, WADO-RS fetches
them one at a time into a small spool folder that the read stage empties as it reads.

An instance's key in the catalog is ``dicomweb://host/path/instances/<keyed hash of its SOP
Instance UID>``: like a file's path it identifies it across runs (a second run fetches only what is
new), yet it holds no UID in clear. Credentials come from the environment only
(``RADSEARCH_DICOMWEB_TOKEN``, else ``RADSEARCH_DICOMWEB_USER`` and ``RADSEARCH_DICOMWEB_PASSWORD``)
and are never written or printed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from radsearch.errors import RadsearchError
from radsearch.indexer.discover import FoundFile
from radsearch.indexer.worker import ReadOutcome, ReadTask
from radsearch.reading.phi import salted_hash

SCHEMES = ("dicomweb+https", "dicomweb+http")
# Answers worth asking again after a pause: the server is busy, or failed for a moment.
_RETRIABLE = {408, 429, 500, 502, 503, 504}
_REFUSED = {401, 403}
_PAGE = 500  # QIDO-RS results asked for at a time
T = TypeVar("T")


class PacsUnavailable(RadsearchError):
    """The PACS stopped answering: what was fetched is kept, the next run goes on from there."""


def is_dicomweb(source: str) -> bool:
    return source.split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True)
class PacsQuery:
    """Which studies to index: all of them, or those matching every condition given."""

    since: date | None = None  # study date on or after
    modality: str | None = None  # only series of this modality (e.g. CT)
    studies: tuple[str, ...] = ()  # these Study Instance UIDs only

    @property
    def filtered(self) -> bool:
        return self.since is not None or self.modality is not None or bool(self.studies)


@dataclass(frozen=True)
class RemoteInstance:
    study: str
    series: str
    sop: str


class DicomwebSource:
    """One DICOMweb service: ``dicomweb+https://host[:port]/path`` (``dicomweb+http`` for a server on
    this machine or a trusted network)."""

    def __init__(self, address: str, *, concurrency: int = 4, attempts: int = 5,
                 backoff_s: float = 0.5, timeout_s: float = 60.0):
        import requests
        from dicomweb_client.api import DICOMwebClient

        parts = urlsplit(address)
        if parts.scheme.lower() not in SCHEMES or not parts.hostname:
            raise RadsearchError(f"{address}: a DICOMweb source reads dicomweb+https://host/path")
        if parts.username or parts.password:
            raise RadsearchError("a DICOMweb address must not hold credentials: set "
                                 "RADSEARCH_DICOMWEB_USER and RADSEARCH_DICOMWEB_PASSWORD (or "
                                 "RADSEARCH_DICOMWEB_TOKEN) instead")
        host = parts.netloc
        path = parts.path.rstrip("/")
        self.root = f"dicomweb://{host}{path}"  # the catalog keys of its instances begin with it
        self.concurrency = max(1, concurrency)
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        session = requests.Session()
        session.auth = _credentials()
        self._requests = requests
        self._client = DICOMwebClient(f"{parts.scheme.split('+', 1)[1]}://{host}{path}",
                                      session=session, timeout=timeout_s)
        self._client.set_http_retry_params(retry=False)  # retried here, for every failure kind
        self._instances: dict[str, RemoteInstance] = {}

    # --- QIDO-RS ---

    def list_instances(self, query: PacsQuery) -> list[RemoteInstance]:
        """Every instance of the studies ``query`` matches; raises RadsearchError, in one line,
        when the server refuses or the query matches nothing."""
        studies = self._studies(query)
        if not studies:
            raise RadsearchError(f"{self.root}: no study matches {_describe(query)}: nothing to index")
        found: list[RemoteInstance] = []
        for study in studies:
            filters = {"Modality": query.modality} if query.modality else {}
            for series in self._pages(lambda offset, limit: self._client.search_for_series(
                    study_instance_uid=study, search_filters=filters, offset=offset, limit=limit)):
                series_uid = _uid(series, "0020000E")
                if series_uid is None:
                    continue
                for instance in self._pages(lambda offset, limit: self._client.search_for_instances(
                        study_instance_uid=study, series_instance_uid=series_uid, offset=offset,
                        limit=limit)):
                    sop = _uid(instance, "00080018")
                    if sop is not None:
                        found.append(RemoteInstance(study, series_uid, sop))
        if not found:
            raise RadsearchError(f"{self.root}: the studies matching {_describe(query)} hold no "
                                 "instance to index")
        return found

    def _studies(self, query: PacsQuery) -> list[str]:
        filters: dict[str, str] = {}
        if query.since is not None:
            filters["StudyDate"] = query.since.strftime("%Y%m%d") + "-"
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        uids: list[str] = []
        for wanted in query.studies or (None,):
            asked = dict(filters, **({"StudyInstanceUID": wanted} if wanted else {}))
            for study in self._pages(lambda offset, limit: self._client.search_for_studies(
                    search_filters=asked, offset=offset, limit=limit)):
                uid = _uid(study, "0020000D")
                if uid is not None and uid not in uids:
                    uids.append(uid)
        return uids

    def _pages(self, search: Callable[[int, int], list[dict]]) -> Iterator[dict]:
        offset = 0
        while True:
            page = self._call(lambda: search(offset, _PAGE), "search")
            yield from page
            if len(page) < _PAGE:
                return
            offset += len(page)

    # --- the catalog's view ---

    def found_files(self, instances: Iterable[RemoteInstance], salt: str) -> list[FoundFile]:
        """The instances as found files, keyed by hashes of their UIDs (no UID in clear)."""
        found = []
        for instance in instances:
            path = f"{self.root}/instances/{salted_hash(instance.sop, salt)}"
            folder = f"{self.root}/studies/{salted_hash(instance.study, salt)}"
            self._instances[path] = instance
            found.append(FoundFile(path, folder, 0, 0, "dicom"))
        found.sort(key=lambda item: item.path)
        return found

    # --- WADO-RS ---

    @staticmethod
    @contextmanager
    def spool() -> Iterator[Path]:
        """A folder for fetched copies: each is deleted when read, the folder (with the copies
        of a stopped run, fetched but never read) when the block ends."""
        folder = Path(tempfile.mkdtemp(prefix="radsearch-spool-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def fetch(self, tasks: Iterable[ReadTask], spool: Path,
              failures: list[ReadOutcome]) -> Iterator[ReadTask]:
        """Each task with ``read_path`` set to a copy of its instance fetched into ``spool``, in
        order, with at most ``concurrency`` requests at a time. An instance the server no longer
        has is added to ``failures``; a server that stops answering raises PacsUnavailable."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                  thread_name_prefix="radsearch-wado")
        try:
            pending: list[tuple[ReadTask, Future]] = []
            queue = iter(tasks)
            while True:
                while len(pending) < self.concurrency:
                    task = next(queue, None)
                    if task is None:
                        break
                    pending.append((task, pool.submit(self._fetch_one, task.path, spool)))
                if not pending:
                    return
                task, future = pending.pop(0)
                copy, reason = future.result()
                if copy is None:
                    failures.append(ReadOutcome(task.path, "failed", reason=reason))
                else:
                    yield replace(task, read_path=copy)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_one(self, key: str, spool: Path) -> tuple[str | None, str | None]:
        instance = self._instances[key]
        try:
            dataset = self._call(lambda: self._client.retrieve_instance(
                instance.study, instance.series, instance.sop), "fetch", missing_ok=True)
        except _Missing:
            return None, "no longer in the PACS (404)"
        fd, name = tempfile.mkstemp(dir=spool, suffix=".dcm")
        os.close(fd)
        dataset.save_as(name, enforce_file_format=True)
        return name, None

    # --- politeness ---

    def _call(self, request: Callable[[], T], what: str, *, missing_ok: bool = False) -> T:
        """``request``, asked again with growing pauses while the server is busy or unreachable."""
        requests = self._requests
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return request()
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else 0
                reason = error.response.reason if error.response is not None else ""
                if status in _REFUSED:
                    raise RadsearchError(
                        f"{self.root}: the server refused the {what} ({status} {reason}): set "
                        "RADSEARCH_DICOMWEB_USER and RADSEARCH_DICOMWEB_PASSWORD, or "
                        "RADSEARCH_DICOMWEB_TOKEN, to an account it accepts") from None
                if status == 404 and missing_ok:
                    raise _Missing() from None
                if status not in _RETRIABLE:
                    raise RadsearchError(
                        f"{self.root}: the server answered the {what} with {status} {reason}"
                    ) from None
                last = f"{status} {reason}"
            except (requests.ConnectionError, requests.Timeout) as error:
                last = _short(error)
        then = ("what was fetched is indexed; run again to go on" if what == "fetch"
                else "nothing was indexed")
        raise PacsUnavailable(
            f"{self.root}: no answer to a {what} after {self.attempts} tries ({last}): {then}")


class _Missing(Exception):
    """The instance listed is no longer on the server."""


def _credentials():
    from requests.auth import AuthBase

    token = os.environ.get("RADSEARCH_DICOMWEB_TOKEN")
    user = os.environ.get("RADSEARCH_DICOMWEB_USER")
    if token:
        class Bearer(AuthBase):
            def __call__(self, request):
                request.headers["Authorization"] = f"Bearer {token}"
                return request

            def __repr__(self) -> str:  # never the token itself
                return "Bearer(***)"

        return Bearer()
    if user:
        return (user, os.environ.get("RADSEARCH_DICOMWEB_PASSWORD", ""))
    return None


def _uid(record: dict, tag: str) -> str | None:
    values = record.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _describe(query: PacsQuery) -> str:
    if not query.filtered:
        return "the whole archive"
    parts = []
    if query.since is not None:
        parts.append(f"--since {query.since.isoformat()}")
    if query.modality:
        parts.append(f"--modality {query.modality}")
    if query.studies:
        parts.append(f"{len(query.studies)} --study UID(s)")
    return " ".join(parts)


def _short(error: Exception) -> str:
    """A connection error in a few words (requests nests the cause several levels deep)."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match[1].strip()
    return type(error).__name__
