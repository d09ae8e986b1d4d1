"""Reports: sidecar files, DICOM SR text and CSV rows become report rows with sentence vectors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from radsearch import catalog
from radsearch.encoders import Encoder
from radsearch.indexer import writer
from radsearch.indexer.discover import FoundFile
from radsearch.reading import salted_hash
from radsearch.reports import (
    CsvReports,
    ReportError,
    Sentence,
    read_report_file,
    report_sentences,
)


def study_key_for_image(path: str, own_study: bool) -> str:
    """Non-DICOM images: a study per folder, or a study of its own when it has its own report."""
    return f"file:{path}" if own_study else f"dir:{Path(path).parent}"


def embed_report(encoder: Encoder, text: str) -> tuple[list[Sentence], np.ndarray]:
    sentences = report_sentences(text)
    if not sentences:
        return [], np.zeros((0, encoder.dim), dtype=np.float32)
    return sentences, encoder.encode_texts([s.text for s in sentences])


def _target_study(conn: sqlite3.Connection, found: FoundFile) -> tuple[int | None, str | None]:
    path = Path(found.path)
    if path.stem.lower() == "report":
        rows = conn.execute(
            "SELECT DISTINCT images.study_id FROM images JOIN files ON files.id = images.file_id "
            "WHERE files.dir = ?",
            (found.dir,),
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0]), None
        if not rows:
            return None, "no indexed study in this report's folder"
        return None, f"its folder holds {len(rows)} studies; a folder report needs exactly one"
    for image in sorted(path.parent.glob(path.stem + ".*")):
        row = conn.execute(
            "SELECT id FROM studies WHERE key = ?", (study_key_for_image(str(image), True),)
        ).fetchone()
        if row is not None:
            return int(row[0]), None
    return None, "no indexed image for this report"


def index_report_file(conn: sqlite3.Connection, encoder: Encoder, found: FoundFile) -> str | None:
    """Index one sidecar report; returns the failure reason, or None when it was indexed."""
    try:
        text = read_report_file(Path(found.path))
    except ReportError as error:
        reason = str(error)
    except OSError as error:
        reason = f"unreadable: {error.strerror or error}"
    else:
        study_id, reason = _target_study(conn, found)
        if study_id is not None:
            sentences, vectors = embed_report(encoder, text)
            with catalog.transaction(conn):
                file_id = writer.put_file(conn, found, status="indexed", sha256=None)
                writer.forget_file_content(conn, file_id)
                writer.put_report(conn, study_id=study_id, file_id=file_id, source="sidecar",
                                  text=text, sentences=sentences, vectors=vectors)
            return None
    with catalog.transaction(conn):
        file_id = writer.put_file(conn, found, status="failed", sha256=None, reason=reason)
        writer.forget_file_content(conn, file_id)
    return reason


def apply_csv_reports(
    conn: sqlite3.Connection, encoder: Encoder, reports: CsvReports, salt: str
) -> tuple[int, list[str]]:
    """Attach CSV report rows to their studies; returns (reports written, keys that matched none)."""
    written = 0
    unmatched: list[str] = []
    entries = [(f"file:{path}", f"dir:{path}", row) for path, row in reports.by_path.items()]
    entries += [(salted_hash(key, salt), key, row) for key, row in reports.by_key.items()]
    for first, second, row in entries:
        found = conn.execute(
            "SELECT id FROM studies WHERE key IN (?, ?) ORDER BY key = ? DESC LIMIT 1",
            (first, second, first),
        ).fetchone()
        if found is None:
            unmatched.append(row.key)
            continue
        study_id = int(found[0])
        existing = conn.execute(
            "SELECT id, text FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,)
        ).fetchall()
        if len(existing) == 1 and existing[0]["text"] == row.text:
            continue
        sentences, vectors = embed_report(encoder, row.text)
        with catalog.transaction(conn):
            conn.execute("DELETE FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,))
            writer.put_report(conn, study_id=study_id, file_id=None, source="csv", text=row.text,
                              sentences=sentences, vectors=vectors)
        written += 1
    return written, unmatched
