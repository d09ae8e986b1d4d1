"""A run killed with SIGKILL leaves an index that answers; re-running completes it exactly."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radsearch import search, stats
from radsearch.indexer import index_folder
from tests.corpus import build_corpus

TINY = "hashing-tiny"
QUERIES = ("prostate calcifications", "brain mass", "liver lesion")


def _index_command(root: Path, index: Path, reports: Path) -> list[str]:
    return [sys.executable, "-m", "radsearch", "index", str(root), "--index", str(index),
            "--model", TINY, "--workers", "1", "--reports", str(reports), "--json"]


def _comparable_stats(index: Path) -> dict:
    data = stats(index=index)
    data.pop("index")
    data["model"].pop("weights_hash")
    return data


def _comparable_results(index: Path) -> list:
    # Study keys of DICOM studies are salted per index, so compare file paths and scores.
    return [
        [(round(hit.score, 5), sorted(image.path for image in hit.images))
         for hit in search(query, index=index, k=5, target=target).hits]
        for query in QUERIES
        for target in ("images", "reports")
    ]


def _files_written(index: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_and_resume(root: Path, index: Path, reports: Path, kills: int, seed: int) -> int:
    """Kill the run `kills` times while it writes, checking the index answers after each kill."""
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        start = _files_written(index)
        process = subprocess.Popen(
            _index_command(root, index, reports), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        # Wait until this run has written something, then kill it a random moment later:
        # mid-batch, mid-aggregation or mid-save.
        while process.poll() is None and _files_written(index) == start:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the run and its decoding workers
            killed += 1
        process.wait()
        stats(index=index)  # opens and answers after the kill
    finished = subprocess.run(_index_command(root, index, reports), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    return killed


def _check_resume(tmp_path: Path, shared_data: Path, kills: int, seed: int) -> None:
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data, medpix_images=40 * kills)
    reference = tmp_path / "reference"
    index_folder(root, index=reference, reports=info["reports_csv"], model=TINY, workers=0)

    resumed = tmp_path / "resumed"
    killed = _kill_and_resume(root, resumed, info["reports_csv"], kills, seed)
    print(f"kills landed mid-run: {killed}/{kills}")
    assert killed >= kills // 2, "the runs finished before they could be killed"
    assert _comparable_stats(resumed) == _comparable_stats(reference)
    assert _comparable_results(resumed) == _comparable_results(reference)


def test_resume_after_three_kills(tmp_path, shared_data):
    _check_resume(tmp_path, shared_data, kills=3, seed=7)


@pytest.mark.slow
def test_resume_after_twenty_kills(tmp_path, shared_data):
    _check_resume(tmp_path, shared_data, kills=20, seed=11)
