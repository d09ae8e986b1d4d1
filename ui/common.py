"""What every page of the explorer shares: its settings, one-line errors, cached pictures, links.

Text read from the files (descriptions, reports, paths) is shown with ``st.text``, in tables or
HTML-escaped in a link, never as Markdown, so a report cannot restyle the page.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import streamlit as st

from radsearch.errors import RadsearchError
from radsearch.index_handle import resolve_index_path
from radsearch.pacs_fetch import is_pacs_key
from radsearch.previews import FrameValues, frame_values, image_preview

T = TypeVar("T")
HIGHLIGHT = "highlight"  # the study page's URL parameter: a sentence of its report to mark
ANSWER_TTL = 300  # seconds an answer is reused: a remote back end changes without the catalog


def settings() -> dict[str, Any]:
    """The index, back end and URL ``radsearch ui`` passed after ``--`` (search keywords)."""
    parser = argparse.ArgumentParser(prog="radsearch ui", add_help=False)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--backend")
    parser.add_argument("--url")
    args, _ = parser.parse_known_args(sys.argv[1:])
    # Resolved once: an uploaded file is then classified with this index's model, not the default.
    return {"index": resolve_index_path(args.index), "backend": args.backend, "url": args.url}


def catalog_stamp() -> float:
    """When the catalog last changed (its write-ahead log included): part of every cache key, so
    what a new run indexed is shown; 0.0 when this machine has no catalog of the index."""
    index = Path(settings()["index"])
    stamps = [path.stat().st_mtime for path in (index / "catalog.sqlite", index / "catalog.sqlite-wal")
              if path.exists()]
    return max(stamps, default=0.0)


def attempt(call: Callable[[], T], *, hide: dict[str, str] | None = None) -> T | None:
    """Run a library call; its one-line error is shown on the page instead of a traceback, with
    each key of ``hide`` (a server-side temporary path) replaced by its value (the upload's name)."""
    try:
        return call()
    except RadsearchError as error:
        message = str(error)
        for secret, shown in (hide or {}).items():
            message = message.replace(secret, shown)
        st.error(message)
        return None


def study_url(study: str) -> str:
    """The study page's address (relative: the explorer may be served under a path)."""
    return f"study?{urlencode({'study': study})}"


def picture_stamp(path: str) -> float:
    """Part of a picture's cache key: the file's time, or for an instance indexed from a PACS
    (fetched on demand, radsearch.pacs_fetch) the catalog's, which a run re-fetching it moves."""
    return catalog_stamp() if is_pacs_key(path) else Path(path).stat().st_mtime


def pacs_link(link: str | None) -> str:
    """HTML of a study's link in its PACS or viewer (``$RADSEARCH_PACS_LINK``); "" for none."""
    if not link or not link.lower().startswith(("https://", "http://")):
        return ""
    return (f'<a class="pacs-link" href="{html.escape(link)}" target="_blank" '
            'rel="noopener noreferrer">Open in the PACS</a>')


@st.cache_data(max_entries=2048, show_spinner=False)
def _thumbnail(path: str, frame: int, modified: float) -> Any:
    del modified  # part of the cache key only: a re-written file is shown anew
    return image_preview(path, frame, index=settings()["index"])


def show_thumbnail(path: str, frame: int, caption: str | None = None) -> None:
    try:
        picture = _thumbnail(path, frame, picture_stamp(path))
    except (OSError, RadsearchError) as error:
        st.caption(f"no preview: {type(error).__name__ if isinstance(error, OSError) else error}")
        return
    st.image(picture, caption=caption, use_container_width=True)


# Decoded frames of the viewer: float32 arrays kept as they are (not copied per rerun); about
# 1 MB per 512x512 slice, so a 300-slice series paged through once stays in memory.
@st.cache_resource(max_entries=400, show_spinner=False)
def _frame(path: str, frame: int, modified: float) -> FrameValues | None:
    del modified
    return frame_values(path, frame, index=settings()["index"])


def decoded_frame(path: str, frame: int) -> FrameValues | None:
    """A frame in original values, decoded once per server (None: not grayscale DICOM)."""
    return _frame(path, frame, picture_stamp(path))
