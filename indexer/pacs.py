"""Index a PACS: the folder run's plan, read, embed and write stages, fed by a PACS source's
listing and fetches instead of a folder walk (indexer.pacs_source; DICOMweb or DIMSE)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from radsearch import runs

from radsearch.storage import catalog
from radsearch.diskspace import disk_full_named
from radsearch.encoders import DEFAULT_MODEL, create_model
from radsearch.errors import RadsearchError
from radsearch.indexer.dicomweb import DicomwebSource, is_dicomweb
from radsearch.indexer.dimse import DimseSource, is_dimse
from radsearch.indexer.pacs_source import PacsQuery, PacsSource, PacsUnavailable
from radsearch.indexer.pipeline import (
    IndexSummary,
    Progress,
    _backend_spec,
    _Batcher,
    _outcomes,
    _plan,
    _record_bad_files,
    _workers,
    finish_run,
)
from radsearch.indexer.worker import ReadOutcome, ReadTask
from radsearch.reading import CtWindow, parse_ct_windows
from radsearch.storage.store import Store, default_index_path


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
    query = PacsQuery(_date(since), modality.upper() if modality else None, tuple(studies))
    if prune and query.filtered:
        raise RadsearchError("--prune removes what the PACS no longer holds, so it needs the whole "
                             "archive: leave out --since, --modality and --study")
    index = Path(index) if index is not None else default_index_path()
    source = open_source(address, concurrency=concurrency, attempts=attempts, backoff_s=backoff_s)
    instances = source.list_instances(query)  # a refusal or an empty answer: nothing recorded
    try:
        return _index(source, instances, query, index=index, workers=workers, prune=prune,
                      model=model, batch_size=batch_size, spec=_backend_spec(backend, url,
                                                                             backend_options),
                      ct_windows=ct_windows, keep_phi=keep_phi, on_progress=on_progress,
                      started=started, started_at=started_at)
    finally:
        source.close()


def _index(source: PacsSource, instances, query: PacsQuery, *, index: Path, workers, prune: bool,
           model: str, batch_size: int, spec, ct_windows, keep_phi: bool, on_progress,
           started: float, started_at: float) -> IndexSummary:
    windows = parse_ct_windows(ct_windows) if ct_windows is not None else None
    encoder = create_model(model)
    summary = IndexSummary(index=str(index))
    with disk_full_named(index), Store.open_for_writing(index, encoder.describe(), spec,
                                                        ct_windows=windows,
                                                        keep_phi=keep_phi) as store:
        summary.backend = store.spec.describe()
        # On record like a folder's run: one stopped part-way stays on record as unfinished.
        run_id = runs.record_start(store.conn, source.root, summary.backend, started_at)
        summary.warnings += store.repairs
        conn = store.conn
        found = source.found_files(instances, store.salt)
        plan = _plan(conn, found, source.root, None, summary, None, store.salt)
        if query.filtered:
            plan.gone = []  # instances outside the query are neither gone nor missing
        _record_bad_files(conn, plan.bad, plan.special, summary)
        _fetch_read_embed_write(store, encoder, plan, source, workers=_workers(workers, summary),
                                batch_size=batch_size, summary=summary, on_progress=on_progress)
        finish_run(store, encoder, plan, prune=prune, summary=summary, run_id=run_id, started=started)
    summary.seconds = time.perf_counter() - started
    return summary


def _fetch_read_embed_write(store: Store, encoder, plan, source: PacsSource, *, workers: int,
                            batch_size: int, summary: IndexSummary,
                            on_progress: Callable[[Progress], None] | None) -> None:
    salt, keep_phi = store.salt, catalog.keeps_phi(store.conn)
    tasks = (ReadTask(item.path, previous, encoder.image_size, salt, ct_windows=store.ct_windows,
                      keep_phi=keep_phi)
             for item, previous in plan.to_read)
    missing: list[ReadOutcome] = []
    batcher = _Batcher(store, encoder, plan, summary, batch_size)
    total = len(plan.to_read)
    done = 0
    try:
        with source.spool() as spool:  # outlives the reads: workers still read the last copies
            for outcome in _outcomes(source.fetch(tasks, spool, missing), workers):
                batcher.add(outcome)
                done += 1
                if on_progress is not None:
                    on_progress(Progress(done, total, summary.images + batcher.frames))
    except PacsUnavailable:
        batcher.flush()  # what was read is kept: the next run fetches only the rest
        _add(batcher, missing)
        raise
    batcher.flush()
    _add(batcher, missing)


def _add(batcher: _Batcher, outcomes: list[ReadOutcome]) -> None:
    for outcome in outcomes:
        batcher.add(outcome)
    batcher.flush()


def _date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RadsearchError(f"--since {value!r}: give a date as YYYY-MM-DD") from None
