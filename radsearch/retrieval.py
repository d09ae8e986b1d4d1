"""Search an index: text -> images or reports, image -> similar cases; results grouped by study.

Results are built from the back end's payloads alone (see ``backends.payloads``), so the same code
answers from the local FAISS store, an embedded Qdrant, or a Qdrant cluster searched from a machine
that did not index it. The catalog is used only to resolve what the user names (a file, a UID).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.errors import RadsearchError
from radsearch.pacs_links import add_links
from radsearch.filters import Filters
from radsearch.storage.backends import Backend, Hit, PointFilter
from radsearch.storage.store import Store
from radsearch.terms import FIELDS, filter_values

if TYPE_CHECKING:
    from radsearch.index_handle import Index

TARGETS = ("images", "reports")


@dataclass
class ImageHit:
    path: str
    frame: int
    score: float
    modality: str | None
    view: str | None


@dataclass
class SentenceHit:
    text: str
    section: str
    score: float


@dataclass
class StudyHit:
    study: str
    score: float
    study_date: str | None
    description: str | None
    modalities: list[str]
    body_parts: list[str]
    images: list[ImageHit] = field(default_factory=list)
    sentences: list[SentenceHit] = field(default_factory=list)
    snippet: str | None = None  # image search: the start of the study's report (or caption)
    link: str | None = None  # the study in its PACS or viewer ($RADSEARCH_PACS_LINK)


@dataclass
class SearchResults:
    query: str
    target: str
    hits: list[StudyHit]
    # With no hits: for each filter no indexed study matches, the values the index holds for it
    # (``unmatched_filters``), e.g. {"view": ["AXIAL", "CORONAL"]}.
    unmatched_filters: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def search(
    text: str,
    *,
    index: Path | None = None,
    k: int = 10,
    filters: Filters | None = None,
    target: str = "images",
    backend: str | None = None,
    url: str | None = None,
) -> SearchResults:
    """Text query -> the k best studies, by their images (``images``) or report sentences (``reports``).

    ``backend``/``url`` search another store than the index's own (e.g. a Qdrant cluster)."""
    from radsearch.index_handle import open_index

    _check_question(text, target)  # before opening the index
    with open_index(index, backend, url) as opened:
        return opened.search(text, k=k, filters=filters, target=target)


def similar(
    query: str | Path,
    *,
    index: Path | None = None,
    k: int = 10,
    filters: Filters | None = None,
    backend: str | None = None,
    url: str | None = None,
) -> SearchResults:
    """Cases similar to an image file (not necessarily indexed) or to an indexed study/series/image.

    The query's own study is left out of the results.
    """
    from radsearch.index_handle import open_index

    with open_index(index, backend, url) as opened:
        return opened.similar(query, k=k, filters=filters)


def search_in(index: Index, text: str, *, k: int, filters: Filters | None,
              target: str) -> SearchResults:
    """``Index.search``: the text embedded with the index's model, searched in its store."""
    _check_question(text, target)
    point_filter = (filters or Filters()).point_filter()
    store = index.store
    query = index.encoder.encode_texts([text])[0]
    if target == "images":
        hits = add_snippets(store, image_search(store.backend, query, k, point_filter))
    else:
        hits = sentence_search(store.backend, query, k, point_filter)
    unmatched = {} if hits else unmatched_filters(store, filters)
    add_links(store, hits)
    return SearchResults(query=text, target=target, hits=hits, unmatched_filters=unmatched)


def _check_question(text: str, target: str) -> None:
    if target not in TARGETS:
        raise RadsearchError(f"unknown search target {target!r}: use one of {', '.join(TARGETS)}")
    if not text.strip():
        raise RadsearchError("empty query text")


def similar_in(index: Index, query: str | Path, *, k: int,
               filters: Filters | None) -> SearchResults:
    """``Index.similar``: the query's vector (a file embedded, or a study's stored vector) searched
    among the images of other studies."""
    point_filter = (filters or Filters()).point_filter()
    asked = index.query_vector(query)
    hits = add_snippets(index.store, image_search(
        index.store.backend, asked.vector, k, point_filter.excluding("study", sorted(asked.studies))))
    unmatched = {} if hits else unmatched_filters(index.store, filters)
    add_links(index.store, hits)
    return SearchResults(query=str(query), target="images", hits=hits, unmatched_filters=unmatched)


SNIPPET_CHARS = 160


def add_snippets(store: Store, hits: list[StudyHit]) -> list[StudyHit]:
    """Give each hit the start of its study's first report (a caption, for an image with one), so
    that an image result says what the study is; from the catalog (a store searched without one
    has the study description only)."""
    if store.conn is None or not hits:
        return hits
    with store.snapshot() as conn:
        for hit in hits:
            row = conn.execute(
                "SELECT reports.text FROM reports JOIN studies ON studies.id = reports.study_id "
                "WHERE studies.key = ? ORDER BY reports.id LIMIT 1", (hit.study,)).fetchone()
            if row is not None:
                text = " ".join(row[0].split())
                hit.snippet = text if len(text) <= SNIPPET_CHARS else \
                    text[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return hits


def unmatched_filters(store: Store, filters: Filters | None) -> dict[str, list[str]]:
    """For each filter that no indexed image matches on its own, the values the index holds for
    that field (``study_date``: the first and last date), so that `--view sagital` is answered
    with the views there are. Empty without a catalog (a cluster searched from elsewhere)."""
    if filters is None or not filters.active or store.conn is None:
        return {}
    out: dict[str, list[str]] = {}
    with store.snapshot() as conn:
        for name in FIELDS:
            typed = getattr(filters, name)
            if not typed or not typed.strip():
                continue
            held = [row[0] for row in conn.execute(
                f"SELECT DISTINCT {name} FROM images WHERE {name} IS NOT NULL ORDER BY {name}")]
            if not set(filter_values(name, typed)) & {value.upper() for value in held}:
                out[name] = held
        if filters.date_from or filters.date_to:
            first, last = conn.execute(
                "SELECT MIN(study_date), MAX(study_date) FROM images").fetchone()
            inside = first is not None and (filters.date_from or first) <= last and \
                (filters.date_to or last) >= first
            if not inside:
                out["study_date"] = [first, last] if first is not None else []
    return out


def _by_study(search_fn: Callable[[int], list[Hit]], k: int) -> list[tuple[str, list[Hit]]]:
    """Fetch more neighbours until they cover k distinct studies (or the collection ends); the
    k best studies with their hits, best first."""
    fetch = max(k * 8, 32)
    while True:
        hits = search_fn(fetch)
        grouped: dict[str, list[Hit]] = {}
        for hit in hits:
            grouped.setdefault(hit.payload["study"], []).append(hit)
        if len(grouped) >= k or len(hits) < fetch:
            return sorted(grouped.items(), key=lambda item: -item[1][0].score)[:k]
        fetch *= 4


def image_search(backend: Backend, vector: np.ndarray, k: int,
                 point_filter: PointFilter) -> list[StudyHit]:
    """The k best studies by their images, each with its five best matching images."""
    ranked = _by_study(lambda fetch: backend.search("images", vector, fetch, point_filter), k)
    keys = [study for study, _ in ranked]
    cards = {
        record.payload["study"]: record.payload
        for record in backend.fetch("studies", PointFilter.build(any_of={"study": keys}), len(keys))
    } if keys else {}
    hits = []
    for study, matches in ranked:
        # A study indexed but not yet aggregated has no card: describe it by its best image.
        hit = _study_hit(cards.get(study) or _card_of_image(matches[0].payload), matches[0].score)
        hit.images = [
            ImageHit(path=m.payload["path"], frame=m.payload["frame"], score=m.score,
                     modality=m.payload.get("modality"), view=m.payload.get("view"))
            for m in matches[:5]
        ]
        hits.append(hit)
    return hits


def sentence_search(backend: Backend, vector: np.ndarray, k: int,
                    point_filter: PointFilter) -> list[StudyHit]:
    """The k best studies by their report sentences, each with its three best sentences."""
    ranked = _by_study(lambda fetch: backend.search("sentences", vector, fetch, point_filter), k)
    hits = []
    for _, matches in ranked:
        card = matches[0].payload
        hit = _study_hit(card, matches[0].score)
        hit.sentences = [SentenceHit(text=m.payload["text"], section=m.payload["section"],
                                     score=m.score) for m in matches[:3]]
        hit.images = [ImageHit(path=image["path"], frame=image["frame"], score=0.0,
                               modality=image.get("modality"), view=image.get("view"))
                      for image in card.get("preview", [])]
        hits.append(hit)
    return hits


def _card_of_image(payload: dict) -> dict:
    return {
        "study": payload["study"], "study_date": payload.get("study_date"), "description": None,
        "modality": [payload["modality"]] if payload.get("modality") else [],
        "body_part": [payload["body_part"]] if payload.get("body_part") else [],
    }


def _study_hit(card: dict, score: float) -> StudyHit:
    return StudyHit(
        study=card["study"],
        score=score,
        study_date=card.get("study_date"),
        description=card.get("description"),
        modalities=list(card.get("modality") or []),
        body_parts=list(card.get("body_part") or []),
    )
