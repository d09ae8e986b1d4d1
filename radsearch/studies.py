"""Read what an index holds: one study in full (`show`) and the index's counts (`stats`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from radsearch import runs
from radsearch.errors import RadsearchError
from radsearch.pacs_links import link_of_study, study_link
from radsearch.reading.phi import SERIES_ATTRIBUTES, STUDY_ATTRIBUTES
from radsearch.storage import catalog
from radsearch.storage.backends import PointFilter
from radsearch.storage.store import CT_WINDOWS_KEY, Store
from radsearch.study_refs import resolve_study_id

if TYPE_CHECKING:
    from radsearch.index_handle import Index


@dataclass
class SeriesDetail:
    series: str
    modality: str | None
    body_part: str | None
    view: str | None
    description: str | None
    manufacturer: str | None
    images: list[str]  # file paths (with #frame for multi-frame files), in slice order
    identifiers: dict[str, list[str]] = field(default_factory=dict)  # --keep-phi only


@dataclass
class ReportDetail:
    source: str
    text: str
    sentences: list[dict]


@dataclass
class StudyDetail:
    study: str
    study_date: str | None
    description: str | None
    series: list[SeriesDetail] = field(default_factory=list)
    reports: list[ReportDetail] = field(default_factory=list)
    # With --keep-phi: the study's identifying attributes in clear, keyword -> distinct values.
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    # Its link in its PACS or a viewer: $RADSEARCH_PACS_LINK (radsearch.pacs_links)
    link: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def show(ref: str, *, index: Path | None = None, backend: str | None = None,
         url: str | None = None) -> StudyDetail:
    """A study from its key, any of its UIDs, or one of its files; in an index built with
    --keep-phi also from its accession number, and shown with its identifying attributes.
    ``backend``/``url``: see :func:`radsearch.retrieval.search`."""
    from radsearch.index_handle import open_index

    with open_index(index, backend, url) as opened:
        return opened.show(ref)


def show_in(index: Index, ref: str) -> StudyDetail:
    """``Index.show``: from the catalog; from the store's points where there is none."""
    if not index.has_catalog:
        return _show_from_store(index, ref)
    store = index.store
    with store.snapshot() as conn:
        keeps_phi = catalog.keeps_phi(conn)
        study_id = resolve_study_id(store, conn, ref)
        if study_id is None and keeps_phi:
            study_id = _study_by_accession(conn, ref)
        if study_id is None:
            raise RadsearchError(f"{ref}: no indexed study, series, image or file with that id")
        study = conn.execute(
            "SELECT key, study_date, description FROM studies WHERE id = ?", (study_id,)
        ).fetchone()
        detail = StudyDetail(study["key"], study["study_date"], study["description"])
        if keeps_phi:
            detail.identifiers = _identifiers(conn, "study", study["key"], STUDY_ATTRIBUTES)
            detail.link = study_link(detail.identifiers)
        if detail.link is None:  # a PACS study's UID is found in the PACS
            detail.link = link_of_study(store.path, conn, study["key"])
        for series in conn.execute(
            "SELECT * FROM series WHERE study_id = ? ORDER BY series_number, id", (study_id,)
        ).fetchall():
            images = conn.execute(
                "SELECT files.path, images.frame, "
                "(SELECT COUNT(*) FROM images AS other WHERE other.file_id = images.file_id) "
                "AS frames FROM images JOIN files ON files.id = images.file_id "
                "WHERE images.series_id = ? ORDER BY images.slice_order, images.id",
                (series["id"],),
            ).fetchall()
            detail.series.append(
                SeriesDetail(
                    series=series["key"],
                    modality=series["modality"],
                    body_part=series["body_part"],
                    view=series["view"],
                    description=series["description"],
                    manufacturer=series["manufacturer"],
                    images=[
                        row["path"] if row["frames"] == 1 else f"{row['path']}#{row['frame']}"
                        for row in images
                    ],
                    identifiers=_identifiers(conn, "series", series["key"], SERIES_ATTRIBUTES)
                    if keeps_phi else {},
                )
            )
        for report in conn.execute(
            "SELECT id, source, text FROM reports WHERE study_id = ? ORDER BY id", (study_id,)
        ).fetchall():
            sentences = [
                {"section": row["section"], "text": row["text"]}
                for row in conn.execute(
                    "SELECT section, text FROM sentences WHERE report_id = ? ORDER BY idx",
                    (report["id"],),
                )
            ]
            detail.reports.append(ReportDetail(report["source"], report["text"], sentences))
    return detail


def _show_from_store(index: Index, ref: str) -> StudyDetail:
    """A study as a store searched without its catalog holds it: its card, its series and their
    images (by path; the catalog's slice order, series descriptions, reports and identifiers
    are not in the store)."""
    key = index.study_key(ref)
    backend = index.store.backend
    only = PointFilter.build(any_of={"study": [key]})
    cards = backend.fetch("studies", only, 1) or backend.fetch("sentences", only, 1)
    card = cards[0].payload if cards else {}
    detail = StudyDetail(key, card.get("study_date"), card.get("description"))
    images = [record.payload for record in
              backend.fetch("images", only, backend.count("images", only))]
    frames = Counter(image["path"] for image in images)
    for record in sorted(backend.fetch("series", only, backend.count("series", only)),
                         key=lambda record: record.payload["series"]):
        series = record.payload
        mine = sorted((image["path"], image["frame"]) for image in images
                      if image.get("series") == series["series"])
        detail.series.append(SeriesDetail(
            series=series["series"], modality=series.get("modality"),
            body_part=series.get("body_part"), view=series.get("view"), description=None,
            manufacturer=None,
            images=[path if frames[path] == 1 else f"{path}#{frame}" for path, frame in mine]))
    return detail


def _identifiers(conn, column: str, key: str, keywords: tuple[str, ...]) -> dict[str, list[str]]:
    """keyword -> the distinct values its files hold, for the files of one study or series."""
    values: dict[str, set[str]] = {}
    for (attributes,) in conn.execute(
        f"SELECT attributes FROM identifiers WHERE {column} = ?", (key,)
    ):
        for keyword, value in json.loads(attributes).items():
            values.setdefault(keyword, set()).add(value)
    return {keyword: sorted(values[keyword]) for keyword in keywords if keyword in values}


def _study_by_accession(conn, accession: str) -> int | None:
    rows = conn.execute(
        "SELECT DISTINCT studies.id FROM identifiers JOIN studies ON studies.key = identifiers.study "
        "WHERE json_extract(identifiers.attributes, '$.AccessionNumber') = ? LIMIT 2",
        (accession,),
    ).fetchall()
    if len(rows) > 1:
        raise RadsearchError(f"{accession}: several studies have this accession number: "
                             "name one by its Study Instance UID")
    return int(rows[0][0]) if rows else None


def _studies_by(conn, name: str) -> dict[str, int]:
    """Studies per value of a series field (modality, body_part), most studies first."""
    rows = conn.execute(
        f"SELECT COALESCE({name}, '') AS value, COUNT(DISTINCT study_id) AS studies FROM series "
        "GROUP BY value ORDER BY studies DESC, value").fetchall()
    return {row[0]: int(row[1]) for row in rows}


def stats(*, index: Path | None = None, backend: str | None = None,
          url: str | None = None) -> dict:
    """Counts (studies, series, images, reports, sentences, failed, ...), the model record and
    the last index run (``last_run``; None before the first recorded run).
    ``backend``/``url``: see :func:`radsearch.retrieval.search`."""
    from radsearch.index_handle import open_index

    with open_index(index, backend, url) as opened:
        return opened.stats()


def stats_in(index: Index) -> dict:
    """``Index.stats``: from the catalog; from the store's points where there is none (then the
    catalog's own counts - reports, failed and skipped files, runs - are None)."""
    store = index.store
    if not index.has_catalog:
        return {**_store_counts(store), "index": str(store.path), "backend": store.spec.describe(),
                "catalog": False, "model": _model(store.meta), "failures": [], "last_run": None}
    with store.snapshot() as conn:
        counts = catalog.counts(conn)
        by_field = {name: _studies_by(conn, name) for name in ("modality", "body_part")}
        meta = catalog.get_meta(conn)
        failures = [
            {"path": row["path"], "reason": row["reason"]}
            for row in conn.execute(
                "SELECT path, reason FROM files WHERE status = 'failed' ORDER BY path"
            )
        ]
        last_run = runs.last_run(conn)
    return {
        **counts,
        # studies per value (a study of CT and MR counts under both; "" = not recorded)
        "by_modality": by_field["modality"],
        "by_body_part": by_field["body_part"],
        "index": str(store.path),
        "backend": store.spec.describe(),
        "catalog": True,  # False: a store searched from a machine without the index's catalog
        "model": _model(meta),
        "failures": failures,
        # the newest index run: when, how long, its counts and failures (radsearch.runs.last_run)
        "last_run": last_run,
    }


def _model(meta: dict[str, str]) -> dict:
    return {
        "name": meta.get("model.name"),
        "weights_hash": meta.get("model.weights_hash"),
        "dim": int(meta["model.dim"]) if "model.dim" in meta else None,
        # None: a store's own record, read without the catalog, does not keep it
        "preprocessing": json.loads(meta["model.preprocessing"])
        if "model.preprocessing" in meta else None,
        "ct_windows": json.loads(meta.get(CT_WINDOWS_KEY) or "[]"),  # []: grayscale CT
    }


def _store_counts(store: Store) -> dict:
    """What a store holds without its catalog: points per collection, and studies per modality
    and body part from the study cards (the catalog's counts of its own are None)."""
    backend = store.backend
    counts = {name: backend.count(name) for name in ("studies", "series", "images", "sentences")}
    cards = [record.payload for record in
             backend.fetch("studies", PointFilter(), counts["studies"])] if counts["studies"] else []
    by_field = {}
    for name in ("modality", "body_part"):
        tally = Counter(value for card in cards for value in (card.get(name) or [""]))
        by_field[name] = dict(sorted(tally.items(), key=lambda item: (-item[1], item[0])))
    return {**counts, "reports": None, "failed": None, "skipped": None, "files": None,
            "by_modality": by_field["modality"], "by_body_part": by_field["body_part"]}
