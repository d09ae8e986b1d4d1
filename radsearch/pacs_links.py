"""A study's link in its PACS or viewer, from a URL template the user sets in
``$RADSEARCH_PACS_LINK``, e.g.
``https://pacs.example.org/viewer?StudyInstanceUIDs={StudyInstanceUID}`` or a WADO-RS address ``https://pacs.example.org/dicom-web/studies/{StudyInstanceUID}``.

The link needs the Study Instance UID in clear, which an index holds only when built with
``--keep-phi``; other indexes keep only a keyed hash of it, so their studies have no link.
"""

from __future__ import annotations

import os
from urllib.parse import quote

LINK_VARIABLE = "RADSEARCH_PACS_LINK"


def study_link(identifiers: dict[str, list[str]]) -> str | None:
    """The template filled with the study's UID; None without a template or a single UID."""
    template = os.environ.get(LINK_VARIABLE)
    uids = identifiers.get("StudyInstanceUID") or []
    if not template or len(uids) != 1:
        return None
    return template.replace("{StudyInstanceUID}", quote(uids[0], safe=""))
