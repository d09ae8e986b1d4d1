"""The back-end contract: every vector store radsearch can search implements :class:`Backend`.

A back end holds named collections of points. A point is a stable string id (a UUID, see
``payloads.point_id``), one L2-normalised float32 vector and a JSON payload; searches rank points by
inner product and may be restricted by a :class:`PointFilter` on the indexed payload fields. The
same contract suite (tests/test_backends_contract.py) runs against every implementation and
compares each result with exact numpy search, so the semantics below are the only ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from radsearch.errors import RadsearchError

# Payload fields a filter may name; every back end indexes exactly these.
KEYWORD_FIELDS = ("study", "series", "modality", "body_part", "view")
INTEGER_FIELDS = ("study_day",)


@dataclass(frozen=True)
class Point:
    id: str
    vector: np.ndarray
    payload: dict


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict


@dataclass(frozen=True)
class Record:
    id: str
    payload: dict
    vector: np.ndarray | None = None


def _values(value: object) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class PointFilter:
    """Conditions that all hold: ``any_of`` (a keyword field has one of the values; a list field
    matches when any element does), ``none_of`` (no value of the field is among these; a point
    without the field passes), ``ranges`` (an integer field within [low, high], either end open)."""

    any_of: tuple[tuple[str, tuple], ...] = ()
    none_of: tuple[tuple[str, tuple], ...] = ()
    ranges: tuple[tuple[str, int | None, int | None], ...] = ()

    @classmethod
    def build(
        cls,
        *,
        any_of: Mapping[str, Iterable] | None = None,
        none_of: Mapping[str, Iterable] | None = None,
        ranges: Mapping[str, tuple[int | None, int | None]] | None = None,
    ) -> PointFilter:
        for field in [*(any_of or {}), *(none_of or {})]:
            if field not in KEYWORD_FIELDS:
                raise RadsearchError(f"cannot filter on {field!r}: not an indexed keyword field")
        for field in ranges or {}:
            if field not in INTEGER_FIELDS:
                raise RadsearchError(f"cannot filter on {field!r}: not an indexed integer field")
        return cls(
            any_of=tuple((f, tuple(v)) for f, v in (any_of or {}).items()),
            none_of=tuple((f, tuple(v)) for f, v in (none_of or {}).items() if tuple(v)),
            ranges=tuple((f, lo, hi) for f, (lo, hi) in (ranges or {}).items()
                         if lo is not None or hi is not None),
        )

    @property
    def empty(self) -> bool:
        return not (self.any_of or self.none_of or self.ranges)

    @property
    def only_exclusions(self) -> bool:
        return bool(self.none_of) and not (self.any_of or self.ranges)

    def matches(self, payload: Mapping) -> bool:
        """The reference semantics, evaluated on one payload."""
        for field, accepted in self.any_of:
            if not any(value in accepted for value in _values(payload.get(field))):
                return False
        for field, rejected in self.none_of:
            if any(value in rejected for value in _values(payload.get(field))):
                return False
        for field, low, high in self.ranges:
            value = payload.get(field)
            if value is None:
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True

    def excluding(self, field: str, values: Iterable) -> PointFilter:
        """This filter with one more exclusion."""
        values = tuple(values)
        if not values:
            return self
        return PointFilter(self.any_of, (*self.none_of, (field, values)), self.ranges)


def keyword_terms(payload: Mapping) -> list[tuple[str, str]]:
    """(field, value) for every indexed keyword value of a payload (list fields give several)."""
    return [(field, str(value)) for field in KEYWORD_FIELDS for value in _values(payload.get(field))]


def integer_terms(payload: Mapping) -> list[tuple[str, int]]:
    return [(field, int(payload[field])) for field in INTEGER_FIELDS if payload.get(field) is not None]


@dataclass(frozen=True)
class StoreView:
    """What an embedded store holds, read from its files without opening it (no lock taken):
    its record's instance id, the number of the last catalog sync it completed, and its
    collections' point counts (None: present, not counted without opening it)."""

    instance: str | None
    generation: int | None
    counts: Mapping[str, int | None]


class StoreDamagedError(RadsearchError):
    """A store's files cannot be read (cut short, overwritten): rebuilt from the catalog."""


class StoreUnopenableError(RadsearchError):
    """A whole store that cannot be opened on its disk (full, or read-only) because opening it
    writes: a reader answers from the catalog instead, a writer stops."""


class Backend(ABC):
    """A vector store. Searching a collection that does not exist finds nothing.

    ``initialise`` and ``metadata`` keep one record per store (model, salt, instance id), so that
    every machine writing to a shared store agrees on them.
    """

    kind: ClassVar[str]
    # True when only one process may open the store at a time (radsearch then opens it briefly).
    exclusive: ClassVar[bool] = False

    @abstractmethod
    def create_collection(self, name: str, dim: int) -> None:
        """Create collection ``name`` of ``dim``-dimensional vectors unless it exists."""

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert points, replacing any with the same id (vector and payload)."""

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""

    @abstractmethod
    def search(
        self, collection: str, vector: np.ndarray, k: int, filter: PointFilter | None = None
    ) -> list[Hit]:
        """The k points with the highest inner product with ``vector`` that pass ``filter``,
        best first: min(k, number passing) hits, even under a selective filter."""

    @abstractmethod
    def fetch(
        self, collection: str, filter: PointFilter, limit: int, *, with_vectors: bool = False
    ) -> list[Record]:
        """Up to ``limit`` points that pass ``filter``, in no particular order."""

    @abstractmethod
    def count(self, collection: str, filter: PointFilter | None = None) -> int:
        """How many points pass ``filter`` (exactly)."""

    @abstractmethod
    def metadata(self) -> dict | None:
        """The store's record, or None before :meth:`initialise`."""

    @abstractmethod
    def initialise(self, record: dict) -> dict:
        """Keep ``record`` unless the store already has one; return the record that is kept."""

    @abstractmethod
    def update_record(self, changes: dict) -> None:
        """Change the store's record: each key of ``changes`` set to its value, or removed (and
        its old value overwritten where the store can) when the value is None."""

    def set_generation(self, value: int) -> None:
        """Record that the catalog's sync number ``value`` completed, so that a later look can
        tell this store from an older copy put back. A store that several catalogs write (a
        Qdrant cluster) keeps none: this default does nothing."""

    @abstractmethod
    def persist(self) -> None:
        """Make every change durable and searchable as fast as the store allows."""

    @abstractmethod
    def close(self) -> None:
        """Release files, locks and connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exact_search(
    vectors: np.ndarray, vector: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row indices) of the top k rows by inner product, best first; ties by row."""
    if len(vectors) == 0 or k <= 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    scores = vectors @ np.asarray(vector, dtype=np.float32)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    order = np.lexsort((top, -scores[top]))
    return scores[top[order]], top[order].astype(np.int64)
