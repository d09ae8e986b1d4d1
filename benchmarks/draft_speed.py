"""Seconds per draft once the model is loaded.

    python benchmarks/draft_speed.py --index INDEX [--files FOLDER] [-n 50] [-k 5]

Drafts ``n`` indexed studies that have reports, by key (the stored study vector: neighbours, the
draft, its citations) with each drafter, and, with ``--files``, ``n`` image files read and embedded
as `radsearch draft FILE` does. The model is loaded and one draft made before timing. An index made
by `radsearch eval report --work DIR` serves (``DIR/index``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from radsearch.drafting import create_drafter, list_drafters
from radsearch.drafting.compose import DraftSession
from radsearch.index_handle import Index
from radsearch.storage.store import Store


def timed(session: DraftSession, queries: list[str], k: int, drafter) -> list[float]:
    session.draft(queries[0], k, drafter)  # warm: model, caches
    seconds = []
    for query in queries:
        began = time.perf_counter()
        session.draft(query, k, drafter)
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--files", type=Path, help="A folder of images to draft as files")
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    with Store.open_for_reading(args.index) as store:
        session = DraftSession(Index(store))
        with store.snapshot() as conn:
            keys = [row[0] for row in conn.execute(
                "SELECT DISTINCT studies.key FROM reports JOIN studies ON studies.id = reports.study_id "
                "ORDER BY studies.id LIMIT ?", (args.n,))]
        print(f"{len(keys)} studies of {args.index} (model {store.model_name}), k={args.k}")
        for info in list_drafters():
            s = timed(session, keys, args.k, create_drafter(info.name))
            print(f"  by key   {info.name:12s} mean {statistics.mean(s):.4f} s  "
                  f"median {statistics.median(s):.4f} s  max {max(s):.4f} s")
        if args.files:
            files = sorted(str(p) for p in args.files.rglob("*") if p.suffix.lower() in
                           (".png", ".jpg", ".jpeg", ".dcm"))[: args.n]
            s = timed(session, files, args.k, create_drafter("retrieval"))
            print(f"  by file  retrieval    mean {statistics.mean(s):.4f} s  "
                  f"median {statistics.median(s):.4f} s  max {max(s):.4f} s  ({len(files)} files)")


if __name__ == "__main__":
    main()
