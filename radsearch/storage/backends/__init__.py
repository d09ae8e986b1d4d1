"""Vector stores behind one contract (``base.Backend``), chosen per index:

- ``faiss`` (default): FAISS over the catalog's own vectors and rows (``catalog_backend``); a
  directory without a catalog gets FAISS indexes over a SQLite store of points (``faiss_backend``);
- ``qdrant-edge``: the Qdrant engine embedded in-process (qdrant-edge-py), inside the index directory;
- ``qdrant``: a Qdrant server or cluster at a URL (qdrant-client); a path instead of a URL uses
  qdrant-client's local mode, which stands in for a server in tests.

The SQLite catalog stays each machine's bookkeeping; ``sync`` brings a Qdrant store in step with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from radsearch.storage.backends.base import Backend, Hit, Point, PointFilter, Record
from radsearch.errors import RadsearchError

KINDS = ("faiss", "qdrant-edge", "qdrant")
DEFAULT_KIND = "faiss"
FAISS_DIR = "faiss"
EDGE_DIR = "qdrant-edge"

__all__ = ["KINDS", "Backend", "BackendSpec", "Hit", "Point", "PointFilter", "Record",
           "open_backend", "parse_options"]


@dataclass(frozen=True)
class BackendSpec:
    """Which store an index uses: ``kind``, the ``url`` of a Qdrant server (kind ``qdrant`` only)
    and store options (see each back end's class)."""

    kind: str = DEFAULT_KIND
    url: str | None = None
    options: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RadsearchError(f"unknown back end {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "qdrant" and not self.url:
            raise RadsearchError("the qdrant back end needs --url (http(s)://host:6333)")
        if self.kind != "qdrant" and self.url:
            raise RadsearchError(f"--url is for the qdrant back end, not {self.kind}")
        if self.url and not self.url.startswith(("http://", "https://")) and self.url != ":memory:":
            object.__setattr__(self, "url", os.path.abspath(self.url))  # a local-mode path
        if self.url and urlsplit(self.url).username:
            raise RadsearchError("put no credentials in --url: the API key is read from "
                                 "$RADSEARCH_QDRANT_API_KEY")

    def to_record(self) -> dict:
        return {"kind": self.kind, "url": self.url, "options": dict(self.options)}

    @classmethod
    def from_record(cls, data: Mapping) -> BackendSpec:
        return cls(data["kind"], data.get("url"), dict(data.get("options") or {}))

    def describe(self) -> str:
        if self.url is None:
            return self.kind
        parts = urlsplit(self.url)
        return f"{self.kind} at {urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))}"


def parse_options(items: Iterable[str]) -> dict:
    """``key=value`` strings -> options; integers and true/false are converted."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RadsearchError(f"back-end option {item!r}: use KEY=VALUE")
        value = value.strip()
        if value.lower() in ("true", "false"):
            options[key.strip()] = value.lower() == "true"
        else:
            try:
                options[key.strip()] = int(value)
            except ValueError:
                options[key.strip()] = value
    return options


def open_backend(spec: BackendSpec, index_dir: Path, *, vector_name: str | None,
                 read_only: bool) -> Backend:
    """Open the store ``spec`` names for an index at ``index_dir``; its vectors are named after the
    model, ``vector_name`` (None: a Qdrant store reads it from its own record)."""
    options = dict(spec.options)
    if spec.kind == "faiss":
        from radsearch.storage.backends.faiss_backend import FaissBackend

        return FaissBackend(Path(index_dir) / FAISS_DIR, read_only=read_only, options=options)
    if spec.kind == "qdrant-edge":
        from radsearch.storage.backends.edge_backend import QdrantEdgeBackend

        return QdrantEdgeBackend(Path(index_dir) / EDGE_DIR, vector_name=vector_name or "embedding",
                                 read_only=read_only, options=options)
    from radsearch.storage.backends.qdrant_backend import QdrantBackend

    return QdrantBackend(spec.url, vector_name=vector_name, read_only=read_only, options=options)
