"""A PACS over DICOMweb: QIDO-RS lists the instances, WADO-RS fetches each in its stored transfer
syntax (indexer.pacs_source has what every PACS source shares).

Credentials come from the environment only (``RADSEARCH_DICOMWEB_TOKEN``, else
``RADSEARCH_DICOMWEB_USER`` and ``RADSEARCH_DICOMWEB_PASSWORD``) and are never written or printed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from radsearch.errors import RadsearchError
from radsearch.indexer.pacs_source import (
    VERSION_ATTRIBUTES,
    InstanceMissing,
    PacsQuery,
    PacsSource,
    PacsUnavailable,
    RemoteInstance,
    version_text,
)
from radsearch.optional import require

SCHEMES = ("dicomweb+https", "dicomweb+http")
# Answers worth asking again after a pause: the server is busy, or failed for a moment.
_RETRIABLE = {408, 429, 500, 502, 503, 504}
_REFUSED = {401, 403}
_PAGE = 500  # QIDO-RS results asked for at a time
T = TypeVar("T")


def is_dicomweb(source: str) -> bool:
    return source.split("://", 1)[0].lower() in SCHEMES


class DicomwebSource(PacsSource):
    """One DICOMweb service: ``dicomweb+https://host[:port]/path`` (``dicomweb+http`` for a server
    on this machine or a trusted network)."""

    def __init__(self, address: str, *, concurrency: int = 4, attempts: int = 5,
                 backoff_s: float = 0.5, timeout_s: float = 60.0):
        require("dicomweb")
        import requests
        from dicomweb_client.api import DICOMwebClient

        super().__init__()
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
        self.address = f"{parts.scheme.lower()}://{host}{path}"
        self.concurrency = max(1, concurrency)
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        session = requests.Session()
        session.auth = _credentials()
        self._requests = requests
        self._client = DICOMwebClient(f"{parts.scheme.split('+', 1)[1]}://{host}{path}",
                                      session=session, timeout=timeout_s)
        self._client.set_http_retry_params(retry=False)  # retried here, for every failure kind

    # --- QIDO-RS ---

    def list_instances(self, query: PacsQuery) -> list[RemoteInstance]:
        studies = self._studies(query)
        if not studies:
            raise self.nothing_matches(query)
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
                        limit=limit, fields=list(self.version_attributes))):
                    sop = _uid(instance, "00080018")
                    if sop is not None:
                        found.append(RemoteInstance(study, series_uid, sop,
                                                    version=_version(instance)))
        if not found:
            raise RadsearchError(f"{self.root}: the studies matching {query.describe()} hold no "
                                 "instance to index")
        return found

    def list_studies(self, query: PacsQuery) -> list[str]:
        return self._studies(query)

    def _studies(self, query: PacsQuery) -> list[str]:
        filters: dict[str, str] = {}
        if query.study_dates():
            filters["StudyDate"] = query.study_dates()
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

    # --- WADO-RS ---

    def fetch_instance(self, instance: RemoteInstance, target: Path) -> None:
        dataset = self._call(lambda: self._client.retrieve_instance(
            instance.study, instance.series, instance.sop), "fetch", missing_ok=True)
        dataset.save_as(target, enforce_file_format=True)

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
                    raise InstanceMissing("404") from None
                if status not in _RETRIABLE:
                    raise RadsearchError(
                        f"{self.root}: the server answered the {what} with {status} {reason}"
                    ) from None
                last = f"{status} {reason}"
            except (requests.ConnectionError, requests.Timeout) as error:
                last = _short(error)
        then = ("what was fetched is indexed; run again to go on" if what == "fetch"
                else "nothing was indexed")
        raise PacsUnavailable(self.root, f"no answer to a {what} after {self.attempts} tries "
                              f"({last})", then)


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


def _version(record: dict) -> str:
    """The instance's VERSION_ATTRIBUTES as the QIDO-RS answer gives them."""
    from pydicom.datadict import tag_for_keyword

    return version_text(
        (keyword, json.dumps(record[tag]["Value"], sort_keys=True))
        for keyword in VERSION_ATTRIBUTES
        if (tag := f"{tag_for_keyword(keyword):08X}") in record and "Value" in record[tag])


def _short(error: Exception) -> str:
    """A connection error in a few words (requests nests the cause several levels deep)."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match[1].strip()
    return type(error).__name__
