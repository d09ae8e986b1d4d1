"""The stages of an index run, each a function of its inputs that a source assembles
(indexer.pipeline for a folder, indexer.pacs for a PACS) and the runner times (indexer.runner):

- discover: ``discover.discover`` (or a PACS listing), then ``plan.plan_run``;
- ``record_unread``: files that are never read (unreadable, special, DICOMDIR) go on record;
- read: ``read_tasks`` then ``read_files`` (decoding worker processes);
- embed: ``embed_batch`` (frames and Structured Report text of decoded files);
- write: ``write_batch`` (catalog rows and vectors of one batch, in one transaction);
- reports: ``attach_reports`` (report files and reports CSV rows of a folder);
- aggregate: ``aggregate_run`` (prune, then series and study vectors);
- sync: ``sync_run`` (the search back end brought in step with the catalog).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radsearch.encoders import Encoder
from radsearch.indexer import aggregate, writer
from radsearch.indexer.discover import FoundFile
from radsearch.indexer.grouping import Grouping
from radsearch.indexer.plan import Plan
from radsearch.indexer.report_stage import apply_csv_reports, embed_report, index_report_files
from radsearch.indexer.script_guard import called_from_unguarded_script
from radsearch.indexer.summary import IndexSummary
from radsearch.indexer.worker import ReadOutcome, ReadTask, read_one, start_worker
from radsearch.reading import stack_frames
from radsearch.reading.field_values import safe_field_values
from radsearch.reports import CsvReports, Sentence
from radsearch.storage import catalog
from radsearch.storage.store import Store

DICOMDIR_REASON = "DICOMDIR: a directory of the media; the files it lists are read directly"


def record_unread(conn: sqlite3.Connection, plan: Plan, summary: IndexSummary) -> int:
    """Put on record, in one transaction, the files the plan never reads: unreadable ones
    (failed), special files and DICOMDIRs (skipped); returns how many."""
    with catalog.transaction(conn):
        for item in plan.bad:
            file_id = writer.put_file(conn, item, status="failed", sha256=None, reason=item.problem)
            writer.forget_file_content(conn, file_id)
            summary.failed += 1
            summary.failures.append((item.path, item.problem or "unreadable"))
        for item in plan.special:
            file_id = writer.put_file(conn, item, status="skipped", sha256=None, reason=item.problem)
            writer.forget_file_content(conn, file_id)
            summary.skipped += 1
            summary.skips.append((item.path, item.problem or "not a regular file"))
        for item in plan.dicomdirs:
            writer.put_file(conn, item, status="skipped", sha256=None, reason=DICOMDIR_REASON)
            summary.skipped += 1
            summary.skips.append((item.path, DICOMDIR_REASON))
    return len(plan.bad) + len(plan.special) + len(plan.dicomdirs)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def resolve_workers(asked: int | None, summary: IndexSummary) -> int:
    """Decoding processes: none when called from an unguarded script, which each would re-run."""
    workers = default_workers() if asked is None else asked
    if workers > 0 and called_from_unguarded_script():
        summary.warnings.append(
            "called from a script without `if __name__ == \"__main__\":`: files are decoded in this "
            "process (worker processes would run the script again); add the guard to use workers")
        return 0
    return workers


def read_tasks(plan: Plan, store: Store, encoder: Encoder) -> list[ReadTask]:
    """One task per file the plan reads, under the index's rules (salt, CT windows, --keep-phi)."""
    salt, ct_windows, keep_phi = store.salt, store.ct_windows, catalog.keeps_phi(store.conn)
    return [ReadTask(item.path, previous, encoder.image_size, salt, ct_windows=ct_windows,
                     keep_phi=keep_phi)
            for item, previous in plan.to_read]


def read_files(tasks: Iterable[ReadTask], workers: int) -> Iterator[ReadOutcome]:
    """Read outcomes as ``workers`` processes finish them (in this process when 0), with a
    bounded number of files in flight; closing the iterator stops the workers."""
    if workers <= 0:
        for task in tasks:
            yield read_one(task)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=start_worker, initargs=(os.getpid(),))
    try:
        queue = iter(tasks)
        pending: set[Future] = set()
        limit = workers * 4
        while True:
            while len(pending) < limit:
                task = next(queue, None)
                if task is None:
                    break
                pending.add(pool.submit(read_one, task))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        # Interrupted (Ctrl-C, an error downstream): drop the queued files instead of decoding them.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class EmbeddedFile:
    """A read outcome with its vectors: one per frame, and its Structured Report's sentences."""

    outcome: ReadOutcome
    vectors: np.ndarray
    report: tuple[list[Sentence], np.ndarray] | None = None


def embed_batch(encoder: Encoder, outcomes: list[ReadOutcome],
                batch_size: int) -> list[EmbeddedFile]:
    """Embed the frames of the decoded files among ``outcomes`` (``batch_size`` at a time) and
    their report text; every outcome comes back, those not decoded with no vectors."""
    counts = [len(o.result.frames) if o.status == "read" and o.result else 0 for o in outcomes]
    pixels = [frame.pixels for outcome, count in zip(outcomes, counts) if count
              for frame in outcome.result.frames]
    if pixels:
        vectors = np.concatenate([
            encoder.encode_images(stack_frames(pixels[start : start + batch_size]))
            for start in range(0, len(pixels), batch_size)
        ])
    else:
        vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    embedded, offset = [], 0
    for outcome, count in zip(outcomes, counts):
        text = outcome.result.report_text if outcome.status == "read" and outcome.result else None
        report = embed_report(encoder, text) if text else None
        embedded.append(EmbeddedFile(outcome, vectors[offset : offset + count], report))
        offset += count
    return embedded


def write_batch(conn: sqlite3.Connection, batch: list[EmbeddedFile], *,
                found: Mapping[str, FoundFile], grouping: Grouping, summary: IndexSummary) -> None:
    """Write a batch's files, their images, reports and vectors in one transaction, and count
    them in ``summary``; ``found`` maps each outcome's path to its found file."""
    with catalog.transaction(conn):
        for item in batch:
            _write_file(conn, item, found[item.outcome.path], grouping, summary)


def _write_file(conn: sqlite3.Connection, item: EmbeddedFile, found: FoundFile, grouping: Grouping,
                summary: IndexSummary) -> None:
    outcome = item.outcome
    if outcome.status == "unchanged":
        writer.touch_file(conn, found)
        summary.unchanged += 1
        return
    status = {"read": "indexed", "skipped": "skipped", "failed": "failed"}[outcome.status]
    file_id = writer.put_file(conn, found, status=status, sha256=outcome.sha256,
                              reason=outcome.reason)
    writer.forget_file_content(conn, file_id)
    if outcome.status == "failed":
        summary.failed += 1
        summary.failures.append((found.path, outcome.reason or "unreadable"))
        return
    if outcome.status == "skipped":
        summary.skipped += 1
        summary.skips.append((found.path, outcome.reason or ""))
        return
    result = outcome.result
    assert result is not None
    summary.warnings += [f"{found.path}: {warning}" for warning in result.warnings]
    study_key, series_key, metadata = grouping.place(found, result)
    metadata = safe_field_values(metadata)  # no identifier typed into a metadata field
    study_id = writer.put_study(
        conn, study_key, patient_hash=result.patient_hash,
        study_date=metadata.get("study_date"), description=metadata.get("study_description"),
    )
    if item.report is not None:
        sentences, sentence_vectors = item.report
        writer.put_report(conn, study_id=study_id, file_id=file_id, source="sr",
                          text=result.report_text, sentences=sentences, vectors=sentence_vectors)
        summary.reports += 1
    if result.frames:
        series_id = writer.put_series(conn, series_key, study_id, metadata)
        writer.put_images(conn, file_id=file_id, study_id=study_id, series_id=series_id,
                          result=result, metadata=metadata, vectors=item.vectors)
        summary.images += len(result.frames)
    if outcome.identifiers:
        writer.put_identifiers(conn, file_id, study=study_key,
                               series=series_key if result.frames else None,
                               identifiers=outcome.identifiers)
    summary.indexed += 1


def attach_reports(conn: sqlite3.Connection, encoder: Encoder, plan: Plan,
                   csv_reports: CsvReports | None, *, salt: str, found: list[FoundFile],
                   root: Path, summary: IndexSummary, sharded: bool = False) -> int:
    """Index a folder's report files, then attach the reports CSV's rows to their studies; say
    in ``summary`` what failed or did not fit. Returns the number of report files and CSV rows
    handled."""
    def warn(path: str, message: str) -> None:
        summary.warnings.append(f"{path}: {message}")

    for path, reason in index_report_files(conn, encoder, plan.reports, on_warning=warn):
        if reason is None:
            summary.reports += 1
        else:
            summary.failed += 1
            summary.failures.append((path, reason))
    if csv_reports is None:
        return len(plan.reports)
    summary.warnings += csv_reports.warnings
    name = csv_reports.source
    above = csv_reports.keys_above(root)
    if above:
        lines = ", ".join(str(row.line) for row in above[:3]) + (", ..." if len(above) > 3 else "")
        summary.warnings.append(
            f"{len(above)} report row(s) of {name} (line {lines}, e.g. {above[0].key!r}) key a folder "
            f"above the indexed folder {root}: ignored, a key names a study inside it")
    indexed_names = {Path(item.path).name: item.path for item in found if item.is_image}
    written, unmatched = apply_csv_reports(conn, encoder, csv_reports, salt,
                                           plan.grouping.matches, root=root,
                                           indexed_names=indexed_names, on_warning=warn)
    summary.reports += written
    if unmatched:
        key, why = unmatched[0]
        others = " (rows of other shards are expected among them)" if sharded else ""
        summary.warnings.append(
            f"{len(unmatched)} report row(s) of {name} matched no indexed study, e.g. {key}: "
            f"{why}{others}")
    grouped = plan.grouping.grouped
    if grouped:
        studies = len({plan.grouping.keys[path] for path in grouped})
        summary.notes.append(f"{len(grouped)} PNG/JPEG image(s) grouped into {studies} "
                             f"studies by the CSV column {csv_reports.group_column!r}")
    return len(plan.reports) + len(csv_reports.rows())


def aggregate_run(conn: sqlite3.Connection, encoder: Encoder, plan: Plan, *, dim: int,
                  prune: bool, summary: IndexSummary) -> int:
    """Remove (``prune``) or count the files gone since the last run, then recompute the vectors of
    the series and studies this run changed; returns how many were recomputed."""
    if prune:
        with catalog.transaction(conn):
            for path in plan.gone:
                writer.remove_file(conn, path)
        summary.removed = len(plan.gone)
    else:
        summary.missing = len(plan.gone)
    series = aggregate.update_series(conn, dim, encoder.pool_slices)
    return series + aggregate.update_studies(conn, dim)


def sync_run(store: Store, summary: IndexSummary) -> int:
    """Bring the search back end in step with the catalog; returns the points sent and deleted."""
    moved = 0
    for counts in store.sync_backend().values():
        summary.sent += counts.sent
        summary.deleted += counts.deleted
        moved += counts.sent + counts.deleted
    return moved
