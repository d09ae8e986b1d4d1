"""A study's link in its PACS or viewer, from a URL template the user sets in
``$RADSEARCH_PACS_LINK``, e.g.
``https://pacs.example.org/viewer?StudyInstanceUIDs={StudyInstanceUID}`` or a WADO-RS address
``https://pacs.example.org/dicom-web/studies/{StudyInstanceUID}``.

The link needs the Study Instance UID in clear. An index built with ``--keep-phi`` holds it; the
others hold only a keyed hash of it, so for a study indexed from a PACS the UID is found again in
the PACS when a link is asked for (radsearch.pacs_fetch) and kept in memory only. A PACS that does
not answer costs the links (None), never the results, and is not asked again for a minute.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from radsearch.errors import RadsearchError

LINK_VARIABLE = "RADSEARCH_PACS_LINK"
_QUIET_S = 60.0  # after a PACS failed to answer, links from it are not asked for this long
_silent_since: dict[str, float] = {}  # index path -> when its PACS last failed to answer


def study_link(identifiers: dict[str, list[str]]) -> str | None:
    """The template filled with the study's UID; None without a template or a single UID."""
    uids = identifiers.get("StudyInstanceUID") or []
    return _filled(uids[0]) if len(uids) == 1 else None


def link_of_study(index: Path, conn, study_key: str) -> str | None:
    """The link of the indexed study ``study_key``: from the UID a --keep-phi index holds, else,
    for a study indexed from a PACS, from the UID found there; None without a template."""
    if not os.environ.get(LINK_VARIABLE):
        return None
    from radsearch.pacs_fetch import fetcher, kept_study_uid

    uid = kept_study_uid(conn, study_key) if conn is not None else None
    if uid is None and conn is not None:
        if time.monotonic() - _silent_since.get(str(index), -math.inf) < _QUIET_S:
            return None
        try:
            uid = fetcher(index).study_uid(study_key)
        except RadsearchError:
            _silent_since[str(index)] = time.monotonic()
            return None
    return _filled(uid) if uid else None


def add_links(store: Any, hits: Sequence[Any]) -> None:
    """Set each result's ``link`` (its study's, as :func:`link_of_study` finds it)."""
    if not os.environ.get(LINK_VARIABLE) or store.conn is None:
        return
    with store.snapshot() as conn:
        for hit in hits:
            hit.link = link_of_study(store.path, conn, hit.study)


def _filled(uid: str) -> str | None:
    template = os.environ.get(LINK_VARIABLE)
    return template.replace("{StudyInstanceUID}", quote(uid, safe="")) if template else None
