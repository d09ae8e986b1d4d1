"""What drafters read and write: neighbours with their report sentences, draft lines, citations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from radsearch.encoders.base import Encoder


@dataclass(frozen=True)
class NeighbourSentence:
    section: str
    index: int  # position in the study's report, from 0
    text: str
    vector: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Neighbour:
    """An indexed study near the query, with its report split as the index stores it."""

    study: str
    score: float  # inner product of the query and the study's image embedding
    report: str
    sentences: tuple[NeighbourSentence, ...]


@dataclass(frozen=True)
class DraftLine:
    """A sentence a drafter writes, in a section; ``vector`` when it is a stored sentence's own."""

    section: str
    text: str
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)


class ReportSource(ABC):
    """The indexed reports as a whole, for drafters that look beyond the neighbours."""

    @abstractmethod
    def most_common_report(self) -> list[DraftLine]:
        """The corpus's most common report, sentence by sentence."""


class Drafter(ABC):
    """Writes a draft from the query's embedding and its neighbours (best first)."""

    name: str
    needs_image: bool = False  # writes from the query's pixels too: ``compose_image``

    @abstractmethod
    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        """The draft's sentences in report order."""

    def compose_image(self, pixels: np.ndarray, encoder: Encoder, query: np.ndarray,
                      neighbours: list[Neighbour], source: ReportSource) -> list[DraftLine]:
        """The same from the query image as the index's ``encoder`` reads it (uint8 ``(S, S)`` or
        ``(3, S, S)``), for drafters that look at the image itself (``needs_image``)."""
        return self.compose(query, neighbours, source)


@dataclass(frozen=True)
class Citation:
    neighbour: int  # 1-based position in the draft's neighbour list
    study: str
    sentence: str
    score: float


@dataclass(frozen=True)
class DraftSentence:
    text: str
    section: str
    citations: list[Citation]

    @property
    def supported(self) -> bool:
        return bool(self.citations)


@dataclass(frozen=True)
class NeighbourReport:
    study: str
    score: float
    report: str


@dataclass(frozen=True)
class Draft:
    query: str
    drafter: str
    draft: str
    sentences: list[DraftSentence]
    neighbours: list[NeighbourReport]

    def to_dict(self) -> dict:
        out = asdict(self)
        for sentence, raw in zip(self.sentences, out["sentences"]):
            raw["supported"] = sentence.supported
        return out
