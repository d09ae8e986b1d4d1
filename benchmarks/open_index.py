"""Many questions to one index: the module-level functions (each opens the index, asks, closes)
against one ``radsearch.open_index`` kept open.

    python benchmarks/open_index.py [--backends faiss qdrant-edge] [--rounds 10]
                                    [--work /tmp/radsearch-open-index-bench] [--keep]

Indexes the sample studies that ship with radsearch (default model, radclip-mini) once per back end,
then asks the same questions ``--rounds`` times both ways: a text search, similar cases of a
study, a zero-shot classification of it and its ``show``. The model is cached per process either
way (``create_model``), so the difference is what opening an index costs: the catalog, the
back end's out-of-step check, opening the store (an Edge shard is loaded from disk) and checking
the model against the index. Prints milliseconds per round (the median) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import radsearch  # noqa: E402
from radsearch.indexer import index_folder  # noqa: E402
from radsearch.samples import sample_studies_path  # noqa: E402

QUERY = "pleural effusion"
LABELS = "CT, MRI, X-ray"


def one_round(ask, study: str) -> None:
    ask("search", QUERY, k=5)
    ask("similar", study, k=5)
    ask("classify", study, labels=LABELS)
    ask("show", study)


def timed(rounds: int, run) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["faiss", "qdrant-edge"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/radsearch-open-index-bench"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(f"{'back end':12} {'functions ms/round':>19} {'open index ms/round':>20} {'ratio':>6}")
    try:
        for backend in args.backends:
            index = args.work / backend
            if not index.exists():
                index_folder(sample_studies_path(), index=index, backend=backend)
            study = radsearch.search(QUERY, index=index, k=1).hits[0].study
            one_round(lambda name, *a, **kw: getattr(radsearch, name)(*a, index=index, **kw),
                      study)  # warm: model loaded and cached, files in the page cache
            functions = timed(args.rounds, lambda: one_round(
                lambda name, *a, **kw: getattr(radsearch, name)(*a, index=index, **kw), study))
            with radsearch.open_index(index) as opened:
                held = timed(args.rounds, lambda: one_round(
                    lambda name, *a, **kw: getattr(opened, name)(*a, **kw), study))
            slow, fast = statistics.median(functions), statistics.median(held)
            print(f"{backend:12} {slow:19.1f} {fast:20.1f} {slow / fast:6.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
