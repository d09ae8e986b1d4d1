"""Search an index: text -> images or reports, image -> similar cases; results grouped by study.

Results are built from the back end's payloads alone (see ``backends.payloads``), so the same code
answers from the local FAISS store, an embedded Qdrant, or a Qdrant cluster searched from a machine
that did not index it. The catalog is used only to resolve what the user names (a file, a UID).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from radsearch.storage.backends import Backend, BackendSpec, Hit, PointFilter
from radsearch.encoders import Encoder, create_model
from radsearch.errors import RadsearchError
from radsearch.query_embedding import embed_file
from radsearch.filters import Filters
from radsearch.terms import FIELDS, filter_values
from radsearch.storage.store import Store, default_index_path

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


def _query_encoder(store: Store) -> Encoder:
    encoder = create_model(store.model_name)
    store.check_model(encoder.describe())
    return encoder


def backend_spec(backend: str | None, url: str | None) -> BackendSpec | None:
    """The back end named on the command line, if any (else the index's recorded one is used)."""
    if backend is None and url is None:
        return None
    return BackendSpec(backend or "qdrant", url)


def _open(index: Path | None, backend: str | None, url: str | None) -> Store:
    path = Path(index) if index is not None else default_index_path()
    return Store.open_for_reading(path, backend_spec(backend, url))


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
    if target not in TARGETS:
        raise RadsearchError(f"unknown search target {target!r}: use one of {', '.join(TARGETS)}")
    if not text.strip():
        raise RadsearchError("empty query text")
    point_filter = (filters or Filters()).point_filter()
    with _open(index, backend, url) as store:
        query = _query_encoder(store).encode_texts([text])[0]
        if target == "images":
            hits = add_snippets(store, image_search(store.backend, query, k, point_filter))
        else:
            hits = sentence_search(store.backend, query, k, point_filter)
        unmatched = {} if hits else unmatched_filters(store, filters)
    return SearchResults(query=text, target=target, hits=hits, unmatched_filters=unmatched)


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
    point_filter = (filters or Filters()).point_filter()
    with _open(index, backend, url) as store:
        path = Path(query)
        if path.exists():
            vector, exclude = _embed_file(store, path)
        else:
            vector, study = study_vector(store, str(query))
            exclude = {study}
        hits = add_snippets(store, image_search(store.backend, vector, k,
                                                point_filter.excluding("study", sorted(exclude))))
        unmatched = {} if hits else unmatched_filters(store, filters)
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


def _embed_file(store: Store, path: Path) -> tuple[np.ndarray, set[str]]:
    """The file's pooled embedding, and the keys of its study (to leave out of the results)."""
    vector, result = embed_file(path, _query_encoder(store), store.salt,
                                ct_windows=store.ct_windows)
    own = {result.study_uid_hash} if result.study_uid_hash else set()
    if store.conn is not None:
        with store.snapshot() as conn:
            own |= _studies_of_file(conn, os.path.abspath(path))
    return vector, own


def _studies_of_file(conn: sqlite3.Connection, path: str) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT studies.key FROM images JOIN files ON files.id = images.file_id "
            "JOIN studies ON studies.id = images.study_id WHERE files.path = ?",
            (path,),
        )
    }


def study_vector(store: Store, ref: str) -> tuple[np.ndarray, str]:
    """The study vector of an indexed study, series or image named by key, UID or file path:
    from the catalog when this machine indexed it, else from the back end's studies."""
    from radsearch.reading import salted_hash
    from radsearch.storage.vectors import read_vectors

    if store.conn is not None:
        with store.snapshot() as conn:
            study_id = resolve_study_id(store, conn, ref)
            if study_id is not None:
                key = conn.execute("SELECT key FROM studies WHERE id = ?", (study_id,)).fetchone()[0]
                try:
                    return read_vectors(conn, "studies", [study_id], store.dim)[0], key
                except KeyError:
                    raise RadsearchError("that study has no image embedding to compare") from None
    keys = [ref, salted_hash(ref, store.salt)]
    for collection in ("studies", "series"):
        field = "study" if collection == "studies" else "series"
        found = store.backend.fetch(collection, PointFilter.build(any_of={field: keys}), 1)
        if found:
            study = found[0].payload["study"]
            records = store.backend.fetch("studies", PointFilter.build(any_of={"study": [study]}),
                                          1, with_vectors=True)
            if records:
                return records[0].vector, study
    raise RadsearchError(f"{ref}: no such file, and no indexed study, series or image with that id")


def resolve_study_id(store: Store, conn: sqlite3.Connection, ref: str) -> int | None:
    """A study from its key, a Study/Series/SOP Instance UID, or an indexed file's path."""
    from radsearch.reading import salted_hash

    # A PACS instance's key (dicomweb://..., dimse://...) is its path as it stands.
    path = ref if "://" in ref else os.path.abspath(ref)
    for sql, value in (
        ("SELECT id FROM studies WHERE key = ?", ref),
        ("SELECT images.study_id FROM images JOIN files ON files.id = images.file_id "
         "WHERE files.path = ?", path),
        ("SELECT reports.study_id FROM reports JOIN files ON files.id = reports.file_id "
         "WHERE files.path = ?", path),
    ):
        row = conn.execute(sql + " LIMIT 1", (value,)).fetchone()
        if row is not None:
            return int(row[0])
    # A UID last: hashing it needs the index's key, which a copy of the index may not have.
    hashed = salted_hash(ref, store.salt)
    for sql in ("SELECT id FROM studies WHERE key = ?", "SELECT study_id FROM series WHERE key = ?",
                "SELECT study_id FROM images WHERE instance_key = ?"):
        row = conn.execute(sql + " LIMIT 1", (hashed,)).fetchone()
        if row is not None:
            return int(row[0])
    hashed_part = ref.removeprefix("group:")  # a CSV group's study: "group:" + a salted hash
    if len(hashed_part) >= 8 and hashed_part.isalnum():  # a unique prefix of a key, as listed
        rows = conn.execute(
            "SELECT id FROM studies WHERE substr(key, 1, ?) = ? LIMIT 2", (len(ref), ref)
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
    return None


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
