"""Search an index: text -> images or reports, image -> similar cases; results grouped by study."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from radsearch.encoders import Encoder, create_model
from radsearch.errors import RadsearchError
from radsearch.filters import Filters
from radsearch.store import Store, default_index_path

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


@dataclass
class SearchResults:
    query: str
    target: str
    hits: list[StudyHit]

    def to_dict(self) -> dict:
        return asdict(self)


def _query_encoder(store: Store) -> Encoder:
    encoder = create_model(store.model_name)
    store.check_model(encoder.describe())
    return encoder


def _open(index: Path | None) -> Store:
    return Store.open_for_reading(Path(index) if index is not None else default_index_path())


def search(
    text: str,
    *,
    index: Path | None = None,
    k: int = 10,
    filters: Filters | None = None,
    target: str = "images",
) -> SearchResults:
    """Text query -> the k best studies, by their images (``images``) or report sentences (``reports``)."""
    if target not in TARGETS:
        raise RadsearchError(f"unknown search target {target!r}: use one of {', '.join(TARGETS)}")
    if not text.strip():
        raise RadsearchError("empty query text")
    filters = filters or Filters()
    with _open(index) as store:
        query = _query_encoder(store).encode_texts([text])[0]
        with store.snapshot() as conn:
            if target == "images":
                hits = _image_search(store, conn, query, k, filters)
            else:
                hits = _sentence_search(store, conn, query, k, filters)
    return SearchResults(query=text, target=target, hits=hits)


def similar(
    query: str | Path,
    *,
    index: Path | None = None,
    k: int = 10,
    filters: Filters | None = None,
) -> SearchResults:
    """Cases similar to an image file (not necessarily indexed) or to an indexed study/series/image.

    The query's own study is left out of the results.
    """
    filters = filters or Filters()
    with _open(index) as store:
        with store.snapshot() as conn:
            path = Path(query)
            if path.exists():
                vector = _embed_file(store, path)
                exclude = _studies_of_file(conn, os.path.abspath(path))
            else:
                study_id = _resolve_study(store, conn, str(query))
                vector = _stored_vector(store, conn, "studies", study_id)
                exclude = {study_id}
            hits = _image_search(store, conn, vector, k, filters, exclude=exclude)
    return SearchResults(query=str(query), target="images", hits=hits)


def _embed_file(store: Store, path: Path) -> np.ndarray:
    from radsearch.reading import ReadError, SkipFile, read_file

    encoder = _query_encoder(store)
    try:
        result = read_file(path, image_size=encoder.image_size, salt=store.salt)
    except (ReadError, SkipFile) as error:
        raise RadsearchError(f"{path}: {error}") from None
    if not result.frames:
        raise RadsearchError(f"{path}: holds no image to compare")
    vectors = encoder.encode_images(np.stack([frame.pixels for frame in result.frames]))
    pooled = vectors.mean(axis=0)
    return pooled / max(float(np.linalg.norm(pooled)), 1e-12)


def _studies_of_file(conn: sqlite3.Connection, path: str) -> set[int]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT images.study_id FROM images JOIN files ON files.id = images.file_id "
            "WHERE files.path = ?",
            (path,),
        )
    }


def _stored_vector(store: Store, conn: sqlite3.Connection, collection: str, ref_id: int) -> np.ndarray:
    from radsearch.vectors import read_vectors

    try:
        return read_vectors(conn, collection, [ref_id], store.dim)[0]
    except KeyError:
        raise RadsearchError("that study has no image embedding to compare") from None


def resolve_study_id(store: Store, conn: sqlite3.Connection, ref: str) -> int | None:
    """A study from its key, a Study/Series/SOP Instance UID, or an indexed file's path."""
    from radsearch.reading import salted_hash

    hashed = salted_hash(ref, store.salt)
    for sql, value in (
        ("SELECT id FROM studies WHERE key = ?", ref),
        ("SELECT id FROM studies WHERE key = ?", hashed),
        ("SELECT study_id FROM series WHERE key = ?", hashed),
        ("SELECT study_id FROM images WHERE instance_key = ?", hashed),
        ("SELECT images.study_id FROM images JOIN files ON files.id = images.file_id "
         "WHERE files.path = ?", os.path.abspath(ref)),
        ("SELECT reports.study_id FROM reports JOIN files ON files.id = reports.file_id "
         "WHERE files.path = ?", os.path.abspath(ref)),
    ):
        row = conn.execute(sql + " LIMIT 1", (value,)).fetchone()
        if row is not None:
            return int(row[0])
    if len(ref) >= 8 and ref.isalnum():  # a unique prefix of a DICOM study's key, as listed
        rows = conn.execute(
            "SELECT id FROM studies WHERE substr(key, 1, ?) = ? LIMIT 2", (len(ref), ref)
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
    return None


def _resolve_study(store: Store, conn: sqlite3.Connection, ref: str) -> int:
    study_id = resolve_study_id(store, conn, ref)
    if study_id is None:
        raise RadsearchError(f"{ref}: no such file, and no indexed study, series or image with that id")
    return study_id


def _allowed_image_vectors(conn: sqlite3.Connection, filters: Filters) -> np.ndarray | None:
    if not filters.active:
        return None
    where, args = filters.image_sql("images")
    rows = conn.execute(
        "SELECT vectors.id FROM images JOIN vectors ON vectors.collection = 'images' "
        f"AND vectors.ref_id = images.id WHERE {where}",
        args,
    )
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def _grow_until_k_studies(search_fn, k: int, total: int, studies_of) -> list:
    """Fetch more neighbours until they cover k distinct studies (or the collection ends)."""
    fetch = max(k * 8, 32)
    while True:
        scores, ids = search_fn(fetch)
        rows = studies_of(scores, ids)
        distinct = {row[0] for row in rows}
        if len(distinct) >= k or fetch >= total or len(ids) < fetch:
            return rows
        fetch *= 4


def _image_search(
    store: Store,
    conn: sqlite3.Connection,
    vector: np.ndarray,
    k: int,
    filters: Filters,
    exclude: set[int] | None = None,
) -> list[StudyHit]:
    collection = store.collection("images")
    allowed = _allowed_image_vectors(conn, filters)
    exclude = exclude or set()

    def run(fetch: int):
        scores, ids = collection.search(vector[None, :], fetch, allowed)
        return scores[0], ids[0]

    def rows_for(scores: np.ndarray, ids: np.ndarray) -> list:
        info = _image_rows(conn, [int(i) for i in ids if i >= 0])
        return [
            (info[int(i)]["study_id"], float(s), info[int(i)])
            for s, i in zip(scores, ids)
            if i >= 0 and int(i) in info and info[int(i)]["study_id"] not in exclude
        ]

    rows = _grow_until_k_studies(run, k, collection.size, rows_for)
    grouped: dict[int, list] = {}
    for study_id, score, row in rows:
        grouped.setdefault(study_id, []).append((score, row))
    ranked = sorted(grouped.items(), key=lambda item: -item[1][0][0])[:k]
    hits = []
    for study_id, matches in ranked:
        hit = _study_hit(conn, study_id, matches[0][0])
        hit.images = [
            ImageHit(path=row["path"], frame=row["frame"], score=score, modality=row["modality"],
                     view=row["view"])
            for score, row in matches[:5]
        ]
        hits.append(hit)
    return hits


def _image_rows(conn: sqlite3.Connection, vector_ids: list[int]) -> dict[int, sqlite3.Row]:
    found: dict[int, sqlite3.Row] = {}
    for start in range(0, len(vector_ids), 900):
        chunk = vector_ids[start : start + 900]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT vectors.id AS vid, images.study_id, images.frame, images.modality, images.view, "
            "files.path FROM vectors JOIN images ON images.id = vectors.ref_id "
            "JOIN files ON files.id = images.file_id "
            f"WHERE vectors.collection = 'images' AND vectors.id IN ({marks})",
            chunk,
        ):
            found[row["vid"]] = row
    return found


def _sentence_search(
    store: Store, conn: sqlite3.Connection, vector: np.ndarray, k: int, filters: Filters
) -> list[StudyHit]:
    collection = store.collection("sentences")
    allowed = None
    if filters.active:
        where, args = filters.image_sql("images")
        allowed = np.fromiter(
            (row[0] for row in conn.execute(
                "SELECT vectors.id FROM sentences JOIN vectors ON vectors.collection = 'sentences' "
                "AND vectors.ref_id = sentences.id WHERE sentences.study_id IN "
                f"(SELECT study_id FROM images WHERE {where})",
                args,
            )),
            dtype=np.int64,
        )

    def run(fetch: int):
        scores, ids = collection.search(vector[None, :], fetch, allowed)
        return scores[0], ids[0]

    def rows_for(scores: np.ndarray, ids: np.ndarray) -> list:
        wanted = [int(i) for i in ids if i >= 0]
        info: dict[int, sqlite3.Row] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            for row in conn.execute(
                "SELECT vectors.id AS vid, sentences.study_id, sentences.text, sentences.section "
                "FROM vectors JOIN sentences ON sentences.id = vectors.ref_id "
                f"WHERE vectors.collection = 'sentences' AND vectors.id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                info[row["vid"]] = row
        return [(info[int(i)]["study_id"], float(s), info[int(i)])
                for s, i in zip(scores, ids) if int(i) in info]

    rows = _grow_until_k_studies(run, k, collection.size, rows_for)
    grouped: dict[int, list] = {}
    for study_id, score, row in rows:
        grouped.setdefault(study_id, []).append((score, row))
    ranked = sorted(grouped.items(), key=lambda item: -item[1][0][0])[:k]
    hits = []
    for study_id, matches in ranked:
        hit = _study_hit(conn, study_id, matches[0][0])
        hit.sentences = [
            SentenceHit(text=row["text"], section=row["section"], score=score)
            for score, row in matches[:3]
        ]
        hit.images = [
            ImageHit(path=row["path"], frame=row["frame"], score=0.0, modality=row["modality"],
                     view=row["view"])
            for row in conn.execute(
                "SELECT files.path, images.frame, images.modality, images.view FROM images "
                "JOIN files ON files.id = images.file_id WHERE images.study_id = ? "
                "ORDER BY images.series_id, images.slice_order LIMIT 3",
                (study_id,),
            )
        ]
        hits.append(hit)
    return hits


def _study_hit(conn: sqlite3.Connection, study_id: int, score: float) -> StudyHit:
    study = conn.execute(
        "SELECT key, study_date, description FROM studies WHERE id = ?", (study_id,)
    ).fetchone()
    series = conn.execute(
        "SELECT DISTINCT modality, body_part FROM series WHERE study_id = ?", (study_id,)
    ).fetchall()
    return StudyHit(
        study=study["key"],
        score=score,
        study_date=study["study_date"],
        description=study["description"],
        modalities=sorted({row["modality"] for row in series if row["modality"]}),
        body_parts=sorted({row["body_part"] for row in series if row["body_part"]}),
    )
