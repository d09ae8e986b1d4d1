"""The end of the discover stage: which found files to read, to record unread, or to leave as they
are, against what the catalog holds from earlier runs."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from radsearch.indexer.discover import FoundFile, ShardFilter
from radsearch.indexer.grouping import Grouping, StoredStudy, group_images
from radsearch.indexer.summary import IndexSummary
from radsearch.reports import CsvReports


@dataclass
class Plan:
    """What a run does with each found file."""

    # to read, each with the content hash stored for it (None: nothing stored, or it failed)
    to_read: list[tuple[FoundFile, str | None]] = field(default_factory=list)
    bad: list[FoundFile] = field(default_factory=list)
    special: list[FoundFile] = field(default_factory=list)  # named pipes, devices: never opened
    dicomdirs: list[FoundFile] = field(default_factory=list)  # DICOMDIR media indexes: never read
    reports: list[FoundFile] = field(default_factory=list)
    grouping: Grouping = field(default_factory=Grouping)
    gone: list[str] = field(default_factory=list)  # in the catalog, no longer found


def plan_run(
    conn: sqlite3.Connection, found: list[FoundFile], root: Path | str,
    csv_reports: CsvReports | None, summary: IndexSummary, shard_filter: ShardFilter | None = None,
    salt: str = "",
) -> Plan:
    """Split found files into work to do and files unchanged since the last run (counted in
    ``summary``, with the kinds of files that are neither images nor reports). ``root`` is the
    folder, or a PACS source's root (a URL, kept a string: a Path would fold its "//").

    With a shard, files of other shards' studies are left alone; a file indexed here before is
    known to be this shard's unless it changed (a changed file of another shard's study is gone).
    """
    prefix = str(root).rstrip(os.sep) + os.sep
    prefix_len = len(prefix)
    known = {
        row["path"]: row
        for row in conn.execute(
            "SELECT path, size, mtime_ns, sha256, status, reason FROM files "
            "WHERE path = ? OR substr(path, 1, ?) = ?",
            (str(root), prefix_len, prefix),
        )
    }
    stored_study = {
        path: StoredStudy(key, key.startswith("group:") or bool(has_csv_report))
        for path, key, has_csv_report in conn.execute(
            "SELECT DISTINCT files.path, studies.key, EXISTS(SELECT 1 FROM reports WHERE "
            "reports.study_id = studies.id AND reports.source = 'csv') FROM images "
            "JOIN files ON files.id = images.file_id JOIN studies ON studies.id = images.study_id "
            "WHERE files.kind IN ('png', 'jpeg', 'nifti') "
            "AND (files.path = ? OR substr(files.path, 1, ?) = ?)",
            (str(root), prefix_len, prefix),
        )
    }
    plan = Plan()
    plan.grouping = group_images([item for item in found if item.is_image], root, csv_reports,
                                 stored_study, salt)
    seen: set[str] = set()
    for item in found:
        if item.kind == "other":  # neither image nor report: counted by kind, never recorded
            summary.skipped_kinds[item.problem] = summary.skipped_kinds.get(item.problem, 0) + 1
            continue
        row = known.get(item.path)
        same_stat = row is not None and row["size"] == item.size and row["mtime_ns"] == item.mtime_ns
        if shard_filter is not None and not same_stat and not _shard_owns(shard_filter, item,
                                                                          plan.grouping):
            continue
        seen.add(item.path)
        if item.kind in ("png", "jpeg", "nifti"):
            stored = stored_study.get(item.path)
            if stored is not None and stored.key != plan.grouping.keys[item.path]:
                plan.to_read.append((item, None))  # its study changed: re-file it
                continue
        if item.kind in ("bad", "special"):
            status = "failed" if item.kind == "bad" else "skipped"
            if row is not None and row["status"] == status and row["reason"] == item.problem:
                summary.unchanged += 1
            else:
                (plan.bad if item.kind == "bad" else plan.special).append(item)
        elif same_stat:
            summary.unchanged += 1
        elif item.kind == "report":
            plan.reports.append(item)
        elif item.kind == "dicomdir":
            plan.dicomdirs.append(item)
        else:
            previous = row["sha256"] if row is not None and row["status"] != "failed" else None
            plan.to_read.append((item, previous))
    plan.gone = sorted(path for path in known if path not in seen)
    flat = sum(1 for item, _ in plan.to_read if item.path in plan.grouping.flat)
    if flat:
        summary.notes.append(
            f"{flat} PNG/JPEG image(s) directly in {root} became a study each: nothing groups them "
            "(no group column in a reports CSV, no report.txt in the folder)")
    return plan


def _shard_owns(shard_filter: ShardFilter, item: FoundFile, grouping: Grouping) -> bool:
    """Images that a CSV group gathers go to the shard of their group, whatever folder they lie
    in: every machine places them alike from the value (hashed there, never stored)."""
    match = grouping.matches.get(item.path)
    if item.path in grouping.grouped and match is not None and match.report.group is not None:
        return shard_filter.shard.owns(f"group:{match.report.group}")
    return shard_filter.owns(item)
