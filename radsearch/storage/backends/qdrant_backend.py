"""Qdrant server or cluster through ``qdrant-client``.

``url`` is ``http(s)://host:port`` (TLS with https; the API key comes from $RADSEARCH_QDRANT_API_KEY
and is never stored or printed; $RADSEARCH_QDRANT_CA_CERT names a CA bundle for a private CA). Any
other ``url`` is a path (or ``:memory:``) for qdrant-client's local mode - brute force in Python,
for tests only.

Collections are ``PREFIX_images``, ``PREFIX_series``, ``PREFIX_studies``, ``PREFIX_sentences``, each
with one named vector (the model's name) compared by dot product, HNSW, payload indexes on every
filter field, and the cluster layout given at creation: ``shard_number``, ``replication_factor``,
``write_consistency_factor``, ``on_disk`` vectors, ``quantization`` none|scalar|binary (searched
with rescoring on the original vectors). ``PREFIX_meta`` holds the store's record in its collection
metadata (Qdrant >= 1.16): created once, by whichever machine comes first. Writes go in batches,
retried with exponential back-off on transient errors (timeouts, 429, 5xx, unreachable nodes).
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np

from radsearch.storage.backends.base import (
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    Backend,
    Hit,
    Point,
    PointFilter,
    Record,
)
from radsearch.errors import RadsearchError

from radsearch.optional import require

require("qdrant")
import httpx  # noqa: E402 - installed with qdrant-client
from qdrant_client import QdrantClient, models  # noqa: E402
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse  # noqa: E402

API_KEY_ENV = "RADSEARCH_QDRANT_API_KEY"
CA_CERT_ENV = "RADSEARCH_QDRANT_CA_CERT"
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
T = TypeVar("T")


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


class QdrantBackend(Backend):
    """Options: ``prefix`` (radsearch), ``shard_number``, ``replication_factor``,
    ``write_consistency_factor``, ``on_disk``, ``quantization`` (none|scalar|binary), ``hnsw_m``,
    ``ef_construct``, ``hnsw_ef``, ``batch_size`` (256), ``retries`` (6), ``timeout`` (seconds)."""

    kind = "qdrant"

    def __init__(self, url: str, *, vector_name: str | None, read_only: bool = False,
                 options: dict | None = None, client: QdrantClient | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        options = options or {}
        self.url = url
        self._vector_name = vector_name
        self.read_only = read_only
        self.remote = is_remote(url)
        self.prefix = str(options.get("prefix", "radsearch"))
        self.options = options
        self.hnsw_ef = int(options.get("hnsw_ef", 128))
        self.batch_size = int(options.get("batch_size", 256))
        self.retries = int(options.get("retries", 6))
        self.quantization = str(options.get("quantization", "none"))
        if self.quantization not in ("none", "scalar", "binary"):
            raise RadsearchError(f"quantization {self.quantization!r}: use none, scalar or binary")
        self._sleep = sleep
        self._known: set[str] = set()  # collections seen to exist (they are never dropped here)
        self.client = client if client is not None else _connect(url, options)

    @property
    def vector_name(self) -> str:
        """The model's name: given, else read from the store's record (a reader without a catalog)."""
        if self._vector_name is None:
            self._vector_name = str((self.metadata() or {}).get("model.name", "embedding"))
        return self._vector_name

    def _name(self, collection: str) -> str:
        return f"{self.prefix}_{collection}"

    def _retry(self, action: Callable[[], T]) -> T:
        """Run ``action``; on a transient error wait 0.5, 1, 2, ... s (with jitter) and retry."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except Exception as error:  # noqa: BLE001 - classified just below
                if not _transient(error):
                    raise
                if attempt == self.retries:
                    raise RadsearchError(
                        f"Qdrant at {_display_url(self.url)}: no answer after {attempt + 1} tries: "
                        f"{_first_line(error)}") from None
                self._sleep(0.5 * 2**attempt * (1 + random.random() / 4))
        raise AssertionError("unreachable")

    def _exists(self, collection: str) -> bool:
        if collection not in self._known and self._retry(
            lambda: self.client.collection_exists(self._name(collection))
        ):
            self._known.add(collection)
        return collection in self._known

    def create_collection(self, name: str, dim: int) -> None:
        if self._exists(name):
            info = self._retry(lambda: self.client.get_collection(self._name(name)))
            vectors = info.config.params.vectors
            params = vectors.get(self.vector_name) if isinstance(vectors, dict) else None
            if params is None or params.size != dim:
                raise RadsearchError(f"Qdrant collection {self._name(name)} holds no {dim}-d "
                                     f"vector {self.vector_name!r} (another model?)")
            return
        on_disk = str(self.options.get("on_disk", "true")).lower() in ("1", "true", "yes", "on")
        try:
            self._retry(lambda: self.client.create_collection(
                self._name(name),
                vectors_config={self.vector_name: models.VectorParams(
                    size=dim, distance=models.Distance.DOT, on_disk=on_disk)},
                shard_number=_optional_int(self.options.get("shard_number")),
                replication_factor=_optional_int(self.options.get("replication_factor")),
                write_consistency_factor=_optional_int(self.options.get("write_consistency_factor")),
                on_disk_payload=True,
                hnsw_config=models.HnswConfigDiff(
                    m=int(self.options.get("hnsw_m", 16)),
                    ef_construct=int(self.options.get("ef_construct", 100))),
                quantization_config=_quantization(self.quantization),
            ))
        except (UnexpectedResponse, ValueError) as error:
            if not self._exists(name):  # another machine created it first: fine
                raise RadsearchError(f"cannot create Qdrant collection {self._name(name)}: "
                                     f"{_short(error)}") from None
        if self.remote:  # local mode has no payload indexes (and warns about them)
            for field in KEYWORD_FIELDS + INTEGER_FIELDS:
                schema = (models.PayloadSchemaType.INTEGER if field in INTEGER_FIELDS
                          else models.PayloadSchemaType.KEYWORD)
                self._retry(lambda: self.client.create_payload_index(
                    self._name(name), field, schema, wait=True))

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        name = self._name(collection)
        for start in range(0, len(points), self.batch_size):
            batch = [
                models.PointStruct(id=p.id, vector={self.vector_name: np.asarray(
                    p.vector, dtype=np.float32).tolist()}, payload=p.payload)
                for p in points[start : start + self.batch_size]
            ]
            self._retry(lambda: self.client.upsert(name, batch, wait=True))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids or not self._exists(collection):
            return
        name = self._name(collection)
        for start in range(0, len(ids), self.batch_size):
            selector = models.PointIdsList(points=list(ids[start : start + self.batch_size]))
            self._retry(lambda: self.client.delete(name, points_selector=selector, wait=True))

    def search(self, collection: str, vector: np.ndarray, k: int,
               filter: PointFilter | None = None) -> list[Hit]:
        if k <= 0 or not self._exists(collection):
            return []
        condition = to_qdrant_filter(filter)
        params = None
        if self.remote:  # local mode is exact and warns about search parameters
            params = models.SearchParams(
                hnsw_ef=max(self.hnsw_ef, k),
                acorn=models.AcornSearchParams(enable=True) if condition is not None else None,
                quantization=(models.QuantizationSearchParams(rescore=True, oversampling=2.0)
                              if self.quantization != "none" else None),
            )
        response = self._retry(lambda: self.client.query_points(
            self._name(collection), query=np.asarray(vector, dtype=np.float32).tolist(),
            using=self.vector_name, limit=k, query_filter=condition, search_params=params,
            with_payload=True,
        ))
        return [Hit(str(p.id), float(p.score), p.payload or {}) for p in response.points]

    def fetch(self, collection: str, filter: PointFilter, limit: int, *,
              with_vectors: bool = False) -> list[Record]:
        if not self._exists(collection):
            return []
        records, _ = self._retry(lambda: self.client.scroll(
            self._name(collection), scroll_filter=to_qdrant_filter(filter), limit=limit,
            with_payload=True, with_vectors=[self.vector_name] if with_vectors else False,
        ))
        return [Record(str(r.id), r.payload or {},
                       np.asarray(r.vector[self.vector_name], dtype=np.float32)
                       if with_vectors else None)
                for r in records]

    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        if not self._exists(collection):
            return 0
        return int(self._retry(lambda: self.client.count(
            self._name(collection), count_filter=to_qdrant_filter(filter), exact=True)).count)

    def metadata(self) -> dict | None:
        meta = self._name("meta")
        if not self._retry(lambda: self.client.collection_exists(meta)):
            return None
        return dict(self._retry(lambda: self.client.get_collection(meta)).config.metadata or {})

    def initialise(self, record: dict) -> dict:
        """Create the meta collection holding ``record``; a machine that loses the race to create
        it reads the winner's record instead."""
        existing = self.metadata()
        if existing:
            return existing
        try:
            self._retry(lambda: self.client.create_collection(
                self._name("meta"), metadata=record,
                vectors_config={"unused": models.VectorParams(size=1, distance=models.Distance.DOT)}))
        except (UnexpectedResponse, ValueError):
            pass  # created meanwhile by another machine
        return self.metadata() or record

    def update_record(self, changes: dict) -> None:
        """Collection metadata is merged, so a removed key is kept as null (read as absent)."""
        self._retry(lambda: self.client.update_collection(self._name("meta"), metadata=changes))

    def persist(self) -> None:
        """Nothing to do: every write waited for the cluster's acknowledgement."""

    def close(self) -> None:
        self.client.close()


def _connect(url: str, options: dict) -> QdrantClient:
    timeout = int(options.get("timeout", 60))
    if not is_remote(url):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return QdrantClient(location=url) if url == ":memory:" else QdrantClient(path=url)
    extra = {}
    if os.environ.get(CA_CERT_ENV):
        extra["verify"] = os.environ[CA_CERT_ENV]
    with warnings.catch_warnings():
        # qdrant-client warns when a key travels over plain http; the key itself is never shown.
        warnings.simplefilter("ignore")
        return QdrantClient(url=url, api_key=os.environ.get(API_KEY_ENV) or None, timeout=timeout,
                            check_compatibility=False, **extra)


def to_qdrant_filter(filter: PointFilter | None) -> models.Filter | None:
    if filter is None or filter.empty:
        return None
    must = [models.FieldCondition(key=field, match=models.MatchAny(any=list(values)))
            for field, values in filter.any_of]
    must += [models.FieldCondition(key=field, range=models.Range(gte=low, lte=high))
             for field, low, high in filter.ranges]
    must_not = [models.FieldCondition(key=field, match=models.MatchAny(any=list(values)))
                for field, values in filter.none_of]
    return models.Filter(must=must or None, must_not=must_not or None)


def _quantization(kind: str):
    if kind == "scalar":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
    if kind == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _display_url(url: str) -> str:
    """``url`` without user name, password or query: what may be printed."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url  # a local path
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _transient(error: Exception) -> bool:
    if isinstance(error, UnexpectedResponse):
        return error.status_code in _TRANSIENT_STATUS
    if isinstance(error, (ResponseHandlingException, httpx.TransportError, TimeoutError,
                          ConnectionError)):
        return True
    try:
        import grpc
    except ImportError:
        return False
    return isinstance(error, grpc.RpcError) and error.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED)


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:200]
