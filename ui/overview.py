"""What the index page lists beside ``radsearch.stats``: the studies by modality and by body part,
when a file was last indexed, and the last run in words - read from the catalog, nothing estimated."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from radsearch.storage.store import Store


def index_overview(index: Path) -> dict:
    """``by_modality`` / ``by_body_part``: rows of (value, studies, series), most studies first;
    ``last_indexed``: the UTC time the newest catalog entry of a file was written, or None."""
    with Store.open_for_reading(Path(index)) as store:
        with store.snapshot() as conn:
            tables = {
                column: [
                    {column.replace("_", " "): row[0] or "(not recorded)", "studies": row[1],
                     "series": row[2]}
                    for row in conn.execute(
                        f"SELECT {column}, COUNT(DISTINCT study_id), COUNT(*) FROM series "
                        f"GROUP BY {column} ORDER BY COUNT(DISTINCT study_id) DESC, {column}")
                ]
                for column in ("modality", "body_part")
            }
            (newest,) = conn.execute("SELECT MAX(indexed_at) FROM files").fetchone()
    last = None if newest is None else datetime.fromtimestamp(newest, timezone.utc)
    return {"by_modality": tables["modality"], "by_body_part": tables["body_part"],
            "last_indexed": None if last is None else last.strftime("%Y-%m-%d %H:%M UTC")}


RUN_COUNTS = ("indexed", "unchanged", "failed", "skipped", "removed")


def last_run_summary(run: dict) -> str:
    """One line on ``stats()["last_run"]``: when it ran, over what, how long, or that it did not
    finish."""
    when = f"started {run['started'].replace('T', ' ').replace('Z', ' UTC')}"
    if run["finished"] is None:
        return (f"{when}, of {run['root']}: did not finish (still running, or stopped before its "
                "end); the counts are of the files it recorded")
    return f"{when}, of {run['root']}: took {run['seconds']:.1f} s, vectors in {run['backend']}"


def last_run_counts(run: dict) -> list[dict]:
    """The run's counts as one table row (an unknown count of an unfinished run: "-")."""
    return [{name: "-" if run[name] is None else f"{run[name]:,}" for name in RUN_COUNTS}]
