"""Reports: sidecar files, DICOM SR text and CSV rows become report rows with sentence vectors."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
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
    SplitReport,
    read_report_file,
    split_report,
)

_REPORTS_PER_TRANSACTION = 256

# Called with (what the warning is about: a report file's path or a CSV key, one-line warning).
OnWarning = Callable[[str, str], None]


def study_key_for_image(path: str, own_study: bool) -> str:
    """Non-DICOM images: a study per folder, or a study of its own when it has its own report."""
    return f"file:{path}" if own_study else f"dir:{Path(path).parent}"


def embed_report(encoder: Encoder, text: str) -> tuple[list[Sentence], np.ndarray]:
    return embed_reports(encoder, [text])[0]


def embed_reports(encoder: Encoder, texts: list[str]) -> list[tuple[list[Sentence], np.ndarray]]:
    """Sentences of each report and their vectors, embedded in large batches across reports."""
    return _embed_split(encoder, [split_report(text) for text in texts])


def _embed_split(
    encoder: Encoder, splits: list[SplitReport]
) -> list[tuple[list[Sentence], np.ndarray]]:
    flat = [sentence.text for split in splits for sentence in split.sentences]
    vectors = encoder.encode_texts(flat) if flat else np.zeros((0, encoder.dim), dtype=np.float32)
    results, offset = [], 0
    for split in splits:
        results.append((split.sentences, vectors[offset : offset + len(split.sentences)]))
        offset += len(split.sentences)
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
    conn: sqlite3.Connection,
    encoder: Encoder,
    files: list[FoundFile],
    *,
    on_warning: OnWarning | None = None,
) -> list[tuple[str, str | None]]:
    """Index sidecar reports; returns (path, failure reason or None) for each file.

    A report indexed only in part (over ``MAX_REPORT_SENTENCES``) is passed to ``on_warning``
    with one line saying so, once its transaction has committed.
    """
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
        splits = [split_report(text) for _, _, text in ready]
        embedded = _embed_split(encoder, splits)
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
        _warn_truncated(on_warning, [found.path for found, _, _ in ready], splits)
    return outcomes


def _warn_truncated(on_warning: OnWarning | None, names: list[str], splits: list[SplitReport]) -> None:
    if on_warning is None:
        return
    for name, split in zip(names, splits):
        if split.truncation is not None:
            on_warning(name, split.truncation)


def _studies_by_real_path(conn: sqlite3.Connection) -> dict[tuple[str, str], list[int]]:
    """Studies keyed by a file ("file:...") or folder ("dir:..."), by that path's real location.

    CSV paths are resolved; discovered paths are not: under a symlinked folder, they differ.
    """
    studies: dict[tuple[str, str], list[int]] = {}
    rows = conn.execute(
        "SELECT id, key FROM studies WHERE key LIKE 'file:%' OR key LIKE 'dir:%' ORDER BY id"
    )
    for study_id, key in rows:
        kind, _, path = key.partition(":")
        studies.setdefault((kind, os.path.realpath(path)), []).append(int(study_id))
    return studies


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def apply_csv_reports(
    conn: sqlite3.Connection,
    encoder: Encoder,
    reports: CsvReports,
    salt: str,
    *,
    on_warning: OnWarning | None = None,
) -> tuple[int, list[str]]:
    """Attach CSV report rows to their studies; returns (reports written, keys that matched none).

    A row indexed only in part is passed to ``on_warning`` with its key, as in ``index_report_files``.
    """
    unmatched: list[str] = []
    pending: list[tuple[int, str, str]] = []
    by_path = _studies_by_real_path(conn)
    targets = [
        (by_path.get(("file", path)) or by_path.get(("dir", path)) or [], row)
        for path, row in reports.by_path.items()
    ]
    for key, row in reports.by_key.items():
        hashed = salted_hash(key, salt)
        found = conn.execute(
            "SELECT id FROM studies WHERE key IN (?, ?) ORDER BY key = ? DESC LIMIT 1",
            (hashed, key, hashed),
        ).fetchone()
        targets.append(([int(found[0])] if found else [], row))
    for study_ids, row in targets:
        if not study_ids:
            unmatched.append(row.key)
        for study_id in study_ids:
            existing = conn.execute(
                "SELECT text FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,)
            ).fetchall()
            if not (len(existing) == 1 and existing[0]["text"] == row.text):
                pending.append((study_id, row.key, row.text))
    for chunk in _chunks(pending, _REPORTS_PER_TRANSACTION):
        splits = [split_report(text) for _, _, text in chunk]
        embedded = _embed_split(encoder, splits)
        with catalog.transaction(conn):
            for (study_id, _, text), (sentences, vectors) in zip(chunk, embedded):
                conn.execute("DELETE FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,))
                writer.put_report(conn, study_id=study_id, file_id=None, source="csv", text=text,
                                  sentences=sentences, vectors=vectors)
        _warn_truncated(on_warning, [key for _, key, _ in chunk], splits)
    return len(pending), unmatched
