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


_REPORTS_PER_TRANSACTION = 256


def study_key_for_image(path: str, own_study: bool) -> str:
    """Non-DICOM images: a study per folder, or a study of its own when it has its own report."""
    return f"file:{path}" if own_study else f"dir:{Path(path).parent}"


def embed_report(encoder: Encoder, text: str) -> tuple[list[Sentence], np.ndarray]:
    return embed_reports(encoder, [text])[0]


def embed_reports(encoder: Encoder, texts: list[str]) -> list[tuple[list[Sentence], np.ndarray]]:
    """Sentences of each report and their vectors, embedded in large batches across reports."""
    split = [report_sentences(text) for text in texts]
    flat = [sentence.text for sentences in split for sentence in sentences]
    vectors = encoder.encode_texts(flat) if flat else np.zeros((0, encoder.dim), dtype=np.float32)
    results, offset = [], 0
    for sentences in split:
        results.append((sentences, vectors[offset : offset + len(sentences)]))
        offset += len(sentences)
    return results


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


def index_report_files(
    conn: sqlite3.Connection, encoder: Encoder, files: list[FoundFile]
) -> list[tuple[str, str | None]]:
    """Index sidecar reports; returns (path, failure reason or None) for each file."""
    outcomes: list[tuple[str, str | None]] = []
    for chunk in _chunks(files, _REPORTS_PER_TRANSACTION):
        ready: list[tuple[FoundFile, int, str]] = []
        failed: list[tuple[FoundFile, str]] = []
        for found in chunk:
            try:
                text = read_report_file(Path(found.path))
            except ReportError as error:
                failed.append((found, str(error)))
                continue
            except OSError as error:
                failed.append((found, f"unreadable: {error.strerror or error}"))
                continue
            study_id, reason = _target_study(conn, found)
            if study_id is None:
                failed.append((found, reason or "no study for this report"))
            else:
                ready.append((found, study_id, text))
        embedded = embed_reports(encoder, [text for _, _, text in ready])
        with catalog.transaction(conn):
            for (found, study_id, text), (sentences, vectors) in zip(ready, embedded):
                file_id = writer.put_file(conn, found, status="indexed", sha256=None)
                writer.forget_file_content(conn, file_id)
                writer.put_report(conn, study_id=study_id, file_id=file_id, source="sidecar",
                                  text=text, sentences=sentences, vectors=vectors)
                outcomes.append((found.path, None))
            for found, reason in failed:
                file_id = writer.put_file(conn, found, status="failed", sha256=None, reason=reason)
                writer.forget_file_content(conn, file_id)
                outcomes.append((found.path, reason))
    return outcomes


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def apply_csv_reports(
    conn: sqlite3.Connection, encoder: Encoder, reports: CsvReports, salt: str
) -> tuple[int, list[str]]:
    """Attach CSV report rows to their studies; returns (reports written, keys that matched none)."""
    unmatched: list[str] = []
    pending: list[tuple[int, str]] = []
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
        existing = conn.execute(
            "SELECT text FROM reports WHERE study_id = ? AND source = 'csv'", (int(found[0]),)
        ).fetchall()
        if not (len(existing) == 1 and existing[0]["text"] == row.text):
            pending.append((int(found[0]), row.text))
    for chunk in _chunks(pending, _REPORTS_PER_TRANSACTION):
        embedded = embed_reports(encoder, [text for _, text in chunk])
        with catalog.transaction(conn):
            for (study_id, text), (sentences, vectors) in zip(chunk, embedded):
                conn.execute("DELETE FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,))
                writer.put_report(conn, study_id=study_id, file_id=None, source="csv", text=text,
                                  sentences=sentences, vectors=vectors)
    return len(pending), unmatched
