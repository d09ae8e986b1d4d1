"""Read what an index holds: one study in full (`show`) and the index's counts (`stats`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radsearch import runs

from radsearch.storage import catalog
from radsearch.errors import RadsearchError
from radsearch.pacs_links import study_link
from radsearch.reading.phi import SERIES_ATTRIBUTES, STUDY_ATTRIBUTES
from radsearch.retrieval import resolve_study_id
from radsearch.storage.store import CT_WINDOWS_KEY, Store, default_index_path


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
    # Its link in its PACS or a viewer: $RADSEARCH_PACS_LINK, with --keep-phi (radsearch.pacs_links)
    link: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def show(ref: str, *, index: Path | None = None) -> StudyDetail:
    """A study from its key, any of its UIDs, or one of its files; in an index built with
    --keep-phi also from its accession number, and shown with its identifying attributes."""
    with Store.open_for_reading(Path(index) if index else default_index_path()) as store:
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


def stats(*, index: Path | None = None) -> dict:
    """Counts (studies, series, images, reports, sentences, failed, ...), the model record and
    the last index run (``last_run``; None before the first recorded run)."""
    path = Path(index) if index else default_index_path()
    with Store.open_for_reading(path) as store:
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
        "index": str(path),
        "backend": store.spec.describe(),
        "model": {
            "name": meta.get("model.name"),
            "weights_hash": meta.get("model.weights_hash"),
            "dim": int(meta["model.dim"]) if "model.dim" in meta else None,
            "preprocessing": json.loads(meta.get("model.preprocessing", "{}")),
            "ct_windows": json.loads(meta.get(CT_WINDOWS_KEY) or "[]"),  # []: grayscale CT
        },
        "failures": failures,
        # the newest index run: when, how long, its counts and failures (radsearch.runs.last_run)
        "last_run": last_run,
    }
