"""What every PACS source shares (indexer.dicomweb, indexer.dimse): the query, the instances it
lists, their keys in the catalog, and fetching them into a spool folder that the read stage empties.

An instance's key in the catalog is ``<root>/instances/<keyed hash of its SOP Instance UID>``:
like a file's path it identifies it across runs (a second run fetches only what is new), yet it holds no
UID in clear.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from radsearch.errors import RadsearchError
from radsearch.indexer.discover import FoundFile
from radsearch.indexer.worker import ReadOutcome, ReadTask
from radsearch.reading.phi import salted_hash


class PacsUnavailable(RadsearchError):
    """The PACS stopped answering: what was fetched is kept, the next run goes on from there."""


class InstanceMissing(Exception):
    """An instance listed is no longer on the server."""


@dataclass(frozen=True)
class PacsQuery:
    """Which studies to index: all of them, or those matching every condition given."""

    since: date | None = None  # study date on or after
    modality: str | None = None  # only series of this modality (e.g. CT)
    studies: tuple[str, ...] = ()  # these Study Instance UIDs only

    @property
    def filtered(self) -> bool:
        return self.since is not None or self.modality is not None or bool(self.studies)

    def describe(self) -> str:
        if not self.filtered:
            return "the whole archive"
        parts = []
        if self.since is not None:
            parts.append(f"--since {self.since.isoformat()}")
        if self.modality:
            parts.append(f"--modality {self.modality}")
        if self.studies:
            parts.append(f"{len(self.studies)} --study UID(s)")
        return " ".join(parts)


@dataclass(frozen=True)
class RemoteInstance:
    study: str
    series: str
    sop: str
    sop_class: str | None = None


class PacsSource:
    """A PACS that lists instances (``list_instances``) and fetches one into a file
    (``fetch_instance``, or ``fetch`` for a source that fetches in batches); the subclass says
    how."""

    root: str  # the catalog keys of its instances begin with it
    concurrency: int = 1  # fetches in flight at a time

    def __init__(self) -> None:
        self._instances: dict[str, RemoteInstance] = {}

    def list_instances(self, query: PacsQuery) -> list[RemoteInstance]:
        """Every instance of the studies ``query`` matches; raises RadsearchError, in one line,
        when the server refuses or the query matches nothing."""
        raise NotImplementedError

    def fetch_instance(self, instance: RemoteInstance, target: Path) -> None:
        """Write ``instance`` to ``target``; raises InstanceMissing or PacsUnavailable."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the connection to the PACS, if one is held."""

    def nothing_matches(self, query: PacsQuery) -> RadsearchError:
        return RadsearchError(f"{self.root}: no study matches {query.describe()}: nothing to index")

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
        order, with at most ``concurrency`` fetches at a time. An instance the server no longer
        has is added to ``failures``; a server that stops answering raises PacsUnavailable."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                  thread_name_prefix="radsearch-fetch")
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
        fd, name = tempfile.mkstemp(dir=spool, suffix=".dcm")
        os.close(fd)
        target = Path(name)
        try:
            self.fetch_instance(self._instances[key], target)
        except InstanceMissing as missing:
            target.unlink(missing_ok=True)
            return None, f"no longer in the PACS ({missing})"
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return str(target), None
