"""Draft the report of one study: the public ``draft`` function behind ``radsearch draft``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from radsearch.drafting._registry import DEFAULT_DRAFTER, create_drafter
from radsearch.drafting.base import Draft, DraftSentence, Drafter, NeighbourReport, ReportSource
from radsearch.drafting.citations import cite
from radsearch.drafting.corpus import CatalogReports
from radsearch.drafting.neighbours import Exclusions, NeighbourFinder
from radsearch.encoders import Encoder, create_model
from radsearch.errors import RadsearchError
from radsearch.query_embedding import embed_file
from radsearch.reports import PREAMBLE
from radsearch.retrieval import resolve_study_id, study_vector
from radsearch.storage.store import Store, default_index_path


class DraftSession:
    """An open index, its model and its reports, to draft many studies in a row."""

    def __init__(self, store: Store):
        self.store = store
        self.finder = NeighbourFinder(store)
        self.reports: ReportSource = CatalogReports(store)
        self._encoder: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = create_model(self.store.model_name)
            self.store.check_model(self._encoder.describe())
        return self._encoder

    def query(self, query: str | Path, same_patient: bool = False) -> tuple[np.ndarray, Exclusions]:
        """The query's embedding and what it may not be drafted from: an image file (read as
        ``index`` reads it) or an indexed study named by key, UID or file."""
        path = Path(query)
        if path.exists():
            vector, result = embed_file(path, self.encoder, self.store.salt,
                                        ct_windows=self.store.ct_windows)
            own = {result.study_uid_hash} if result.study_uid_hash else set()
            with self.store.snapshot() as conn:
                study_id = resolve_study_id(self.store, conn, os.path.abspath(path))
                if study_id is not None:
                    own.add(conn.execute("SELECT key FROM studies WHERE id = ?",
                                         (study_id,)).fetchone()[0])
            return vector, self.finder.exclusions(own, [result.patient_hash], same_patient)
        vector, study = study_vector(self.store, str(query))
        return vector, self.finder.exclusions({study}, (), same_patient)

    def draft(self, query: str | Path, k: int, drafter: Drafter,
              same_patient: bool = False) -> Draft:
        vector, exclusions = self.query(query, same_patient)
        return self.draft_vector(str(query), vector, exclusions, k, drafter)

    def draft_vector(self, label: str, vector: np.ndarray, exclusions: Exclusions, k: int,
                     drafter: Drafter) -> Draft:
        if k < 1:
            raise RadsearchError(f"k must be at least 1, got {k}")
        neighbours = self.finder.find(vector, k, exclusions)
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
) -> Draft:
    """A first draft of the report of ``query`` — an image file (DICOM, series folder's file,
    PNG/JPEG) or an indexed study's key/UID/file — from its ``k`` nearest indexed studies that have
    reports; never the study itself, nor (unless ``same_patient``) another study of its patient.
    Every sentence cites the neighbour sentences that support it (``Draft.to_dict()``)."""
    chosen = create_drafter(drafter)
    path = Path(index) if index is not None else default_index_path()
    with Store.open_for_reading(path) as store:
        return DraftSession(store).draft(query, k, chosen, same_patient)
