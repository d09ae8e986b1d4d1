"""A PACS over DIMSE (``dimse://AET@host:port``): C-FIND lists the instances (study root: studies,
their series, their instances), C-GET fetches them, a batch of one series at a time, in their
stored transfer syntax, on one association (pynetdicom). radsearch calls as
``$RADSEARCH_DIMSE_AET`` (default RADSEARCH): the PACS must know that AE title (Orthanc:
``DicomModalities``) to answer C-FIND and C-GET.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from radsearch.errors import RadsearchError
from radsearch.indexer.pacs_source import (
    VERSION_ATTRIBUTES,
    PacsQuery,
    PacsSource,
    PacsUnavailable,
    RemoteInstance,
    version_text,
)
from radsearch.indexer.worker import ReadOutcome, ReadTask
from radsearch.optional import require

SCHEME = "dimse"
_BATCH = 16  # instances asked for in one C-GET: few round trips, a small spool
_PENDING = {0xFF00, 0xFF01}
T = TypeVar("T")


def is_dimse(source: str) -> bool:
    return source.split("://", 1)[0].lower() == SCHEME


class _Lost(Exception):
    """The association ended or could not be made: worth trying again."""


class DimseSource(PacsSource):
    def __init__(self, address: str, *, attempts: int = 5, backoff_s: float = 0.5,
                 timeout_s: float = 60.0):
        super().__init__()
        require("dimse")
        match = re.fullmatch(r"dimse://([^@/]{1,16})@([^:/]+):(\d{1,5})/?", address, re.IGNORECASE)
        if match is None:
            raise RadsearchError(f"{address}: a DIMSE source reads dimse://AET@host:port")
        self.called, self.host, self.port = match[1], match[2], int(match[3])
        self.calling = os.environ.get("RADSEARCH_DIMSE_AET") or "RADSEARCH"
        self.root = f"dimse://{self.called}@{self.host}:{self.port}"
        self.address = self.root
        self.attempts, self.backoff_s, self.timeout_s = max(1, attempts), backoff_s, timeout_s
        self._get_assoc = None
        self._get_classes: frozenset[str] = frozenset()
        self._assoc_classes: frozenset[str] = frozenset()  # those the open association takes
        self._spool: Path | None = None  # where the C-STORE handler writes what C-GET sends
        self._received: dict[str, Path] = {}

    # --- C-FIND ---

    def list_instances(self, query: PacsQuery) -> list[RemoteInstance]:
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as Find

        ae = self._ae(AE)
        ae.add_requested_context(Find)
        found: list[RemoteInstance] = []

        def listing() -> None:
            found.clear()
            assoc = self._associate(ae, "search")
            try:
                studies = self._studies(assoc, Find, query)
                if not studies:
                    raise self.nothing_matches(query)
                for study in studies:
                    for series in self._find(assoc, Find, "SERIES", {
                            "StudyInstanceUID": study, "SeriesInstanceUID": "",
                            "Modality": query.modality or ""}, "SeriesInstanceUID"):
                        for answer in self._find(assoc, Find, "IMAGE", {
                                "StudyInstanceUID": study, "SeriesInstanceUID": series,
                                "SOPInstanceUID": "", "SOPClassUID": "",
                                **dict.fromkeys(self.version_attributes)}, None):
                            sop = str(answer.get("SOPInstanceUID", "") or "")
                            if sop:
                                found.append(RemoteInstance(study, series, sop, str(
                                    answer.get("SOPClassUID", "") or "") or None,
                                    version=_version(answer)))
            finally:
                if assoc.is_established:
                    assoc.release()

        self._retry(listing, "search")
        if not found:
            raise RadsearchError(f"{self.root}: the studies matching {query.describe()} hold no "
                                 "instance to index")
        self._get_classes = frozenset(item.sop_class for item in found if item.sop_class)
        return found

    def list_studies(self, query: PacsQuery) -> list[str]:
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as Find

        ae = self._ae(AE)
        ae.add_requested_context(Find)

        def listing() -> list[str]:
            assoc = self._associate(ae, "search")
            try:
                return self._studies(assoc, Find, query)
            finally:
                if assoc.is_established:
                    assoc.release()

        return self._retry(listing, "search")

    def _studies(self, assoc, model, query: PacsQuery) -> list[str]:
        studies: list[str] = []
        for wanted in query.studies or ("",):
            ask = {"StudyInstanceUID": wanted, "StudyDate": query.study_dates()}
            if query.modality:
                ask["ModalitiesInStudy"] = query.modality
            studies += [uid for uid in self._find(assoc, model, "STUDY", ask, "StudyInstanceUID")
                        if uid not in studies]
        return studies

    def _find(self, assoc, model, level: str, keys: dict, wanted: str | None) -> Iterator:
        from pydicom.dataset import Dataset

        ask = Dataset()
        ask.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ask, keyword, value)
        answers = []
        for status, identifier in assoc.send_c_find(ask, model):
            if not status:  # no answer: the association was aborted or timed out
                raise _Lost(f"the PACS ended the association during a C-FIND: does it accept "
                            f"the calling AE title {self.calling}? RADSEARCH_DIMSE_AET sets it")
            if status.Status in _PENDING and identifier is not None:
                answers.append(identifier if wanted is None else str(
                    identifier.get(wanted, "") or ""))
            elif status.Status not in _PENDING and status.Status != 0x0000:
                raise RadsearchError(f"{self.root}: C-FIND at the {level} level failed "
                                     f"(status 0x{status.Status:04X})")
        return [answer for answer in answers if answer != ""]

    # --- C-GET ---

    def fetch(self, tasks: Iterable[ReadTask], spool: Path,
              failures: list[ReadOutcome]) -> Iterator[ReadTask]:
        """As ``PacsSource.fetch``, with one C-GET for up to ``_BATCH`` instances of a series (a
        C-GET costs a round trip of the PACS whatever its size)."""
        by_series: dict[tuple[str, str], list[ReadTask]] = {}
        for task in tasks:
            instance = self._instances[task.path]
            by_series.setdefault((instance.study, instance.series), []).append(task)
        for (study, series), series_tasks in by_series.items():
            for start in range(0, len(series_tasks), _BATCH):
                batch = series_tasks[start:start + _BATCH]
                sops = [self._instances[task.path].sop for task in batch]
                files = self._retry(lambda: self._get(study, series, sops, spool), "fetch")
                for task, sop in zip(batch, sops):
                    if sop in files:
                        yield replace(task, read_path=str(files[sop]))
                    else:
                        failures.append(ReadOutcome(task.path, "failed",
                                                    reason="no longer in the PACS (C-GET sent "
                                                           "nothing)"))

    def _get(self, study: str, series: str, sops: list[str], spool: Path) -> dict[str, Path]:
        """The instances ``sops`` of one series, each written to a file of ``spool``."""
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

        assoc = self._get_association()
        ask = Dataset()
        ask.QueryRetrieveLevel = "IMAGE"
        ask.StudyInstanceUID, ask.SeriesInstanceUID = study, series
        ask.SOPInstanceUID = sops if len(sops) > 1 else sops[0]  # a UID list: one round trip
        wanted = set(sops)
        self._received = {}
        self._spool = spool
        try:
            for status, _ in assoc.send_c_get(ask, Get):
                if not status:
                    self._drop_get_association()
                    raise _Lost(f"the PACS ended the association during a C-GET: does it accept "
                                f"the calling AE title {self.calling}? RADSEARCH_DIMSE_AET sets it")
        except _Lost:
            for path in self._received.values():  # a partial batch is fetched again whole
                path.unlink(missing_ok=True)
            raise
        return {sop: path for sop, path in self._received.items() if sop in wanted}

    def _get_association(self):
        from pynetdicom import AE, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

        if self._get_assoc is not None and self._get_assoc.is_established:
            if self._get_classes <= self._assoc_classes:
                return self._get_assoc
            self.close()  # a later listing (another study) holds classes it cannot receive
        self._assoc_classes = self._get_classes
        ae = self._ae(AE)
        ae.add_requested_context(Get)
        roles = []
        for sop_class, syntaxes in _storage_contexts(sorted(self._get_classes)):
            ae.add_requested_context(sop_class, syntaxes)
            roles.append(build_role(sop_class, scp_role=True))
        self._get_assoc = self._associate(ae, "fetch", ext_neg=_unique_roles(roles),
                                          evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return self._get_assoc

    def _drop_get_association(self) -> None:
        if self._get_assoc is not None:
            self._get_assoc.abort()
        self._get_assoc = None

    def _store(self, event) -> int:
        """An instance C-GET sends: its bytes as received, meta header included."""
        assert self._spool is not None
        sop = str(event.request.AffectedSOPInstanceUID)
        fd, name = tempfile.mkstemp(dir=self._spool, suffix=".dcm")
        with os.fdopen(fd, "wb") as handle:
            handle.write(bytes(event.encoded_dataset(include_meta=True)))
        self._received[sop] = Path(name)
        return 0x0000

    def close(self) -> None:
        if self._get_assoc is not None and self._get_assoc.is_established:
            self._get_assoc.release()
        self._get_assoc = None

    # --- associations and politeness ---

    def _ae(self, ae_class):
        ae = ae_class(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        return ae

    def _associate(self, ae, what: str, **options):
        assoc = ae.associate(self.host, self.port, ae_title=self.called, **options)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise RadsearchError(
                f"{self.root}: the PACS refused the association for the {what} (is the AE title "
                f"{self.calling} known to it? set RADSEARCH_DIMSE_AET to one it knows)")
        raise _Lost(f"no association with {self.host}:{self.port}")

    def _retry(self, attempt_once: Callable[[], T], what: str) -> T:
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return attempt_once()
            except _Lost as lost:
                last = str(lost)
        then = ("what was fetched is indexed; run again to go on" if what == "fetch"
                else "nothing was indexed")
        raise PacsUnavailable(self.root, f"no answer to a {what} after {self.attempts} tries "
                              f"({last})", then)


def _version(answer) -> str:
    """The instance's VERSION_ATTRIBUTES as the C-FIND answer gives them."""
    return version_text((keyword, str(answer.get(keyword, "") or ""))
                        for keyword in VERSION_ATTRIBUTES)


# Stored transfer syntaxes offered for each storage class, one presentation context each, so that
# the PACS sends every instance as it stored it (no transcoding).
def _transfer_syntaxes() -> list[str]:
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.RLELossless,
            uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
            uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
            uid.DeflatedExplicitVRLittleEndian]


def _storage_contexts(classes: list[str]) -> list[tuple[str, list[str]]]:
    """(SOP class, transfer syntaxes) per presentation context, within the 127 a C-GET may add."""
    syntaxes = _transfer_syntaxes()
    if len(classes) * len(syntaxes) <= 127:
        return [(sop_class, [syntax]) for sop_class in classes for syntax in syntaxes]
    # Too many classes: one context each, offering all; the PACS may then transcode.
    return [(sop_class, syntaxes) for sop_class in classes[:127]]


def _unique_roles(roles: list) -> list:
    seen, unique = set(), []
    for role in roles:
        if role.sop_class_uid not in seen:
            seen.add(role.sop_class_uid)
            unique.append(role)
    return unique
