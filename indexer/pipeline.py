"""Index a folder: its run assembled from the stages (indexer.stages), timed by the runner
(indexer.runner): discover -> read (worker processes) -> embed (batched) -> write -> reports ->
aggregate -> sync.

Workers decode files while the main process embeds the previous batch, so a compressed archive's
decoding overlaps the model. Every batch of files is written in one transaction together with its
vectors: a run killed at any moment leaves a catalog that opens and answers, and the next run
skips what was written and finishes the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from radsearch import runs
from radsearch.diskspace import disk_full_named
from radsearch.encoders import DEFAULT_MODEL, create_model
from radsearch.errors import RadsearchError
from radsearch.index_handle import backend_spec, resolve_index_path
from radsearch.indexer.discover import Shard, ShardFilter, check_root, discover
from radsearch.indexer.plan import plan_run
from radsearch.indexer.runner import StageClock, finish_run, run_batches
from radsearch.indexer.stages import (
    attach_reports,
    embed_batch,
    read_files,
    read_tasks,
    record_unread,
    resolve_workers,
    write_batch,
)
from radsearch.indexer.summary import IndexSummary, Progress
from radsearch.reading import CtWindow, parse_ct_windows
from radsearch.reports import load_reports_csv
from radsearch.storage.store import Store


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
    clock = StageClock()
    index = resolve_index_path(index)
    root = Path(os.path.abspath(root))
    check_root(root)  # a typo is refused before the index is opened: nothing of it is recorded
    if group_by is not None and reports is None:
        raise RadsearchError("--group-by names a column of the reports CSV: give --reports too")
    csv_reports = load_reports_csv(Path(reports), group_by=group_by) if reports is not None else None
    spec = backend_spec(backend, url, backend_options)
    parsed_shard = Shard.parse(shard) if shard is not None else None
    windows = parse_ct_windows(ct_windows) if ct_windows is not None else None
    with clock.stage("model") as record:
        encoder = create_model(model)
        record.items += 1
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
        with clock.stage("discover") as record:
            found = discover(root)
            record.items += len(found)
            if not any(item.kind != "other" for item in found):
                summary.warnings.append(f"{root}: nothing to index was found there (no DICOM, PNG, "
                                        "JPEG or report file)")
            shard_filter = ShardFilter(parsed_shard, root, found) if parsed_shard else None
            plan = plan_run(conn, found, root, csv_reports, summary, shard_filter, store.salt)
        with clock.stage("write") as record:
            record.items += record_unread(conn, plan, summary)
        tasks = read_tasks(plan, store, encoder)
        run_batches(
            read_files(tasks, resolve_workers(workers, summary)),
            embed=partial(embed_batch, encoder, batch_size=batch_size),
            write=partial(write_batch, conn, found={item.path: item for item, _ in plan.to_read},
                          grouping=plan.grouping, summary=summary),
            batch_size=batch_size, clock=clock, total=len(tasks), on_progress=on_progress,
        )
        with clock.stage("reports") as record:
            record.items += attach_reports(conn, encoder, plan, csv_reports, salt=store.salt,
                                           found=found, root=root, summary=summary,
                                           sharded=parsed_shard is not None)
        finish_run(store, encoder, plan, prune=prune, summary=summary, run_id=run_id,
                   started=started, clock=clock)
    summary.stages = clock.as_dict()
    summary.seconds = time.perf_counter() - started
    return summary
