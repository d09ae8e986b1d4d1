"""The record of index runs: `stats()["last_run"]` and `radsearch stats` say when the last run
started, how long it took, what it did and which files it could not read; a run stopped before its
end is shown as one that did not finish, and the next run resumes as if nothing were on record."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsearch import stats
from radsearch.cli import app
from radsearch.indexer import index_folder
from radsearch.samples import sample_studies_path

TINY = "hashing-tiny"


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """The sample studies and one cut-short JPEG, which fails."""
    root = tmp_path / "studies"
    shutil.copytree(sample_studies_path(), root / "samples")
    jpeg = next(sample_studies_path().rglob("*.jpg")).read_bytes()
    (root / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    return root


def _utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def test_a_run_is_recorded_with_its_counts_and_failures(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    before = time.time()
    summary = index_folder(studies, index=index, model=TINY, workers=0)
    after = time.time()
    run = stats(index=index)["last_run"]
    assert run["root"] == str(studies) and run["backend"] == summary.backend
    assert int(before) <= _utc(run["started"]) <= _utc(run["finished"]) <= after
    assert 0 < run["seconds"] <= summary.seconds
    assert (run["indexed"], run["unchanged"], run["failed"], run["skipped"], run["removed"]) == (
        summary.indexed, 0, 1, summary.skipped, 0)
    assert run["failures"] == [{"path": path, "reason": reason}
                               for path, reason in summary.failures]
    assert run["failures"][0]["path"] == str(studies / "broken.jpg")

    again = index_folder(studies, index=index, model=TINY, workers=0)  # the newest run is shown
    run = stats(index=index)["last_run"]
    assert (run["indexed"], run["unchanged"], run["failed"]) == (0, again.unchanged, 0)
    assert run["failures"] == []  # the broken file was not read again: not this run's failure


_KILLED_RUN = """
import os, sys
from pathlib import Path
from radsearch.indexer import aggregate, index_folder

def killed(*args, **kwargs):
    os._exit(9)  # as SIGKILL would: no cleanup, nothing more written

aggregate.update_series = killed  # after every file is read and written
index_folder(Path(sys.argv[1]), index=Path(sys.argv[2]), model="hashing-tiny", workers=0)
"""


def test_a_killed_run_shows_as_unfinished_and_the_next_run_resumes(studies: Path,
                                                                   tmp_path: Path) -> None:
    index = tmp_path / "index"
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(studies), str(index)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    data = stats(index=index)
    run = data["last_run"]
    assert run["finished"] is None and run["seconds"] is None
    # What it wrote before it stopped: every file was read, the broken one failed.
    whole = index_folder(studies, index=tmp_path / "uninterrupted", model=TINY, workers=0)
    assert run["indexed"] == whole.indexed and run["failed"] == 1
    assert run["unchanged"] is None and run["removed"] is None
    assert [failure["path"] for failure in run["failures"]] == [str(studies / "broken.jpg")]
    table = CliRunner().invoke(app, ["stats", "--index", str(index)]).output
    assert "did not finish" in table and f"failed   {studies / 'broken.jpg'}" in table

    resumed = index_folder(studies, index=index, model=TINY, workers=0)
    assert resumed.indexed == 0  # nothing read twice: the next run finishes the stages left
    completed = stats(index=index)
    run = completed.pop("last_run")
    assert run["finished"] is not None and run["unchanged"] == resumed.unchanged
    reference = stats(index=tmp_path / "uninterrupted")
    for record in (completed, reference):
        record.pop("last_run", None), record.pop("index"), record["model"].pop("weights_hash")
    assert completed == reference


def test_a_run_stopped_by_an_error_shows_as_unfinished(studies: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from radsearch.indexer import aggregate

    index = tmp_path / "index"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(aggregate, "update_studies", interrupted)
    with pytest.raises(KeyboardInterrupt):
        index_folder(studies, index=index, model=TINY, workers=0)
    assert stats(index=index)["last_run"]["finished"] is None


def test_an_index_made_before_runs_were_recorded(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    index_folder(studies, index=index, model=TINY, workers=0)
    with sqlite3.connect(index / "catalog.sqlite") as conn:  # as an older radsearch left it
        conn.execute("DROP TABLE runs")
    assert stats(index=index)["last_run"] is None  # read without writing: no table, no run
    assert "last run   none recorded" in CliRunner().invoke(app, ["stats", "--index",
                                                                   str(index)]).output
    again = index_folder(studies, index=index, model=TINY, workers=0)  # the next run adds it
    assert stats(index=index)["last_run"]["unchanged"] == again.unchanged


def test_stats_json_and_table_show_the_last_run(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    summary = index_folder(studies, index=index, model=TINY, workers=0)
    runner = CliRunner()
    data = json.loads(runner.invoke(app, ["stats", "--index", str(index), "--json"]).output)
    assert data["last_run"] == stats(index=index)["last_run"]
    assert data["last_run"]["indexed"] == summary.indexed
    table = runner.invoke(app, ["stats", "--index", str(index)]).output
    line = next(line for line in table.splitlines() if line.startswith("last run"))
    assert data["last_run"]["started"] in line and f"{summary.indexed} indexed" in line
    assert "1 failed" in line and f"failed   {studies / 'broken.jpg'}:" in table
