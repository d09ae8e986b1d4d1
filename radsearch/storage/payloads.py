"""Catalog rows as back-end points: globally unique, stable ids and payloads that suffice alone.

A machine that did not index must be able to search a shared Qdrant cluster, so every payload
carries what a result shows, and ids depend only on content that every machine computes the same
way (never on a catalog's row numbers):

- images    uuid5(images, study key, file sha256, frame): study, series, path, frame, modality,
            body_part, view, study_date, study_day
- series    uuid5(series, series key): study, series, modality, body_part, view, study_date, study_day
- studies   uuid5(studies, study key): the study card - study, study_date, study_day, description,
            modality/body_part/view (lists over its images), preview (its first three images)
- sentences uuid5(sentences, study key, sha256 of the report, sentence index): text, section and
            the study card, so that report search filters and shows studies without a join

Study keys are salted hashes of Study Instance UIDs (or ``file:``/``dir:`` paths for PNG/JPEG) and
descriptions and report sentences were cleaned of their file's identifiers when read
(``reading.phi.Scrubber``), so payloads hold no patient-identifying value; the identifiers that
``--keep-phi`` keeps stay in the catalog's ``identifiers`` table, which nothing here reads. Keyword values are upper-cased (filters match exactly);
``study_day`` is the study date as an integer YYYYMMDD for range filters.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid

from radsearch.storage.backends.base import Point
from radsearch.storage.sqlite import chunks
from radsearch.storage.sqlite import marks as _marks
from radsearch.storage.vectors import read_by_ids

NAMESPACE = uuid.UUID("3b8f6a52-0d5e-5c1e-9a57-2f6c1d8e4b90")
PREVIEW_IMAGES = 3

# Each vector's version: its id (a changed vector gets a new id) and the study fields its payload
# copies, so that a changed study card re-sends the points that carry it.
_VERSION_SQL = {
    "images": "SELECT v.id, CAST(v.id AS TEXT) FROM vectors AS v WHERE v.collection = 'images'",
    "series": (
        "SELECT v.id, v.id || ':' || COALESCE(st.study_date, '') FROM vectors AS v "
        "JOIN series AS se ON se.id = v.ref_id JOIN studies AS st ON st.id = se.study_id "
        "WHERE v.collection = 'series'"
    ),
    "studies": "SELECT v.id, CAST(v.id AS TEXT) FROM vectors AS v WHERE v.collection = 'studies'",
    "sentences": (
        "SELECT v.id, v.id || ':' || COALESCE(sv.id, 0) || ':' || COALESCE(st.study_date, '') "
        "|| ':' || COALESCE(st.description, '') FROM vectors AS v "
        "JOIN sentences AS s ON s.id = v.ref_id JOIN studies AS st ON st.id = s.study_id "
        "LEFT JOIN vectors AS sv ON sv.collection = 'studies' AND sv.ref_id = s.study_id "
        "WHERE v.collection = 'sentences'"
    ),
}


def point_id(collection: str, *identity: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join([collection, *(str(part) for part in identity)])))


def study_point_id(study_key: str) -> str:
    return point_id("studies", study_key)


def study_day(date: str | None) -> int | None:
    """'YYYY-MM-DD' -> YYYYMMDD as an integer."""
    digits = (date or "").replace("-", "")
    return int(digits) if len(digits) == 8 and digits.isdigit() else None


def _upper(value: str | None) -> str | None:
    return value.strip().upper() if value and value.strip() else None


def versions(conn: sqlite3.Connection, collection: str) -> dict[int, str]:
    """Catalog vector id -> version, for every vector of ``collection``."""
    return dict(conn.execute(_VERSION_SQL[collection]).fetchall())


def build_points(
    conn: sqlite3.Connection, collection: str, vector_ids: list[int], dim: int
) -> list[tuple[int, Point]]:
    """(vector id, point) for the given catalog vectors of ``collection`` that still exist."""
    out: list[tuple[int, Point]] = []
    for chunk in chunks(vector_ids):
        rows = build_payloads(conn, collection, chunk)
        vectors = read_by_ids(conn, [vid for vid, _, _ in rows], dim)
        out += [(vid, Point(pid, vectors[i], payload))
                for i, (vid, pid, payload) in enumerate(rows)]
    return out


def build_payloads(conn: sqlite3.Connection, collection: str,
                   vector_ids: list[int]) -> list[tuple[int, str, dict]]:
    """(vector id, point id, payload) for the given catalog vectors that still exist."""
    builder = {"images": _images, "series": _series, "studies": _studies,
               "sentences": _sentences}[collection]
    out: list[tuple[int, str, dict]] = []
    for chunk in chunks(vector_ids):
        out += builder(conn, list(chunk))
    return out


def _images(conn: sqlite3.Connection, vector_ids: list[int]) -> list[tuple[int, str, dict]]:
    rows = conn.execute(
        "SELECT v.id, st.key AS study, se.key AS series, f.path, f.sha256, i.frame, i.modality, "
        "i.body_part, i.view, i.study_date FROM vectors AS v JOIN images AS i ON i.id = v.ref_id "
        "JOIN files AS f ON f.id = i.file_id JOIN series AS se ON se.id = i.series_id "
        f"JOIN studies AS st ON st.id = i.study_id WHERE v.id IN ({_marks(vector_ids)})",
        vector_ids,
    ).fetchall()
    return [
        (vid, point_id("images", study, sha or path, frame), {
            "study": study, "series": series, "path": path, "frame": frame,
            "modality": _upper(modality), "body_part": _upper(body_part), "view": _upper(view),
            "study_date": date, "study_day": study_day(date),
        })
        for vid, study, series, path, sha, frame, modality, body_part, view, date in rows
    ]


def _series(conn: sqlite3.Connection, vector_ids: list[int]) -> list[tuple[int, str, dict]]:
    rows = conn.execute(
        "SELECT v.id, st.key, se.key, se.modality, se.body_part, se.view, st.study_date "
        "FROM vectors AS v JOIN series AS se ON se.id = v.ref_id "
        f"JOIN studies AS st ON st.id = se.study_id WHERE v.id IN ({_marks(vector_ids)})",
        vector_ids,
    ).fetchall()
    return [
        (vid, point_id("series", series), {
            "study": study, "series": series, "modality": _upper(modality),
            "body_part": _upper(body_part), "view": _upper(view), "study_date": date,
            "study_day": study_day(date),
        })
        for vid, study, series, modality, body_part, view, date in rows
    ]


def _studies(conn: sqlite3.Connection, vector_ids: list[int]) -> list[tuple[int, str, dict]]:
    rows = conn.execute(
        f"SELECT id, ref_id FROM vectors WHERE id IN ({_marks(vector_ids)})", vector_ids
    ).fetchall()
    cards = study_cards(conn, [study_id for _, study_id in rows])
    return [(vid, study_point_id(cards[sid]["study"]), cards[sid]) for vid, sid in rows if sid in cards]


def _sentences(conn: sqlite3.Connection, vector_ids: list[int]) -> list[tuple[int, str, dict]]:
    rows = conn.execute(
        "SELECT v.id, s.study_id, s.section, s.idx, s.text, r.text FROM vectors AS v "
        "JOIN sentences AS s ON s.id = v.ref_id JOIN reports AS r ON r.id = s.report_id "
        f"WHERE v.id IN ({_marks(vector_ids)})",
        vector_ids,
    ).fetchall()
    cards = study_cards(conn, sorted({row[1] for row in rows}))
    out = []
    for vid, study_id, section, idx, text, report in rows:
        card = cards[study_id]
        digest = hashlib.sha256(report.encode("utf-8")).hexdigest()
        out.append((vid, point_id("sentences", card["study"], digest, idx),
                    {**card, "text": text, "section": section}))
    return out


def study_cards(conn: sqlite3.Connection, study_ids: list[int]) -> dict[int, dict]:
    """Catalog study id -> the study's card (see the module doc)."""
    cards: dict[int, dict] = {}
    for chunk in chunks(study_ids):
        chunk = list(chunk)
        marks = _marks(chunk)
        for sid, key, date, description in conn.execute(
            f"SELECT id, key, study_date, description FROM studies WHERE id IN ({marks})", chunk
        ):
            cards[sid] = {"study": key, "study_date": date, "study_day": study_day(date),
                          "description": description, "modality": set(), "body_part": set(),
                          "view": set(), "preview": []}
        for sid, modality, body_part, view in conn.execute(
            "SELECT DISTINCT study_id, modality, body_part, view FROM images "
            f"WHERE study_id IN ({marks})", chunk
        ):
            for field, value in (("modality", modality), ("body_part", body_part), ("view", view)):
                if _upper(value):
                    cards[sid][field].add(_upper(value))
        for sid, path, frame, modality, view in conn.execute(
            "SELECT study_id, path, frame, modality, view FROM (SELECT i.study_id, f.path, i.frame, "
            "i.modality, i.view, ROW_NUMBER() OVER (PARTITION BY i.study_id "
            "ORDER BY i.series_id, i.slice_order, i.id) AS rank FROM images AS i "
            f"JOIN files AS f ON f.id = i.file_id WHERE i.study_id IN ({marks})) "
            f"WHERE rank <= {PREVIEW_IMAGES} ORDER BY study_id, rank", chunk
        ):
            cards[sid]["preview"].append({"path": path, "frame": frame,
                                          "modality": _upper(modality), "view": _upper(view)})
    for card in cards.values():
        for field in ("modality", "body_part", "view"):
            card[field] = sorted(card[field])
    return cards
