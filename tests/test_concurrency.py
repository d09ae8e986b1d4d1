"""Searches from other processes while a run writes: no errors, always a consistent snapshot."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from radsearch import search, stats
from tests.corpus import build_corpus


def _query_until(index: str, stop_file: str) -> tuple[int, int, list[int]]:
    """Query repeatedly until `stop_file` exists; returns (served, failed, image counts seen)."""
    served = failed = 0
    seen: list[int] = []
    while not Path(stop_file).exists():
        try:
            counts = stats(index=Path(index))
            hits = search("mass", index=Path(index), k=3, target="reports").hits
            # A consistent snapshot: every hit's images are files the catalog knows.
            assert all(hit.images for hit in hits if hit.study.startswith("file:"))
            seen.append(counts["images"])
            served += 1
        except Exception:  # noqa: BLE001 - every kind of failure counts
            failed += 1
        time.sleep(0.02)
    return served, failed, seen


def test_searches_during_an_index_run(tmp_path, shared_data):
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data, medpix_images=120)
    index = tmp_path / "index"
    stop = tmp_path / "stop"
    # A first small run so that the index exists before the readers start.
    subprocess.run([sys.executable, "-m", "radsearch", "index", str(root / "dicom"), "--index",
                    str(index), "--model", "hashing-tiny", "--workers", "0"], check=True,
                   capture_output=True)
    # spawn: a forked child of a process that already ran FAISS (OpenMP) can deadlock.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as readers:
        futures = [readers.submit(_query_until, str(index), str(stop)) for _ in range(2)]
        run = subprocess.run(
            [sys.executable, "-m", "radsearch", "index", str(root), "--index", str(index),
             "--model", "hashing-tiny", "--workers", "1", "--reports", str(info["reports_csv"])],
            capture_output=True, text=True,
        )
        time.sleep(0.3)
        stop.touch()
        results = [future.result() for future in futures]
    assert run.returncode == 0, run.stderr
    served = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    print(f"concurrent queries served {served}, failed {failed}")
    assert failed == 0 and served > 0
    for _, _, seen in results:
        assert seen == sorted(seen)  # the index only grows during the run: no torn reads
    assert stats(index=index)["images"] == max(max(r[2]) for r in results)
