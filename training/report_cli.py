"""`radsearch eval report`: report drafting on a manifest split, NLG metrics and finding F1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.drafting._registry import DEFAULT_DRAFTER


def report(
    manifest: Annotated[list[Path], typer.Option(
        "--manifest", help="CSV of image-text pairs (image or image_path, text, split, group); repeat "
        "for several")],
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
    model: Annotated[Optional[str], typer.Option("--model", help="Embedding model (see `models`)")] = None,
    work: Annotated[Optional[Path], typer.Option(
        "--work", help="Keep the corpus index here and reuse it next time [default: a temporary "
        "folder]")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Draft every row of a split from a corpus index; BLEU-1..4, METEOR, ROUGE-L, CIDEr, finding F1."""
    from radsearch.drafting import create_drafter
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.training.report_eval import evaluate_report_drafting, report_task

    drafters = [create_drafter(name) for name in (drafter or [DEFAULT_DRAFTER])]
    task = report_task(manifest, split.lower(), corpus or (),
                       corpus_split.lower() if corpus_split else None)
    results = evaluate_report_drafting(task, drafters, k, model or DEFAULT_MODEL, work,
                                       log=lambda message: typer.echo(message, err=True))
    if json_output:
        data = results[0] if len(results) == 1 else results
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    for r in results:
        meteor = f"{r['METEOR']:.3f}" if r["METEOR"] is not None else "n/a"
        typer.echo(f"{r['drafter']:12s} n={r['n']}  BLEU-1 {r['BLEU-1']:.3f}  BLEU-4 {r['BLEU-4']:.3f}  "
                   f"METEOR {meteor}  ROUGE-L {r['ROUGE-L']:.3f}  CIDEr {r['CIDEr']:.3f}  "
                   f"finding F1 {r['finding_F1']['micro']:.3f} micro / {r['finding_F1']['macro']:.3f} "
                   f"macro  {r['seconds_per_draft']:.3f} s/draft")
        if r.get("METEOR_unavailable"):
            typer.echo(f"  METEOR unavailable: {r['METEOR_unavailable']}")
