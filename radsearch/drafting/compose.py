"""Draft the report of one study: the public ``draft`` function behind ``radsearch draft``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.drafting._registry import DEFAULT_DRAFTER, create_drafter
from radsearch.drafting.base import Draft, DraftSentence, Drafter, NeighbourReport, ReportSource
from radsearch.drafting.citations import cite
from radsearch.drafting.corpus import CatalogReports
from radsearch.drafting.neighbours import Exclusions, NeighbourFinder
from radsearch.encoders import Encoder
from radsearch.errors import RadsearchError
from radsearch.reports import PREAMBLE

if TYPE_CHECKING:
    from radsearch.index_handle import Index


class DraftSession:
    """Drafting over an open index: its neighbour finder and reports, read once, to draft many
    studies in a row."""

    def __init__(self, index: Index):
        self.index = index
        self.store = index.store
        self.finder = NeighbourFinder(index.store)
        self.reports: ReportSource = CatalogReports(index.store)

    @property
    def encoder(self) -> Encoder:
        return self.index.encoder

    def query(self, query: str | Path, same_patient: bool = False) -> tuple[np.ndarray, Exclusions]:
        """The query's embedding and what it may not be drafted from: an image file (read as
        ``index`` reads it) or an indexed study named by key, UID or file."""
        asked = self.index.query_vector(query)
        return asked.vector, self.finder.exclusions(asked.studies, [asked.patient], same_patient)

    def draft(self, query: str | Path, k: int, drafter: Drafter,
              same_patient: bool = False) -> Draft:
        vector, exclusions = self.query(query, same_patient)
        return self.draft_vector(str(query), vector, exclusions, k, drafter)

    def pixels(self, query: str) -> np.ndarray:
        """The query image as the index reads its images (a series: its middle frame), for drafters
        that write from the image itself."""
        from radsearch.reading import ReadError, SkipFile, read_file

        path = Path(query)
        if not path.is_file():
            raise RadsearchError(f"{query}: this drafter writes from the image: draft an image file")
        try:
            frames = read_file(path, image_size=self.encoder.image_size, salt=self.store.salt,
                               ct_windows=self.store.ct_windows).frames
        except (ReadError, SkipFile) as error:
            raise RadsearchError(f"{path}: {error}") from None
        if not frames:
            raise RadsearchError(f"{path}: holds no image")
        return frames[len(frames) // 2].pixels

    def draft_vector(self, label: str, vector: np.ndarray, exclusions: Exclusions, k: int,
                     drafter: Drafter) -> Draft:
        if k < 1:
            raise RadsearchError(f"k must be at least 1, got {k}")
        neighbours = self.finder.find(vector, k, exclusions)
        if drafter.needs_image:
            lines = drafter.compose_image(self.pixels(label), self.encoder, vector, neighbours,
                                          self.reports)
        else:
            lines = drafter.compose(vector, neighbours, self.reports)
        sentences = cite(lines, neighbours, lambda texts: self.encoder.encode_texts(texts))
        return Draft(
            query=label, drafter=drafter.name, draft=render(sentences), sentences=sentences,
            neighbours=[NeighbourReport(n.study, round(n.score, 4), n.report) for n in neighbours])


def render(sentences: list[DraftSentence]) -> str:
    """The draft as report text: one line per section, headed by its name except the text that
    comes before any heading in the neighbours' reports (``REPORT``)."""
    sections: dict[str, list[str]] = {}
    for sentence in sentences:
        sections.setdefault(sentence.section, []).append(sentence.text)
    return "\n".join(" ".join(texts) if name == PREAMBLE else f"{name}: {' '.join(texts)}"
                     for name, texts in sections.items())


def draft(
    query: str | Path,
    index: Path | None = None,
    k: int = 5,
    drafter: str = DEFAULT_DRAFTER,
    *,
    same_patient: bool = False,
    backend: str | None = None,
    url: str | None = None,
) -> Draft:
    """A first draft of the report of ``query`` — an image file (DICOM, series folder's file,
    PNG/JPEG) or an indexed study's key/UID/file — from its ``k`` nearest indexed studies that have
    reports; never the study itself, nor (unless ``same_patient``) another study of its patient.
    Every sentence cites the neighbour sentences that support it (``Draft.to_dict()``).
    ``backend``/``url``: see :func:`radsearch.retrieval.search` (the index's catalog is needed)."""
    from radsearch.index_handle import open_index

    create_drafter(drafter)  # an unknown drafter: one line before the index is opened
    with open_index(index, backend, url) as opened:
        return opened.draft(query, k=k, drafter=drafter, same_patient=same_patient)
