"""Index a PACS: the stages of a folder's run (indexer.stages), fed by a PACS source's listing
and fetches instead of a folder walk (indexer.pacs_source; DICOMweb or DIMSE), timed by the runner."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from pathlib import Path

from radsearch import runs

from radsearch.diskspace import disk_full_named
from radsearch.encoders import DEFAULT_MODEL, create_model
from radsearch.errors import RadsearchError
from radsearch.index_handle import backend_spec, resolve_index_path
from radsearch.indexer.dicomweb import DicomwebSource, is_dicomweb
from radsearch.indexer.dimse import DimseSource, is_dimse
from radsearch.indexer.pacs_source import PacsQuery, PacsSource, PacsUnavailable
from radsearch.indexer.plan import Plan, plan_run
from radsearch.indexer.runner import StageClock, finish_run, run_batches
from radsearch.indexer.stages import (
    embed_batch,
    read_files,
    read_tasks,
    record_unread,
    resolve_workers,
    write_batch,
)
from radsearch.indexer.summary import IndexSummary, Progress
from radsearch.indexer.worker import ReadOutcome
from radsearch.pacs_fetch import record_address
from radsearch.reading import CtWindow, parse_ct_windows
from radsearch.storage.store import Store


def is_pacs_address(source: str) -> bool:
    """Whether ``source`` names a PACS (dicomweb+https://, dicomweb+http://, dimse://)."""
    return is_dicomweb(source) or is_dimse(source)


def open_source(address: str, *, concurrency: int = 4, attempts: int = 5,
                backoff_s: float = 0.5) -> PacsSource:
    if is_dimse(address):
        return DimseSource(address, attempts=attempts, backoff_s=backoff_s)
    return DicomwebSource(address, concurrency=concurrency, attempts=attempts, backoff_s=backoff_s)


def index_pacs(
    address: str,
    *,
    since: date | str | None = None,
    modality: str | None = None,
    studies: Sequence[str] = (),
    index: Path | None = None,
    workers: int | None = None,
    prune: bool = False,
    model: str = DEFAULT_MODEL,
    batch_size: int = 32,
    backend: str | None = None,
    url: str | None = None,
    backend_options: dict | None = None,
    ct_windows: str | Sequence[CtWindow] | None = None,
    keep_phi: bool = False,
    concurrency: int = 4,
    attempts: int = 5,
    backoff_s: float = 0.5,
    on_progress: Callable[[Progress], None] | None = None,
) -> IndexSummary:
    """Index the studies of the PACS ``address`` into ``index``: a DICOMweb service
    (``dicomweb+https://host/path``, indexer.dicomweb) or a DICOM node (``dimse://AET@host:port``,
    indexer.dimse), as ``index_folder`` does a folder: instances are read by the same reader under
    the same rules, a second run fetches only instances it has not indexed (by SOP Instance UID), a run
    stopped part-way (or whose server stopped answering) is finished by the next one, and
    ``prune`` removes what the PACS no longer holds.

    ``since`` (a date, or YYYY-MM-DD), ``modality`` and ``studies`` (Study Instance UIDs) narrow
    the studies indexed. At most ``concurrency`` requests are in flight; a busy (429, 5xx) or silent
    server is asked again ``attempts`` times, pausing ``backoff_s`` seconds, then twice as long...
    """
    started, started_at = time.perf_counter(), time.time()
    clock = StageClock()
    query = PacsQuery(_date(since), modality.upper() if modality else None, tuple(studies))
    if prune and query.filtered:
        raise RadsearchError("--prune removes what the PACS no longer holds, so it needs the whole "
                             "archive: leave out --since, --modality and --study")
    index = resolve_index_path(index)
    source = open_source(address, concurrency=concurrency, attempts=attempts, backoff_s=backoff_s)
    try:
        with clock.stage("discover"):
            # a refusal or an empty answer: nothing recorded
            instances = source.list_instances(query)
        return _index(source, instances, query, index=index, workers=workers, prune=prune,
                      model=model, batch_size=batch_size,
                      spec=backend_spec(backend, url, backend_options), ct_windows=ct_windows,
                      keep_phi=keep_phi, on_progress=on_progress, started=started,
                      started_at=started_at, clock=clock)
    finally:
        source.close()


def _index(source: PacsSource, instances, query: PacsQuery, *, index: Path, workers, prune: bool,
           model: str, batch_size: int, spec, ct_windows, keep_phi: bool, on_progress,
           started: float, started_at: float, clock: StageClock) -> IndexSummary:
    windows = parse_ct_windows(ct_windows) if ct_windows is not None else None
    with clock.stage("model") as record:
        encoder = create_model(model)
        record.items += 1
    summary = IndexSummary(index=str(index))
    with disk_full_named(index), Store.open_for_writing(index, encoder.describe(), spec,
                                                        ct_windows=windows,
                                                        keep_phi=keep_phi) as store:
        summary.backend = store.spec.describe()
        # On record like a folder's run: one stopped part-way stays on record as unfinished.
        run_id = runs.record_start(store.conn, source.root, summary.backend, started_at)
        record_address(store.conn, source.root, source.address)  # for fetching on demand
        summary.warnings += store.repairs
        conn = store.conn
        with clock.stage("discover") as record:
            found = source.found_files(instances, store.salt)
            record.items += len(found)
            plan = plan_run(conn, found, source.root, None, summary, None, store.salt)
            if query.filtered:
                plan.gone = []  # instances outside the query are neither gone nor missing
        with clock.stage("write") as record:
            record.items += record_unread(conn, plan, summary)
        _fetch_read_embed_write(store, encoder, plan, source,
                                workers=resolve_workers(workers, summary), batch_size=batch_size,
                                summary=summary, on_progress=on_progress, clock=clock)
        finish_run(store, encoder, plan, prune=prune, summary=summary, run_id=run_id,
                   started=started, clock=clock)
    summary.stages = clock.as_dict()
    summary.seconds = time.perf_counter() - started
    return summary


def _fetch_read_embed_write(store: Store, encoder, plan: Plan, source: PacsSource, *, workers: int,
                            batch_size: int, summary: IndexSummary,
                            on_progress: Callable[[Progress], None] | None,
                            clock: StageClock) -> None:
    """Fetch, read, embed and write: the source fetches each instance into a spool folder, the
    read stage reads the copy (and deletes it). Instances the server no longer has are written
    as failed files after the others."""
    tasks = read_tasks(plan, store, encoder)
    missing: list[ReadOutcome] = []
    batches = partial(run_batches, embed=partial(embed_batch, encoder, batch_size=batch_size),
                      write=partial(write_batch, store.conn,
                                    found={item.path: item for item, _ in plan.to_read},
                                    grouping=plan.grouping, summary=summary),
                      batch_size=batch_size, clock=clock)
    try:
        with source.spool() as spool:  # outlives the reads: workers still read the last copies
            # What was read before the server stopped answering is kept: the next run fetches
            # only the rest.
            batches(read_files(source.fetch(tasks, spool, missing), workers), total=len(tasks),
                    on_progress=on_progress, keep_read_on=(PacsUnavailable,))
    except PacsUnavailable:
        batches(missing)
        raise
    batches(missing)


def _date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RadsearchError(f"--since {value!r}: give a date as YYYY-MM-DD") from None
