"""`radsearch eval zeroshot`: a thin layer over ``evaluate_zeroshot`` (no torch at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from radsearch.cli_options import JsonOpt
from radsearch.output import emit, say


def zeroshot(
    manifest: Annotated[Path, typer.Option("--manifest", help="CSV: image, label column, split")],
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the truth")],
    labels: Annotated[
        Optional[str], typer.Option("--labels", help="Comma-separated classes [default: the column's values]")
    ] = None,
    label_set: Annotated[
        Optional[str], typer.Option("--label-set", help="Use this built-in set's prompts")
    ] = None,
    finding: Annotated[
        Optional[str],
        typer.Option("--finding", help="Binary task: the column is yes/no for this finding"),
    ] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Only rows of this split")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Embedding model")] = None,
    weights: Annotated[
        Optional[Path],
        typer.Option("--weights", help="radclip-mini weights file [default: the shipped one]"),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Zero-shot accuracy, balanced accuracy, macro AUC and confusion matrix on a manifest."""
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.training.zeroshot_eval import evaluate_zeroshot

    classes = [label.strip() for label in labels.split(",")] if labels else None
    result = evaluate_zeroshot(manifest, label_column, labels=classes, label_set=label_set,
                               finding=finding,
                               split=split, model=model or DEFAULT_MODEL, weights=weights)
    emit(result, json_output, _print)


def _print(result: dict) -> None:
    for key in ("n", "accuracy", "balanced_accuracy", "macro_auc", "chance_accuracy"):
        value = result.get(key)
        say(f"{key:18} {value:.3f}" if isinstance(value, float) else f"{key:18} {value}")
    if "confusion_matrix" in result:
        say("confusion (rows truth, columns predicted): " + ", ".join(result["labels"]))
        for label, row in zip(result["labels"], result["confusion_matrix"]):
            say(f"  {label:20} {row}")
