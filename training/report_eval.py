"""Report drafting evaluated on a manifest: every evaluated row drafted from a corpus index.

The product drafts from an index, so the evaluation does too: the corpus rows (by default the
manifest's rows outside the evaluated split; never an evaluated row) are indexed into a work folder
exactly as ``radsearch index`` indexes a folder of images with their report files (one folder per
row: the image, linked, and ``report.txt``), and each evaluated image is read and embedded as
``radsearch draft FILE`` reads it. A corpus row of the same case or patient (the manifest's
``group`` column) as the evaluated row is never its neighbour.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from radsearch.drafting.base import Drafter
from radsearch.drafting.compose import DraftSession
from radsearch.drafting.metrics import finding_f1, nlg_metrics
from radsearch.drafting.neighbours import Exclusions
from radsearch.index_handle import Index
from radsearch.query_embedding import embed_file
from radsearch.study_refs import resolve_study_id
from radsearch.storage.store import Store
from radsearch.training.manifest import ManifestError, Pair, read_manifest


@dataclass(frozen=True)
class ReportTask:
    evaluated: list[Pair]
    corpus: list[Pair]


def _has_split_column(path: Path) -> bool:
    with open(path, newline="", encoding="utf-8") as handle:
        return "split" in (csv.DictReader(handle).fieldnames or [])


def report_task(manifests: Sequence[Path], split: str, corpus: Sequence[Path] = (),
                corpus_split: str | None = None) -> ReportTask:
    """The rows to draft (``split``'s, or every row of a manifest without a split column) and the
    corpus to draft them from (``corpus`` manifests, else the manifests' other rows), keeping only
    the rows of ``corpus_split`` when given; evaluated rows are never in the corpus."""
    evaluated: list[Pair] = []
    others: list[Pair] = []
    for path in manifests:
        rows = read_manifest(path)
        if _has_split_column(path):
            evaluated += [p for p in rows if p.split == split]
            others += [p for p in rows if p.split != split]
        else:
            evaluated += rows
    if not evaluated:
        raise ManifestError(f"no rows with split {split!r} in {', '.join(map(str, manifests))}")
    pool = [p for path in corpus for p in read_manifest(path)] if corpus else others
    if corpus_split is not None:
        pool = [p for p in pool if p.split == corpus_split]
    drafted = {p.image for p in evaluated}
    pool = [p for p in pool if p.image not in drafted]
    if not pool:
        raise ManifestError("no corpus rows to draft from: give --corpus manifests, or a manifest "
                            "with rows outside the evaluated split")
    return ReportTask(evaluated, pool)


def build_corpus_index(corpus: Sequence[Pair], work: Path, model: str,
                       log: Callable[[str], None] = lambda message: None) -> Path:
    """Index the corpus rows into ``work/index`` (again: only what changed); the index's path."""
    from radsearch.indexer import index_folder

    folder = work / "corpus"
    for i, pair in enumerate(corpus):
        row = folder / f"{i:06d}"
        row.mkdir(parents=True, exist_ok=True)
        link = row / f"image{pair.image.suffix.lower()}"
        if not link.is_symlink() or os.readlink(link) != str(pair.image):
            link.unlink(missing_ok=True)
            link.symlink_to(pair.image)
        report = row / "report.txt"
        if not report.exists() or report.read_text(encoding="utf-8") != pair.text:
            report.write_text(pair.text, encoding="utf-8")
    log(f"indexing {len(corpus)} corpus rows into {work / 'index'}")
    summary = index_folder(folder, index=work / "index", model=model, prune=True)
    if summary.failed:
        log(f"{summary.failed} corpus rows could not be read and are left out")
    return work / "index"


def _group_studies(store: Store, corpus: Sequence[Pair], work: Path) -> dict[tuple[str, str], set[str]]:
    """(source, group) -> the corpus studies of that case or patient."""
    groups: dict[tuple[str, str], set[str]] = {}
    with store.snapshot() as conn:
        for i, pair in enumerate(corpus):
            if pair.group is None:
                continue
            link = work / "corpus" / f"{i:06d}" / f"image{pair.image.suffix.lower()}"
            study_id = resolve_study_id(store, conn, str(link))
            if study_id is not None:
                key = conn.execute("SELECT key FROM studies WHERE id = ?", (study_id,)).fetchone()[0]
                groups.setdefault((pair.source, pair.group), set()).add(key)
    return groups


def draft_rows(session: DraftSession, evaluated: Sequence[Pair], drafters: Sequence[Drafter], k: int,
               groups: dict[tuple[str, str], set[str]] | None = None) -> dict[str, dict]:
    """Each drafter's drafts of the evaluated rows and its seconds per draft (the query image read
    and embedded, the neighbours found, the draft composed and cited)."""
    out = {d.name: {"drafts": [], "seconds": 0.0} for d in drafters}
    for pair in evaluated:
        began = time.perf_counter()
        vector, _ = embed_file(pair.image, session.encoder, session.store.salt,
                               ct_windows=session.store.ct_windows)
        embedding = time.perf_counter() - began
        same_case = (groups or {}).get((pair.source, pair.group or ""), set())
        for drafter in drafters:
            began = time.perf_counter()
            result = session.draft_vector(str(pair.image), vector, Exclusions(frozenset(same_case)),
                                          k, drafter)
            out[drafter.name]["drafts"].append(result.draft)
            out[drafter.name]["seconds"] += embedding + time.perf_counter() - began
    return out


def score(drafts: Sequence[str], references: Sequence[str]) -> dict:
    """NLG metrics and finding F1 (micro, macro) of drafts against their references."""
    f1 = finding_f1(drafts, references)
    return {**nlg_metrics(drafts, references),
            "finding_F1": {"micro": f1["micro"], "macro": f1["macro"]}}


def evaluate_report_drafting(task: ReportTask, drafters: Sequence[Drafter], k: int, model: str,
                             work: Path | None = None,
                             log: Callable[[str], None] = lambda message: None) -> list[dict]:
    """One result per drafter: ``{"drafter", "n", "k", "corpus", BLEU-1..4, METEOR, ROUGE-L,
    CIDEr, "finding_F1": {"micro", "macro"}, "seconds_per_draft"}``."""
    with tempfile.TemporaryDirectory(prefix="radsearch-report-eval-") as scratch:
        work = Path(work) if work is not None else Path(scratch)
        index = build_corpus_index(task.corpus, work, model, log)
        with Store.open_for_reading(index) as store:
            session = DraftSession(Index(store))
            groups = _group_studies(store, task.corpus, work)
            log(f"drafting {len(task.evaluated)} rows with {', '.join(d.name for d in drafters)}")
            drafted = draft_rows(session, task.evaluated, drafters, k, groups)
    references = [p.text for p in task.evaluated]
    results = []
    for drafter in drafters:
        made = drafted[drafter.name]
        results.append({
            "drafter": drafter.name, "n": len(references), "k": k, "corpus": len(task.corpus),
            **score(made["drafts"], references),
            "seconds_per_draft": round(made["seconds"] / len(references), 4),
        })
    return results
