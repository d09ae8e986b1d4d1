"""The runner of an index run's stages: a clock that times each stage, and the loop that takes
decoded files in batches through embed and write.

The stages themselves (indexer.stages) know nothing of timing or batching; a source (a folder,
indexer.pipeline; a PACS, indexer.pacs) assembles them and hands them to the runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from radsearch import runs
from radsearch.encoders import Encoder
from radsearch.indexer.plan import Plan
from radsearch.indexer.stages import aggregate_run, sync_run
from radsearch.indexer.summary import IndexSummary, Progress
from radsearch.indexer.worker import ReadOutcome
from radsearch.storage.store import Store

T = TypeVar("T")
Batch = TypeVar("Batch")

# What each stage counts as its items, in pipeline order. Read items are files hashed, and decoded
# when new or changed (fetched first from a PACS); discover items are files found (instances listed).
STAGE_ITEMS = {
    "model": "models loaded",
    "discover": "files found",
    "read": "files read",
    "embed": "images embedded",
    "write": "files written",
    "reports": "report files and CSV reports",
    "aggregate": "series and studies pooled",
    "sync": "points sent or deleted",
}


@dataclass
class StageTime:
    seconds: float = 0.0
    items: int = 0


class StageClock:
    """Wall time and items of each stage, summed over every time the stage ran.

    Reads overlap embedding (files are decoded in worker processes), so the read stage's time is
    the time this process waited for decoded files, not the time spent decoding them.
    """

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self.times: dict[str, StageTime] = {}

    def record(self, name: str) -> StageTime:
        """Stage ``name``'s record, created (zero) when the stage has not run yet."""
        return self.times.setdefault(name, StageTime())

    @contextmanager
    def stage(self, name: str) -> Iterator[StageTime]:
        """Time the block as stage ``name``; the block adds its items to the record it gets."""
        record = self.record(name)
        started = self._now()
        try:
            yield record
        finally:
            record.seconds += self._now() - started

    def timed(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """``items``, each one's production timed as stage ``name`` and counted as one item.
        Closing this iterator closes ``items`` (a pool of worker processes stops)."""
        record = self.record(name)
        iterator = iter(items)
        try:
            while True:
                started = self._now()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    record.seconds += self._now() - started
                record.items += 1
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        """Each stage's seconds and items, in pipeline order (STAGE_ITEMS), others after."""
        order = list(STAGE_ITEMS)
        names = sorted(self.times,
                       key=lambda name: order.index(name) if name in order else len(order))
        return {name: {"seconds": round(self.times[name].seconds, 4),
                       "items": self.times[name].items} for name in names}


def frame_count(outcome: ReadOutcome) -> int:
    return len(outcome.result.frames) if outcome.status == "read" and outcome.result else 0


def run_batches(
    reads: Iterable[ReadOutcome],
    *,
    embed: Callable[[list[ReadOutcome]], Batch],
    write: Callable[[Batch], None],
    batch_size: int,
    clock: StageClock,
    total: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    keep_read_on: tuple[type[BaseException], ...] = (),
) -> None:
    """Read -> embed -> write: collect read outcomes until ``batch_size`` frames (or four times as
    many files) wait, then ``embed`` them and ``write`` the batch, each stage timed on ``clock``.

    ``write`` is meant to write one batch in one transaction, so a run stopped at any moment keeps
    whole batches only. When reading raises one of ``keep_read_on`` (a PACS that stopped
    answering), what was read is still embedded and written before the error goes on.
    """
    waiting: list[ReadOutcome] = []
    frames = 0
    for name in ("embed", "write"):  # on record even when nothing is read
        clock.record(name)

    def flush() -> None:
        nonlocal waiting, frames
        if not waiting:
            return
        with clock.stage("embed") as record:
            batch = embed(waiting)
            record.items += frames
        with clock.stage("write") as record:
            write(batch)
            record.items += len(waiting)
        waiting, frames = [], 0

    outcomes = clock.timed("read", reads)
    done = images = 0
    try:
        for outcome in outcomes:
            waiting.append(outcome)
            count = frame_count(outcome)
            frames += count
            images += count
            done += 1
            if frames >= batch_size or len(waiting) >= 4 * batch_size:
                flush()
            if on_progress is not None:
                on_progress(Progress(done, total, images))
    except keep_read_on:
        flush()
        raise
    finally:
        outcomes.close()
    flush()


def finish_run(store: Store, encoder: Encoder, plan: Plan, *, prune: bool, summary: IndexSummary,
               run_id: int, started: float, clock: StageClock) -> None:
    """The end of every run, from a folder or a PACS: the aggregate and sync stages, then the
    run's end and counts on record."""
    with clock.stage("aggregate") as record:
        record.items += aggregate_run(store.conn, encoder, plan, dim=store.dim, prune=prune,
                                      summary=summary)
    with clock.stage("sync") as record:
        record.items += sync_run(store, summary)
    runs.record_end(store.conn, run_id, time.time(), time.perf_counter() - started,
                    {name: getattr(summary, name) for name in runs.COUNTS})
