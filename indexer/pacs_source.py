"""What every PACS source shares (indexer.dicomweb, indexer.dimse): the query, the instances it
lists, their keys in the catalog, and fetching them into a spool folder that the read stage empties.

An instance's key in the catalog is ``<root>/instances/<keyed hash of its SOP Instance UID>``:
like a file's path it identifies it across runs (a second run fetches only what is new), yet it
holds no UID in clear. A PACS has no file times: the instance's version (a keyed hash of the
attributes in ``VERSION_ATTRIBUTES`` the listing returns) stands in for one, so that an instance the
PACS changed under the same UID is fetched again (and re-embedded only if its content changed).
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

# Asked for with every instance listed (QIDO-RS includefield, C-FIND keys): what a PACS changes when
# an instance is corrected or re-sent under the same SOP Instance UID (its creation and content
# times, how its pixels are stored and scaled, where it lies). A change of pixel data alone, with
# none of these, goes unseen: DICOMweb and DIMSE offer no content checksum.
VERSION_ATTRIBUTES = (
    "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    "AcquisitionDateTime", "DerivationDescription", "ImageType", "InstanceNumber", "Rows",
    "Columns", "NumberOfFrames", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PixelSpacing",
    "ImagePositionPatient", "ImageOrientationPatient", "LossyImageCompression",
)


class PacsUnavailable(RadsearchError):
    """The PACS stopped answering: what was fetched is kept, the next run goes on from there."""

    def __init__(self, root: str, silence: str, then: str):
        super().__init__(f"{root}: {silence}: {then}")
        self.root, self.silence = root, silence  # what went unanswered, without the advice


class InstanceMissing(Exception):
    """An instance listed is no longer on the server."""


@dataclass(frozen=True)
class PacsQuery:
    """Which studies to index: all of them, or those matching every condition given."""

    since: date | None = None  # study date on or after
    modality: str | None = None  # only series of this modality (e.g. CT)
    studies: tuple[str, ...] = ()  # these Study Instance UIDs only
    until: date | None = None  # study date on or before

    @property
    def filtered(self) -> bool:
        return (self.since is not None or self.until is not None or self.modality is not None
                or bool(self.studies))

    def study_dates(self) -> str:
        """The StudyDate range to ask for (YYYYMMDD-YYYYMMDD, either end open); "" for any."""
        if self.since is None and self.until is None:
            return ""
        since, until = (d.strftime("%Y%m%d") if d else "" for d in (self.since, self.until))
        return since if since == until else f"{since}-{until}"

    def describe(self) -> str:
        if not self.filtered:
            return "the whole archive"
        parts = []
        if self.since is not None:
            parts.append(f"--since {self.since.isoformat()}")
        if self.until is not None:
            parts.append(f"until {self.until.isoformat()}")
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
    version: str = ""  # VERSION_ATTRIBUTES as listed, keyword=value lines (held in memory only)


def version_text(values: Iterable[tuple[str, object]]) -> str:
    """An instance's version from its listed attributes: keyword=value lines in a fixed order."""
    found = dict(values)
    return "\n".join(f"{keyword}={found[keyword]}" for keyword in VERSION_ATTRIBUTES
                     if found.get(keyword) not in (None, ""))


class PacsSource:
    """A PACS that lists instances (``list_instances``) and fetches one into a file
    (``fetch_instance``, or ``fetch`` for a source that fetches in batches); the subclass says
    how."""

    root: str  # the catalog keys of its instances begin with it
    address: str  # as given to radsearch index (no credentials: those come from the environment)
    concurrency: int = 1  # fetches in flight at a time
    # Asked for with each instance listed; () asks for none, and then no change is seen.
    version_attributes: tuple[str, ...] = VERSION_ATTRIBUTES

    def __init__(self) -> None:
        self._instances: dict[str, RemoteInstance] = {}

    def list_instances(self, query: PacsQuery) -> list[RemoteInstance]:
        """Every instance of the studies ``query`` matches; raises RadsearchError, in one line,
        when the server refuses or the query matches nothing."""
        raise NotImplementedError

    def list_studies(self, query: PacsQuery) -> list[str]:
        """The Study Instance UIDs ``query`` matches (its ``since``, ``until`` and ``modality``),
        possibly none."""
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
            found.append(FoundFile(path, folder, 0, version_number(instance.version, salt),
                                   "dicom"))
        found.sort(key=lambda item: item.path)
        return found

    def knows(self, key: str) -> bool:
        """Whether ``key`` is the catalog key of an instance this source has listed."""
        return key in self._instances

    def locate_study(self, study_key: str, salt: str, study_date: str | None) -> str | None:
        """The Study Instance UID whose keyed hash is ``study_key`` (an index's study key), found
        among the studies of ``study_date`` (YYYY-MM-DD, as the index records it; None: the whole
        archive); None if the PACS holds no such study."""
        day = date.fromisoformat(study_date) if study_date else None
        for uid in self.list_studies(PacsQuery(since=day, until=day)):
            if salted_hash(uid, salt) == study_key:
                return uid
        return None

    def fetch_keys(self, keys: Iterable[str], spool: Path, salt: str) -> dict[str, Path]:
        """The instances of ``keys`` (catalog keys this source listed), each fetched into a file
        of ``spool``; a key the PACS no longer holds is left out."""
        tasks = (ReadTask(key, None, 0, salt) for key in keys)
        failures: list[ReadOutcome] = []
        return {task.path: Path(task.read_path) for task in self.fetch(tasks, spool, failures)
                if task.read_path is not None}

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


def version_number(version: str, salt: str) -> int:
    """The catalog's file time of an instance: a keyed hash of its version (0 for none listed),
    within SQLite's signed 64-bit integers."""
    return int(salted_hash(version, salt)[:15], 16) if version else 0
