"""A run killed with SIGKILL leaves an index that answers; re-running completes it exactly.

The default test kills a small corpus's run 3 times. The slow one kills `radsearch index` 20 times
(14 at random moments, 6 inside the stages after reading) over the real corpus (all of medpix2
with its manifest as --reports, plus dicom_series) with the default model, and then checks the
index against an uninterrupted run's:
the same stats and search results, no duplicates, no orphans in the catalog, its vector file or
the FAISS back end's record.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from radsearch import search, stats
from radsearch.encoders import DEFAULT_MODEL
from radsearch.indexer import index_folder
from tests.corpus import build_corpus

TINY = "hashing-tiny"
QUERIES = ("prostate calcifications", "brain mass", "liver lesion")
REAL_CORPUS = ("medpix2", "dicom_series")


def _index_command(root: Path, index: Path, reports: Path, model: str) -> list[str]:
    return [sys.executable, "-m", "radsearch", "index", str(root), "--index", str(index),
            "--model", model, "--workers", "1", "--reports", str(reports), "--json"]


def _comparable_stats(index: Path) -> dict:
    data = stats(index=index)
    data.pop("index")
    data.pop("last_run")  # when and how each run went differs from an uninterrupted run's
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


def _last_write_ns(index: Path) -> int:
    """The latest modification time of anything in the index folder (catalog, WAL, back end)."""
    if not index.exists():
        return 0
    return max((p.stat().st_mtime_ns for p in index.rglob("*") if p.is_file()), default=0)


def _read_only(path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def _count(index: Path, sql: str) -> int:
    try:
        with _read_only(index / "catalog.sqlite") as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:  # no catalog yet, or no ledger yet
        return 0


_FILES = "SELECT COUNT(*) FROM files"
_CSV_REPORTS = "SELECT COUNT(*) FROM reports WHERE source = 'csv'"


def _phase(index: Path, reference: Path) -> str:
    """Which stage of the run an index was left in: the first the next run still has to do."""
    def one(sql: str) -> int:
        return _count(index, sql)

    if one(_FILES) < _count(reference, _FILES):
        return "reading"
    if one(_CSV_REPORTS) < _count(reference, _CSV_REPORTS):
        return "reports"
    if one("SELECT COUNT(*) FROM series WHERE dirty = 1") + one(
            "SELECT COUNT(*) FROM studies WHERE dirty = 1"):
        return "aggregation"
    if one("SELECT COUNT(*) FROM vectors") != one(_CAUGHT_UP):
        return "back-end catch-up"
    return "done"


# The vectors the FAISS back end had caught up with at its last save (CatalogBackend.catch_up).
_CAUGHT_UP = ("SELECT COALESCE(SUM(json_extract(value, '$[0]')), 0) FROM meta "
              "WHERE key LIKE 'faiss.%.state'")


def _kill_and_resume(
    root: Path, index: Path, reports: Path, *, targets: list[str], seed: int, model: str,
    max_delay: float, reference: Path,
) -> tuple[int, Counter]:
    """Kill a run once per target, checking that the index answers after each kill; then let a
    last run finish. Target "any": a random moment up to ``max_delay`` s after the run first
    writes; a stage (see ``_phase``): a random moment up to 1 s into that stage, which short
    stages (aggregation, back-end sync) need to be hit at all.
    Returns the kills that landed mid-run and the stage each left the index in."""
    rng = random.Random(seed)
    landed, phases = 0, Counter()
    for target in targets:
        before = _last_write_ns(index)
        process = subprocess.Popen(
            _index_command(root, index, reports, model), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        # Once this run writes (the model is loaded), kill it a random moment later: mid-batch,
        # mid-report, mid-aggregation or mid-catch-up.
        while process.poll() is None and _last_write_ns(index) == before:
            time.sleep(0.01)
        if target == "any":
            time.sleep(rng.uniform(0.0, max_delay))
        else:
            while process.poll() is None and _phase(index, reference) != target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the run and its decoding workers
            landed += 1
        process.wait()
        phases[_phase(index, reference)] += 1
        stats(index=index)  # opens and answers after the kill
    finished = subprocess.run(_index_command(root, index, reports, model),
                              capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    return landed, phases


# --- no duplicates, no orphans -------------------------------------------------------------------

_CATALOG_CHECKS = {
    "images without an indexed file": "SELECT COUNT(*) FROM images WHERE file_id NOT IN "
    "(SELECT id FROM files WHERE status = 'indexed')",
    "images without a series": "SELECT COUNT(*) FROM images WHERE series_id NOT IN "
    "(SELECT id FROM series)",
    "images without a study": "SELECT COUNT(*) FROM images WHERE study_id NOT IN "
    "(SELECT id FROM studies)",
    "series without images": "SELECT COUNT(*) FROM series WHERE id NOT IN "
    "(SELECT series_id FROM images)",
    "series without a study": "SELECT COUNT(*) FROM series WHERE study_id NOT IN "
    "(SELECT id FROM studies)",
    "studies with neither images nor reports": "SELECT COUNT(*) FROM studies WHERE id NOT IN "
    "(SELECT study_id FROM images) AND id NOT IN (SELECT study_id FROM reports)",
    "reports without a study": "SELECT COUNT(*) FROM reports WHERE study_id NOT IN "
    "(SELECT id FROM studies)",
    "reports without their file": "SELECT COUNT(*) FROM reports WHERE file_id IS NOT NULL AND "
    "file_id NOT IN (SELECT id FROM files)",
    "sentences without a report": "SELECT COUNT(*) FROM sentences WHERE report_id NOT IN "
    "(SELECT id FROM reports)",
    "vectors without a row": "SELECT COUNT(*) FROM vectors WHERE NOT ("
    "(collection = 'images' AND ref_id IN (SELECT id FROM images)) OR "
    "(collection = 'series' AND ref_id IN (SELECT id FROM series)) OR "
    "(collection = 'studies' AND ref_id IN (SELECT id FROM studies)) OR "
    "(collection = 'sentences' AND ref_id IN (SELECT id FROM sentences)))",
    "images without a vector": "SELECT COUNT(*) FROM images WHERE id NOT IN "
    "(SELECT ref_id FROM vectors WHERE collection = 'images')",
    "sentences without a vector": "SELECT COUNT(*) FROM sentences WHERE id NOT IN "
    "(SELECT ref_id FROM vectors WHERE collection = 'sentences')",
    "series without a vector": "SELECT COUNT(*) FROM series WHERE id NOT IN "
    "(SELECT ref_id FROM vectors WHERE collection = 'series')",
    "studies with series but no vector": "SELECT COUNT(*) FROM studies WHERE id IN "
    "(SELECT study_id FROM series) AND id NOT IN "
    "(SELECT ref_id FROM vectors WHERE collection = 'studies')",
    "rows left dirty": "SELECT (SELECT COUNT(*) FROM series WHERE dirty = 1) + "
    "(SELECT COUNT(*) FROM studies WHERE dirty = 1)",
    "duplicate images": "SELECT COUNT(*) FROM (SELECT 1 FROM images GROUP BY file_id, frame "
    "HAVING COUNT(*) > 1)",
    "duplicate reports": "SELECT COUNT(*) FROM (SELECT 1 FROM reports "
    "GROUP BY study_id, source, file_id HAVING COUNT(*) > 1)",
    "duplicate sentences": "SELECT COUNT(*) FROM (SELECT 1 FROM sentences "
    "GROUP BY report_id, idx HAVING COUNT(*) > 1)",
    "vector file slots shared by two rows": "SELECT COUNT(*) FROM (SELECT 1 FROM vectors "
    "GROUP BY slot HAVING COUNT(*) > 1)",
    "vector rows past the slots handed out": "SELECT COUNT(*) FROM vectors WHERE slot >= "
    "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'vectors.slots')",
    "vectors the FAISS back end has not caught up with": "SELECT (SELECT COUNT(*) FROM vectors) - "
    "(" + _CAUGHT_UP + ")",
}


def _orphans(index: Path) -> dict[str, int]:
    """Every kind of duplicate or orphan found in the index, with its count (all 0 when sound)."""
    with _read_only(index / "catalog.sqlite") as conn:
        found = {name: int(conn.execute(sql).fetchone()[0]) for name, sql in _CATALOG_CHECKS.items()}
        name, dim = (conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
                     for key in ("vectors.file", "model.dim"))
        slots = [row[0] for row in conn.execute("SELECT slot FROM vectors")]
    held = (index / name).stat().st_size // (4 * int(dim))
    found["vector rows past the vector file's end"] = sum(slot >= held for slot in slots)
    found["vector files of other generations"] = len(
        [p for p in index.glob("vectors*.f32") if p.name != name])
    found["FAISS files of the format before the vector file"] = len(
        [p for p in (index / "faiss").glob("*") if p.name.startswith("points.sqlite")
         or p.name.count(".") == 1])
    return found


# --- the tests ------------------------------------------------------------------------------------


def _check_resume(tmp_path: Path, shared_data: Path, kills: int, seed: int) -> None:
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data, medpix_images=40 * kills)
    reference = tmp_path / "reference"
    index_folder(root, index=reference, reports=info["reports_csv"], model=TINY, workers=0)

    resumed = tmp_path / "resumed"
    landed, _ = _kill_and_resume(root, resumed, info["reports_csv"], targets=["any"] * kills,
                                 seed=seed, model=TINY, max_delay=0.4, reference=reference)
    print(f"kills landed mid-run: {landed}/{kills}")
    assert landed >= kills // 2, "the runs finished before they could be killed"
    assert _comparable_stats(resumed) == _comparable_stats(reference)
    assert _comparable_results(resumed) == _comparable_results(reference)
    assert not {k: v for k, v in _orphans(resumed).items() if v}


def test_resume_after_three_kills(tmp_path, shared_data):
    _check_resume(tmp_path, shared_data, kills=3, seed=7)


@pytest.mark.slow
def test_resume_after_twenty_kills_on_the_real_corpus(tmp_path, shared_data):
    """20 SIGKILLs over all of medpix2 (+ manifest) and dicom_series, default model."""
    root = tmp_path / "real"
    root.mkdir()
    for name in REAL_CORPUS:
        (root / name).symlink_to(shared_data / name, target_is_directory=True)
    reports = shared_data / "medpix2" / "manifest.csv"
    started = time.perf_counter()

    reference = tmp_path / "reference"
    run = subprocess.run(_index_command(root, reference, reports, DEFAULT_MODEL),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    uninterrupted = time.perf_counter() - started
    total_files = stats(index=reference)["files"]

    resumed = tmp_path / "resumed"
    # 14 kills at random moments, with delays that add up to about 70% of an uninterrupted run,
    # then 2 in each stage after reading, which random moments rarely hit.
    targets = ["any"] * 14 + ["reports"] * 2 + ["aggregation"] * 2 + ["back-end catch-up"] * 2
    landed, phases = _kill_and_resume(
        root, resumed, reports, targets=targets, seed=11, model=DEFAULT_MODEL,
        max_delay=2 * 0.7 * uninterrupted / 14, reference=reference,
    )
    same_stats = _comparable_stats(resumed) == _comparable_stats(reference)
    same_results = _comparable_results(resumed) == _comparable_results(reference)
    orphans = {k: v for k, v in _orphans(resumed).items() if v}
    survived = landed if same_stats and same_results and not orphans else 0
    print(f"\nkills survived / tried: {survived} / {len(targets)} (landed mid-run: {landed}); "
          f"left the index in: {dict(phases)}; {total_files} files, model {DEFAULT_MODEL}; "
          f"uninterrupted run {uninterrupted:.0f} s, whole test {time.perf_counter() - started:.0f} s")
    assert landed >= len(targets) * 3 // 4, "the runs finished before they could be killed"
    assert same_stats
    assert same_results
    assert not orphans
    assert not {k: v for k, v in _orphans(reference).items() if v}


_KILLED_IN_CATCH_UP = """
import os, sys
from radsearch.storage.backends import catalog_backend
catalog_backend.CatalogBackend.catch_up = lambda self, *a: os._exit(9)  # SIGKILL after the last commit
from radsearch.indexer import index_folder
index_folder(sys.argv[1], index=sys.argv[2], reports=sys.argv[3], model=sys.argv[4], workers=0)
"""


def test_kill_before_the_faiss_catch_up_is_finished_by_the_next_run(tmp_path, shared_data):
    """The moment random kills rarely hit: every vector committed, the FAISS back end's record not
    yet brought up to them. The index answers at once, and the next run completes the record."""
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data)
    index = tmp_path / "index"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_CATCH_UP, str(root), str(index), str(info["reports_csv"]),
         TINY],
        capture_output=True, text=True,
    )
    assert killed.returncode == 9, killed.stderr
    assert _orphans(index)["vectors the FAISS back end has not caught up with"] > 0
    assert search("brain mass", index=index, k=3).hits
    summary = index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0)
    assert summary.sent > 0  # what the killed run made searchable is counted once, by this run
    assert not {k: v for k, v in _orphans(index).items() if v}
