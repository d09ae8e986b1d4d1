"""`radsearch eval report`: report drafting on a manifest split, NLG metrics and finding F1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.cli_options import JsonOpt, ModelOpt
from radsearch.output import emit, log, say
from radsearch.training.cli import ManifestOpt


def report(
    manifest: ManifestOpt,
    split: Annotated[str, typer.Option(
        "--split", help="Rows to draft (a manifest without a split column: all its rows)")] = "test",
    corpus: Annotated[Optional[list[Path]], typer.Option(
        "--corpus", help="Manifests to draft from [default: the manifests' rows outside --split]")] = None,
    corpus_split: Annotated[Optional[str], typer.Option(
        "--corpus-split", help="Draft only from corpus rows of this split, e.g. train")] = None,
    drafter: Annotated[Optional[list[str]], typer.Option(
        "--drafter", help="Drafter (see `radsearch drafters`); repeat to compare several on one "
        "corpus index")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per draft")] = 5,
    model: ModelOpt = None,
    work: Annotated[Optional[Path], typer.Option(
        "--work", help="Keep the corpus index here and reuse it next time [default: a temporary "
        "folder]")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Draft every row of a split from a corpus index; BLEU-1..4, METEOR, ROUGE-L, CIDEr, finding F1."""
    from radsearch.drafting import DEFAULT_DRAFTER, create_drafter
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.training.report_eval import evaluate_report_drafting, report_task

    drafters = [create_drafter(name) for name in (drafter or [DEFAULT_DRAFTER])]
    task = report_task(manifest, split.lower(), corpus or (),
                       corpus_split.lower() if corpus_split else None)
    results = evaluate_report_drafting(task, drafters, k, model or DEFAULT_MODEL, work, log=log)
    emit(results[0] if len(results) == 1 else results, json_output, lambda _: _print(results))


def _print(results: list[dict]) -> None:
    for r in results:
        meteor = f"{r['METEOR']:.3f}" if r["METEOR"] is not None else "n/a"
        say(f"{r['drafter']:12s} n={r['n']}  BLEU-1 {r['BLEU-1']:.3f}  BLEU-4 {r['BLEU-4']:.3f}  "
            f"METEOR {meteor}  ROUGE-L {r['ROUGE-L']:.3f}  CIDEr {r['CIDEr']:.3f}  "
            f"finding F1 {r['finding_F1']['micro']:.3f} micro / {r['finding_F1']['macro']:.3f} "
            f"macro  {r['seconds_per_draft']:.3f} s/draft")
        if r.get("METEOR_unavailable"):
            say(f"  METEOR unavailable: {r['METEOR_unavailable']}")
