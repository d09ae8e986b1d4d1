"""The k indexed studies nearest a query that have reports, with their sentences and vectors.

Nearness is the back end's search over the study embeddings; the catalog says which studies have
reports, which belong to the query's patient (the salted patient hash) and holds every report
sentence with its vector. The query's own study is never a neighbour, nor by default another study
of the same patient: a draft must not be written from the answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from radsearch.storage.backends import PointFilter
from radsearch.drafting.base import Neighbour, NeighbourSentence
from radsearch.errors import RadsearchError
from radsearch.storage.store import Store
from radsearch.storage.vectors import read_by_ids


@dataclass(frozen=True)
class Exclusions:
    """Studies that must not be neighbours: the query's own, and studies of these patients."""

    studies: frozenset[str] = frozenset()
    patients: frozenset[str] = field(default_factory=frozenset)


class NeighbourFinder:
    """Finds neighbours in one open index; the list of reported studies is read once."""

    def __init__(self, store: Store):
        self.store = store
        with store.snapshot() as conn:
            self._reported = {row[0]: row[1] for row in conn.execute(
                "SELECT DISTINCT studies.key, studies.patient_hash FROM reports "
                "JOIN studies ON studies.id = reports.study_id")}
            indexed = conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        if not indexed:
            raise RadsearchError(f"{store.path}: the index is empty: index studies with reports first")
        if not self._reported:
            raise RadsearchError(f"{store.path}: no indexed study has a report, so there is nothing to "
                                 "draft from (index with --reports, or report files beside the images)")

    def exclusions(self, own_studies: Iterable[str], patients: Iterable[str | None] = (),
                   same_patient: bool = False) -> Exclusions:
        """The query's studies, and unless ``same_patient`` every study of the query's patients
        (those given and those of its own indexed studies)."""
        own = frozenset(own_studies)
        if same_patient:
            return Exclusions(own)
        with self.store.snapshot() as conn:
            known = _patients_of(conn, own)
        return Exclusions(own, frozenset(p for p in (*patients, *known) if p))

    def find(self, query: np.ndarray, k: int, exclusions: Exclusions) -> list[Neighbour]:
        """The k nearest allowed studies that have reports, best first."""
        allowed = [key for key, patient in self._reported.items()
                   if key not in exclusions.studies and patient not in exclusions.patients]
        if k > len(allowed):
            raise RadsearchError(
                f"k={k} is larger than the corpus: {len(allowed)} indexed studies with reports "
                "can be neighbours of this query (its own study and patient left out)")
        allowed_set = set(allowed)
        point_filter = PointFilter().excluding("study", sorted(exclusions.studies))
        fetch = max(4 * k, 32)
        while True:
            hits = self.store.backend.search("studies", query, fetch, point_filter)
            ranked = [(h.payload["study"], h.score) for h in hits if h.payload["study"] in allowed_set]
            if len(ranked) >= k or len(hits) < fetch:
                break
            fetch *= 4
        if len(ranked) < k:
            raise RadsearchError(f"{self.store.path}: the search back end holds {len(ranked)} of the "
                                 f"{len(allowed)} reported studies: run `radsearch index` to complete it")
        with self.store.snapshot() as conn:
            return [_neighbour(conn, study, score, self.store.dim) for study, score in ranked[:k]]


def _patients_of(conn: sqlite3.Connection, studies: frozenset[str]) -> set[str]:
    if not studies:
        return set()
    marks = ",".join("?" * len(studies))
    return {row[0] for row in conn.execute(
        f"SELECT patient_hash FROM studies WHERE key IN ({marks}) AND patient_hash IS NOT NULL",
        sorted(studies))}


def sentence_rows(conn: sqlite3.Connection, where: str, args: tuple) -> list[tuple]:
    """(sentence id, section, report id, text, vector id) of the sentences that ``where`` selects,
    in report order; a sentence without a vector (beyond a report's embedded length) is left out."""
    return conn.execute(
        "SELECT sentences.id, section, sentences.report_id, sentences.text, vectors.id FROM sentences "
        "JOIN vectors ON vectors.collection = 'sentences' AND vectors.ref_id = sentences.id "
        f"WHERE {where} ORDER BY sentences.report_id, sentences.idx", args).fetchall()


def _neighbour(conn: sqlite3.Connection, study: str, score: float, dim: int) -> Neighbour:
    study_id = conn.execute("SELECT id FROM studies WHERE key = ?", (study,)).fetchone()[0]
    reports = [row[0] for row in conn.execute(
        "SELECT text FROM reports WHERE study_id = ? ORDER BY id", (study_id,))]
    rows = sentence_rows(conn, "sentences.study_id = ?", (study_id,))
    vectors = read_by_ids(conn, [row[4] for row in rows], dim)
    sentences = tuple(NeighbourSentence(row[1], position, row[3], vectors[position])
                      for position, row in enumerate(rows))
    return Neighbour(study, float(score), "\n\n".join(reports), sentences)

