"""Reports: sidecar files, DICOM SR text and CSV rows become report rows with sentence vectors."""

from __future__ import annotations

import glob
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from radsearch.storage import catalog
from radsearch.encoders import Encoder
from radsearch.indexer import writer
from radsearch.indexer.discover import FoundFile
from radsearch.indexer.report_phi import deidentify_report
from radsearch.indexer.grouping import file_study, folder_study
from radsearch.reading import salted_hash
from radsearch.reports import (
    CsvMatch,
    CsvReport,
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
    # The image's own study, else whatever study grouped it (a CSV group).
    for image in sorted(path.parent.glob(glob.escape(path.stem) + ".*")):
        row = conn.execute(
            "SELECT id FROM studies WHERE key = ?", (file_study(str(image)),)
        ).fetchone() or conn.execute(
            "SELECT images.study_id FROM images JOIN files ON files.id = images.file_id "
            "WHERE files.path = ? AND files.kind IN ('png', 'jpeg', 'nifti') LIMIT 1",
            (str(image),),
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
            except Exception as error:  # noqa: BLE001 - one bad report is that file's failure
                detail = " ".join(str(error).split())[:200]
                failed.append((found, f"unexpected {type(error).__name__}"
                               + (f": {detail}" if detail else "")))
                continue
            study_id, reason = _target_study(conn, found)
            if study_id is None:
                failed.append((found, reason or "no study for this report"))
            else:
                ready.append((found, study_id, deidentify_report(conn, study_id, text)))
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


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _studies_of_files(conn: sqlite3.Connection, paths: list[str]) -> dict[str, dict[int, str]]:
    """For each indexed file among ``paths``: its images' studies, id -> key."""
    studies: dict[str, dict[int, str]] = {}
    for chunk in _chunks(paths, 500):
        rows = conn.execute(
            "SELECT DISTINCT files.path, studies.id, studies.key FROM images "
            "JOIN files ON files.id = images.file_id JOIN studies ON studies.id = images.study_id "
            f"WHERE files.path IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for path, study_id, key in rows:
            studies.setdefault(path, {})[int(study_id)] = key
    return studies


def _row_targets(
    conn: sqlite3.Connection, reports: CsvReports, matches: dict[str, CsvMatch], salt: str,
) -> tuple[dict[int, set[int]], dict[int, str]]:
    """(id(row) -> the studies it reports on, id(row) -> why a row has none though it covers images).

    A row keying an image reports on that image's study; a group row on its group's study; a row
    keying a folder on the folder's study - the one grouped by that key, else the only study there.
    """
    targets: dict[int, set[int]] = {}
    in_folder: dict[int, dict[int, str]] = {}
    preferred: dict[int, set[int]] = {}
    studies_of = _studies_of_files(conn, list(matches))
    for path, match in matches.items():
        row = id(match.report)
        studies = studies_of.get(path, {})
        if match.own or match.report.group is not None:
            targets.setdefault(row, set()).update(studies)
            continue
        in_folder.setdefault(row, {}).update(studies)
        keyed = folder_study(str(match.keyed))
        preferred.setdefault(row, set()).update(i for i, key in studies.items() if key == keyed)
    problems: dict[int, str] = {}
    for row, studies in in_folder.items():
        if preferred.get(row):
            targets.setdefault(row, set()).update(preferred[row])
        elif len(studies) == 1:
            targets.setdefault(row, set()).update(studies)
        elif len(studies) > 1:
            problems[row] = f"its folder holds {len(studies)} studies; a folder key needs exactly one"
    for key, row in reports.by_key.items():
        hashed = salted_hash(key, salt)
        found = conn.execute(
            "SELECT id FROM studies WHERE key IN (?, ?) ORDER BY key = ? DESC LIMIT 1",
            (hashed, key, hashed),
        ).fetchone()
        if found is not None:
            targets.setdefault(id(row), set()).add(int(found[0]))
    return targets, problems


def _why_unmatched(row: CsvReport, resolved: str | None, root: Path,
                   indexed_names: dict[str, str]) -> str:
    """Why a CSV row matched no indexed study, in words a user can act on."""
    if resolved is None:
        return ("no indexed study has this StudyInstanceUID, and the CSV's folder holds no file or "
                "folder of that name")
    target = Path(resolved)
    if not target.exists():
        why = f"looked for {target}, which does not exist (path keys are relative to the CSV's folder)"
        elsewhere = indexed_names.get(target.name)
        if elsewhere is not None:
            why += f"; an indexed file of that name is {elsewhere}"
        return why
    real_root = Path(os.path.realpath(root))
    if target != real_root and real_root not in target.parents:
        return f"{target} is outside the indexed folder {root}"
    return f"{target} holds no indexed image (see the failed and skipped files)"


def apply_csv_reports(
    conn: sqlite3.Connection,
    encoder: Encoder,
    reports: CsvReports,
    salt: str,
    matches: dict[str, CsvMatch],
    *,
    root: Path,
    indexed_names: dict[str, str] | None = None,
    on_warning: OnWarning | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Attach CSV report rows to their studies; returns (reports written, (key, why) of each row
    that matched no study).

    ``matches`` maps each discovered image to the row keying it or its folder (``CsvReports.match``);
    rows keyed by StudyInstanceUID are found by the study's hashed UID. A study reported on by several
    rows (a group, or an image and its folder's rows) gets their distinct texts joined in CSV order.
    Rows keyed above the indexed folder ``root`` are left out (the caller warns about them).
    ``indexed_names`` (file name -> a discovered image) lets a miss name the file the key may mean.
    A row indexed only in part is passed to ``on_warning`` with its key, as in ``index_report_files``.
    """
    refused = {id(row) for row in reports.keys_above(root)}
    targets, problems = _row_targets(conn, reports, matches, salt)
    resolved_of = {id(row): path for path, row in reports.by_path.items()}
    rows_of_study: dict[int, list[CsvReport]] = {}
    unmatched: list[tuple[str, str]] = []
    for row in reports.rows():
        if id(row) in refused:
            continue
        studies = targets.get(id(row))
        if not studies:
            why = problems.get(id(row)) or _why_unmatched(
                row, resolved_of.get(id(row)), root, indexed_names or {})
            unmatched.append((row.key, why))
        for study_id in studies or ():
            rows_of_study.setdefault(study_id, []).append(row)
    pending: list[tuple[int, str, str]] = []
    for study_id, rows in rows_of_study.items():
        text = deidentify_report(
            conn, study_id, "\n\n".join(dict.fromkeys(row.text for row in rows if row.text)))
        existing = conn.execute(
            "SELECT text FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,)
        ).fetchall()
        if not (len(existing) == 1 and existing[0]["text"] == text) and (text or existing):
            pending.append((study_id, rows[0].key, text))
    for chunk in _chunks(pending, _REPORTS_PER_TRANSACTION):
        splits = [split_report(text) for _, _, text in chunk]
        embedded = _embed_split(encoder, splits)
        with catalog.transaction(conn):
            for (study_id, _, text), (sentences, vectors) in zip(chunk, embedded):
                conn.execute("DELETE FROM reports WHERE study_id = ? AND source = 'csv'", (study_id,))
                conn.execute("UPDATE studies SET dirty = 1 WHERE id = ?", (study_id,))
                if text:
                    writer.put_report(conn, study_id=study_id, file_id=None, source="csv",
                                      text=text, sentences=sentences, vectors=vectors)
        _warn_truncated(on_warning, [key for _, key, _ in chunk], splits)
    return sum(1 for _, _, text in pending if text), unmatched
