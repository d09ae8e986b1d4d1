"""The index run: discover -> read (worker processes) -> embed (batched) -> write -> aggregate.

Workers decode files while the main process embeds the previous batch, so a compressed archive's
decoding overlaps the model. Every group of files is written in one transaction together with its
vectors: a run killed at any moment leaves a catalog that opens and answers, and the next run
skips what was written and finishes the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radsearch import runs

from radsearch.storage import catalog
from radsearch.storage.backends import BackendSpec
from radsearch.diskspace import disk_full_named
from radsearch.encoders import DEFAULT_MODEL, Encoder, create_model
from radsearch.errors import RadsearchError
from radsearch.indexer import aggregate, writer
from radsearch.indexer.discover import FoundFile, Shard, ShardFilter, check_root, discover
from radsearch.indexer.grouping import Grouping, StoredStudy, group_images
from radsearch.indexer.report_stage import (
    apply_csv_reports,
    embed_report,
    index_report_files,
)
from radsearch.indexer.script_guard import called_from_unguarded_script
from radsearch.indexer.worker import ReadOutcome, ReadTask, read_one, start_worker
from radsearch.reading import CtWindow, parse_ct_windows, stack_frames
from radsearch.reading.field_values import safe_field_values
from radsearch.reports import CsvReports, load_reports_csv
from radsearch.storage.store import Store, default_index_path

DICOMDIR_REASON = "DICOMDIR: a directory of the media; the files it lists are read directly"


@dataclass
class IndexSummary:
    """What one run did. ``failures`` and ``skips`` are (path, reason) pairs of this run."""

    index: str
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    removed: int = 0
    missing: int = 0
    images: int = 0
    reports: int = 0
    backend: str = ""
    sent: int = 0  # points sent to the back end by this run
    deleted: int = 0  # points deleted from it
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)
    # Files skipped as neither images nor reports, by kind ({".bval": 2, ".tar.gz": 1}); not in
    # ``skipped``, which counts the files the catalog records as skipped
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how images were grouped into studies

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        data["skips"] = [{"path": p, "reason": r} for p, r in self.skips]
        return data


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    images: int


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def index_folder(
    root: Path,
    *,
    index: Path | None = None,
    reports: Path | None = None,
    workers: int | None = None,
    prune: bool = False,
    model: str = DEFAULT_MODEL,
    batch_size: int = 32,
    backend: str | None = None,
    url: str | None = None,
    backend_options: dict | None = None,
    shard: str | None = None,
    ct_windows: str | Sequence[CtWindow] | None = None,
    keep_phi: bool = False,
    group_by: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> IndexSummary:
    """Index every study under ``root`` into ``index`` (created when absent); see the module doc.

    ``backend`` (faiss | qdrant-edge | qdrant, with ``url``) and ``backend_options`` choose where the
    vectors are searched; the choice is recorded, so later runs and searches need not repeat it.
    ``shard`` "i/n" indexes only the studies of shard i of n (see ``discover.Shard``), so that n
    machines fill one Qdrant cluster without duplicates or gaps.
    ``ct_windows`` renders grayscale CT in three Hounsfield windows, one per model input channel:
    ``"chest"``, ``"head"``, three window names, or ``"none"`` (see ``reading.parse_ct_windows``);
    fixed when the index is created, and None (the default) uses the index's choice.
    ``keep_phi`` (an explicit opt-in, recorded: a later run must repeat it) also stores each DICOM
    file's identifying attributes in clear in the catalog (``reading.phi.KEPT_ATTRIBUTES``), for
    ``show``; never in a vector payload. By default identifiers are kept only as salted hashes
    (``reading.phi`` says what is kept).
    ``group_by`` names the reports CSV's column whose value groups PNG/JPEG images into studies
    (default: the first present of ``reports.GROUP_COLUMNS``); ``indexer.grouping`` has the rules.
    """
    started, started_at = time.perf_counter(), time.time()
    index = Path(index) if index is not None else default_index_path()
    root = Path(os.path.abspath(root))
    check_root(root)  # a typo is refused before the index is opened: nothing of it is recorded
    if group_by is not None and reports is None:
        raise RadsearchError("--group-by names a column of the reports CSV: give --reports too")
    csv_reports = load_reports_csv(Path(reports), group_by=group_by) if reports is not None else None
    spec = _backend_spec(backend, url, backend_options)
    parsed_shard = Shard.parse(shard) if shard is not None else None
    windows = parse_ct_windows(ct_windows) if ct_windows is not None else None
    encoder = create_model(model)
    summary = IndexSummary(index=str(index))
    with disk_full_named(index), Store.open_for_writing(index, encoder.describe(), spec,
                                None if parsed_shard is None else str(parsed_shard),
                                ct_windows=windows, keep_phi=keep_phi) as store:
        summary.backend = store.spec.describe()
        # Its own transaction: a run stopped before its end stays on record as unfinished.
        run_id = runs.record_start(store.conn, str(root), summary.backend, started_at)
        summary.warnings += store.repairs
        if store.switched_from is not None:
            summary.warnings.append(
                f"back end changed from {store.switched_from.describe()} to {summary.backend}: "
                "every vector is sent to the new one")
        conn = store.conn
        found = discover(root)
        if not any(item.kind != "other" for item in found):
            summary.warnings.append(f"{root}: nothing to index was found there (no DICOM, PNG, "
                                    "JPEG or report file)")
        shard_filter = ShardFilter(parsed_shard, root, found) if parsed_shard else None
        plan = _plan(conn, found, root, csv_reports, summary, shard_filter, store.salt)
        _record_bad_files(conn, plan.bad, plan.special, summary)
        _read_embed_write(
            store, encoder, plan,
            workers=_workers(workers, summary),
            batch_size=batch_size, summary=summary, on_progress=on_progress,
        )
        def warn(path: str, message: str) -> None:
            summary.warnings.append(f"{path}: {message}")

        for path, reason in index_report_files(conn, encoder, plan.reports, on_warning=warn):
            if reason is None:
                summary.reports += 1
            else:
                summary.failed += 1
                summary.failures.append((path, reason))
        if csv_reports is not None:
            _apply_csv(conn, encoder, csv_reports, store.salt, plan, found, root, summary, warn,
                       others=" (rows of other shards are expected among them)" if parsed_shard else "")
        finish_run(store, encoder, plan, prune=prune, summary=summary, run_id=run_id, started=started)
    summary.seconds = time.perf_counter() - started
    return summary


def finish_run(store: Store, encoder: Encoder, plan: "_Plan", *, prune: bool,
               summary: IndexSummary, run_id: int, started: float) -> None:
    """The end of every run, from a folder or a PACS: remove (``prune``) or count what is gone,
    recompute series and studies, bring the back end in step, and put the run's end on record."""
    conn = store.conn
    if prune:
        with catalog.transaction(conn):
            for path in plan.gone:
                writer.remove_file(conn, path)
        summary.removed = len(plan.gone)
    else:
        summary.missing = len(plan.gone)
    aggregate.update_series(conn, store.dim, encoder.pool_slices)
    aggregate.update_studies(conn, store.dim)
    for counts in store.sync_backend().values():
        summary.sent += counts.sent
        summary.deleted += counts.deleted
    runs.record_end(conn, run_id, time.time(), time.perf_counter() - started,
                    {name: getattr(summary, name) for name in runs.COUNTS})


def _apply_csv(conn, encoder: Encoder, csv_reports: CsvReports, salt: str, plan: "_Plan",
               found: list[FoundFile], root: Path, summary: IndexSummary,
               warn: Callable[[str, str], None], *, others: str) -> None:
    """Attach the CSV's reports and say in the summary what did not fit and how images grouped."""
    summary.warnings += csv_reports.warnings
    name = csv_reports.source
    above = csv_reports.keys_above(root)
    if above:
        lines = ", ".join(str(row.line) for row in above[:3]) + (", ..." if len(above) > 3 else "")
        summary.warnings.append(
            f"{len(above)} report row(s) of {name} (line {lines}, e.g. {above[0].key!r}) key a folder "
            f"above the indexed folder {root}: ignored, a key names a study inside it")
    indexed_names = {Path(item.path).name: item.path for item in found if item.is_image}
    written, unmatched = apply_csv_reports(conn, encoder, csv_reports, salt, plan.grouping.matches,
                                           root=root, indexed_names=indexed_names, on_warning=warn)
    summary.reports += written
    if unmatched:
        key, why = unmatched[0]
        summary.warnings.append(
            f"{len(unmatched)} report row(s) of {name} matched no indexed study, e.g. {key}: "
            f"{why}{others}")
    grouped = plan.grouping.grouped
    if grouped:
        studies = len({plan.grouping.keys[path] for path in grouped})
        summary.notes.append(f"{len(grouped)} PNG/JPEG image(s) grouped into {studies} "
                             f"studies by the CSV column {csv_reports.group_column!r}")


def _workers(asked: int | None, summary: IndexSummary) -> int:
    """Decoding processes: none when called from an unguarded script, which each would re-run."""
    workers = default_workers() if asked is None else asked
    if workers > 0 and called_from_unguarded_script():
        summary.warnings.append(
            "called from a script without `if __name__ == \"__main__\":`: files are decoded in this "
            "process (worker processes would run the script again); add the guard to use workers")
        return 0
    return workers


def _backend_spec(backend: str | None, url: str | None, options: dict | None) -> BackendSpec | None:
    """The back end asked for, or None to use the index's recorded one (faiss for a new index)."""
    if backend is None and url is None:
        if options:
            raise RadsearchError("back-end options need --backend")
        return None
    return BackendSpec(backend or "qdrant", url, dict(options or {}))


@dataclass
class _Plan:
    to_read: list[tuple[FoundFile, str | None]] = field(default_factory=list)
    bad: list[FoundFile] = field(default_factory=list)
    special: list[FoundFile] = field(default_factory=list)  # named pipes, devices: never opened
    reports: list[FoundFile] = field(default_factory=list)
    grouping: Grouping = field(default_factory=Grouping)
    gone: list[str] = field(default_factory=list)


def _plan(
    conn, found: list[FoundFile], root: Path, csv_reports: CsvReports | None, summary: IndexSummary,
    shard_filter: ShardFilter | None = None, salt: str = "",
) -> _Plan:
    """Split discovered files into work to do and files unchanged since the last run.

    With a shard, files of other shards' studies are left alone; a file indexed here before is
    known to be this shard's unless it changed (a changed file of another shard's study is gone).
    """
    prefix = str(root).rstrip(os.sep) + os.sep
    prefix_len = len(prefix)
    known = {
        row["path"]: row
        for row in conn.execute(
            "SELECT path, size, mtime_ns, sha256, status, reason FROM files "
            "WHERE path = ? OR substr(path, 1, ?) = ?",
            (str(root), prefix_len, prefix),
        )
    }
    stored_study = {
        path: StoredStudy(key, key.startswith("group:") or bool(has_csv_report))
        for path, key, has_csv_report in conn.execute(
            "SELECT DISTINCT files.path, studies.key, EXISTS(SELECT 1 FROM reports WHERE "
            "reports.study_id = studies.id AND reports.source = 'csv') FROM images "
            "JOIN files ON files.id = images.file_id JOIN studies ON studies.id = images.study_id "
            "WHERE files.kind IN ('png', 'jpeg', 'nifti') "
            "AND (files.path = ? OR substr(files.path, 1, ?) = ?)",
            (str(root), prefix_len, prefix),
        )
    }
    plan = _Plan()
    plan.grouping = group_images([item for item in found if item.is_image], root, csv_reports,
                                 stored_study, salt)
    seen: set[str] = set()
    for item in found:
        if item.kind == "other":  # neither image nor report: counted by kind, never recorded
            summary.skipped_kinds[item.problem] = summary.skipped_kinds.get(item.problem, 0) + 1
            continue
        row = known.get(item.path)
        same_stat = row is not None and row["size"] == item.size and row["mtime_ns"] == item.mtime_ns
        if shard_filter is not None and not same_stat and not _shard_owns(shard_filter, item,
                                                                          plan.grouping):
            continue
        seen.add(item.path)
        if item.kind in ("png", "jpeg", "nifti"):
            stored = stored_study.get(item.path)
            if stored is not None and stored.key != plan.grouping.keys[item.path]:
                plan.to_read.append((item, None))  # its study changed: re-file it
                continue
        if item.kind in ("bad", "special"):
            status = "failed" if item.kind == "bad" else "skipped"
            if row is not None and row["status"] == status and row["reason"] == item.problem:
                summary.unchanged += 1
            else:
                (plan.bad if item.kind == "bad" else plan.special).append(item)
        elif same_stat:
            summary.unchanged += 1
        elif item.kind == "report":
            plan.reports.append(item)
        else:
            previous = row["sha256"] if row is not None and row["status"] != "failed" else None
            plan.to_read.append((item, previous))
    plan.gone = sorted(path for path in known if path not in seen)
    flat = sum(1 for item, _ in plan.to_read if item.path in plan.grouping.flat)
    if flat:
        summary.notes.append(
            f"{flat} PNG/JPEG image(s) directly in {root} became a study each: nothing groups them "
            "(no group column in a reports CSV, no report.txt in the folder)")
    return plan


def _shard_owns(shard_filter: ShardFilter, item: FoundFile, grouping: Grouping) -> bool:
    """Images that a CSV group gathers go to the shard of their group, whatever folder they lie
    in: every machine places them alike from the value (hashed there, never stored)."""
    match = grouping.matches.get(item.path)
    if item.path in grouping.grouped and match is not None and match.report.group is not None:
        return shard_filter.shard.owns(f"group:{match.report.group}")
    return shard_filter.owns(item)


def _record_bad_files(conn, bad: list[FoundFile], special: list[FoundFile],
                      summary: IndexSummary) -> None:
    with catalog.transaction(conn):
        for item in bad:
            file_id = writer.put_file(conn, item, status="failed", sha256=None, reason=item.problem)
            writer.forget_file_content(conn, file_id)
            summary.failed += 1
            summary.failures.append((item.path, item.problem or "unreadable"))
        for item in special:
            file_id = writer.put_file(conn, item, status="skipped", sha256=None, reason=item.problem)
            writer.forget_file_content(conn, file_id)
            summary.skipped += 1
            summary.skips.append((item.path, item.problem or "not a regular file"))


def _outcomes(
    tasks: list[ReadTask], workers: int
) -> Iterator[ReadOutcome]:
    """Read outcomes as workers finish them; a bounded number of files in flight at a time."""
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


class _Batcher:
    """Collects decoded files until a batch of frames is ready, then embeds and writes them."""

    def __init__(self, store: Store, encoder: Encoder, plan: _Plan, summary, batch_size: int):
        self.store = store
        self.encoder = encoder
        self.found = {item.path: item for item, _ in plan.to_read}
        self.grouping = plan.grouping
        self.summary = summary
        self.batch_size = batch_size
        self.waiting: list[ReadOutcome] = []
        self.frames = 0

    def add(self, outcome: ReadOutcome) -> None:
        self.waiting.append(outcome)
        if outcome.status == "read" and outcome.result is not None:
            self.frames += len(outcome.result.frames)
        if self.frames >= self.batch_size or len(self.waiting) >= 4 * self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.waiting:
            return
        pixels = [
            frame.pixels
            for outcome in self.waiting
            if outcome.status == "read" and outcome.result is not None
            for frame in outcome.result.frames
        ]
        vectors = self._embed(pixels)
        conn = self.store.conn
        offset = 0
        with catalog.transaction(conn):
            for outcome in self.waiting:
                count = len(outcome.result.frames) if outcome.status == "read" and outcome.result else 0
                self._write(conn, outcome, vectors[offset : offset + count])
                offset += count
        self.waiting = []
        self.frames = 0

    def _embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        if not pixels:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        chunks = [
            self.encoder.encode_images(stack_frames(pixels[start : start + self.batch_size]))
            for start in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(chunks)

    def _write(self, conn, outcome: ReadOutcome, vectors: np.ndarray) -> None:
        found = self.found[outcome.path]
        summary = self.summary
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
        metadata = dict(result.metadata)
        study_key, series_key = self._keys(found, result, metadata)
        metadata = safe_field_values(metadata)  # no identifier typed into a metadata field
        study_id = writer.put_study(
            conn, study_key, patient_hash=result.patient_hash,
            study_date=metadata.get("study_date"), description=metadata.get("study_description"),
        )
        if result.report_text:
            sentences, sentence_vectors = embed_report(self.encoder, result.report_text)
            writer.put_report(conn, study_id=study_id, file_id=file_id, source="sr",
                              text=result.report_text, sentences=sentences, vectors=sentence_vectors)
            summary.reports += 1
        if result.frames:
            series_id = writer.put_series(conn, series_key, study_id, metadata)
            writer.put_images(conn, file_id=file_id, study_id=study_id, series_id=series_id,
                              result=result, metadata=metadata, vectors=vectors)
            summary.images += len(result.frames)
        if outcome.identifiers:
            writer.put_identifiers(conn, file_id, study=study_key,
                                   series=series_key if result.frames else None,
                                   identifiers=outcome.identifiers)
        summary.indexed += 1

    def _keys(self, found: FoundFile, result, metadata: dict) -> tuple[str, str]:
        if result.kind == "dicom":
            study_key = result.study_uid_hash or f"file:{found.path}"
            series_key = result.series_uid_hash or f"{study_key}/file:{found.path}"
            return study_key, series_key
        match = self.grouping.matches.get(found.path)
        if match is not None:
            for name, value in match.report.metadata.items():
                if value:
                    metadata["study_description" if name == "description" else name] = value
        key = self.grouping.keys[found.path]
        if result.kind == "nifti":  # a NIfTI file is a series of its own within its study
            return key, f"{key}/file:{found.path}"
        return key, key


def _read_embed_write(
    store: Store,
    encoder: Encoder,
    plan: _Plan,
    *,
    workers: int,
    batch_size: int,
    summary: IndexSummary,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    dicomdirs = [item for item, _ in plan.to_read if item.kind == "dicomdir"]
    if dicomdirs:
        with catalog.transaction(store.conn):
            for item in dicomdirs:
                writer.put_file(store.conn, item, status="skipped", sha256=None,
                                reason=DICOMDIR_REASON)
                summary.skipped += 1
                summary.skips.append((item.path, DICOMDIR_REASON))
    salt, ct_windows, keep_phi = store.salt, store.ct_windows, catalog.keeps_phi(store.conn)
    tasks = [
        ReadTask(item.path, previous, encoder.image_size, salt, ct_windows=ct_windows,
                 keep_phi=keep_phi)
        for item, previous in plan.to_read
        if item.kind != "dicomdir"
    ]
    batcher = _Batcher(store, encoder, plan, summary, batch_size)
    total = len(tasks)
    for done, outcome in enumerate(_outcomes(tasks, workers), start=1):
        batcher.add(outcome)
        if on_progress is not None:
            on_progress(Progress(done, total, summary.images + batcher.frames))
    batcher.flush()
