"""`radsearch eval zeroshot`: a thin layer over ``evaluate_zeroshot`` (no torch at import)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


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
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Zero-shot accuracy, balanced accuracy, macro AUC and confusion matrix on a manifest."""
    from radsearch.encoders import DEFAULT_MODEL
    from radsearch.training.zeroshot_eval import evaluate_zeroshot

    classes = [label.strip() for label in labels.split(",")] if labels else None
    result = evaluate_zeroshot(manifest, label_column, labels=classes, label_set=label_set,
                               finding=finding,
                               split=split, model=model or DEFAULT_MODEL, weights=weights)
    if json_output:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    for key in ("n", "accuracy", "balanced_accuracy", "macro_auc", "chance_accuracy"):
        value = result.get(key)
        sys.stdout.write(f"{key:18} {value:.3f}\n" if isinstance(value, float) else f"{key:18} {value}\n")
    if "confusion_matrix" in result:
        sys.stdout.write("confusion (rows truth, columns predicted): " + ", ".join(result["labels"]) + "\n")
        for label, row in zip(result["labels"], result["confusion_matrix"]):
            sys.stdout.write(f"  {label:20} {row}\n")
