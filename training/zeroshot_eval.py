"""Zero-shot classification evaluated on a labelled manifest.

Manifest: an ``image`` (or ``image_path``) column relative to the manifest's folder, a label column,
optionally ``split``. Two modes:
- single-label: the classes are ``labels`` (default: the column's distinct values); rows whose value
  is none of them are left out. Accuracy, balanced accuracy, macro one-vs-rest AUC, confusion matrix.
- binary finding (``finding=...``): the column holds yes/no; the model scores the finding against its
  negation (CheXzero pair); accuracy at 0.5, balanced accuracy and AUC.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from radsearch.encoders import DEFAULT_MODEL, create_model
from radsearch.label_sets import LabelSet, custom_label_set, get_label_set
from radsearch.training.images import read_images
from radsearch.training.manifest import IMAGE_COLUMNS, ManifestError
from radsearch.zeroshot import ZeroShotClassifier

_YES = {"yes", "true", "1", "positive", "present"}
_NO = {"no", "false", "0", "negative", "absent"}


def auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic (ties count half); None without both classes."""
    positives = positives.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict:
    """probabilities ``(n, classes)``, truth ``(n,)`` class indices."""
    predicted = probabilities.argmax(axis=1)
    classes = len(labels)
    confusion = np.zeros((classes, classes), dtype=int)
    for t, p in zip(truth, predicted):
        confusion[t, p] += 1
    present = [c for c in range(classes) if confusion[c].sum() > 0]
    recalls = [confusion[c, c] / confusion[c].sum() for c in present]
    aucs = [auc(probabilities[:, c], truth == c) for c in present]
    aucs = [a for a in aucs if a is not None]
    return {
        "n": int(len(truth)),
        "labels": list(labels),
        "accuracy": float((predicted == truth).mean()) if len(truth) else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "chance_accuracy": float(max(np.bincount(truth, minlength=classes)) / len(truth))
        if len(truth) else None,
        "confusion_matrix": confusion.tolist(),  # rows: truth, columns: predicted
    }


def _restricted(name: str, classes: Sequence[str]) -> LabelSet:
    """A built-in set's prompts over a subset of its labels (matched case-insensitively)."""
    full = get_label_set(name)
    by_name = {label.lower(): label for label in full.labels}
    missing = [c for c in classes if c.lower() not in by_name]
    if missing:
        raise ManifestError(f"{missing} are not labels of the {name!r} set: {list(full.labels)}")
    return LabelSet(full.name, full.kind, tuple(by_name[c.lower()] for c in classes),
                    full.templates, full.negative_templates, full.prompt_words)


def _rows(manifest: Path, label_column: str, split: str | None) -> list[tuple[Path, str]]:
    try:
        handle = open(manifest, newline="", encoding="utf-8")
    except OSError as error:
        raise ManifestError(f"{manifest}: cannot open ({error.strerror})") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
        if image_column is None or label_column not in columns:
            raise ManifestError(
                f"{manifest}: needs an image column and {label_column!r}; found {columns}"
            )
        every_row = split is None or "split" not in columns  # no splits: evaluate every row
        return [
            ((manifest.parent / row[image_column]).resolve(), (row[label_column] or "").strip())
            for row in reader
            if every_row or (row.get("split") or "").strip().lower() == split
        ]


def evaluate_zeroshot(
    manifest: Path,
    label_column: str,
    *,
    labels: Sequence[str] | None = None,
    label_set: str | None = None,
    finding: str | None = None,
    split: str | None = None,
    model: str = DEFAULT_MODEL,
    weights: Path | None = None,
) -> dict:
    """Zero-shot metrics of ``model`` on the manifest's rows (of ``split``).

    ``label_set`` names a built-in set whose prompts to use; the classes are then ``labels`` (or the
    column's values), each of which must be one of the set's labels. ``weights``: a weights file for
    ``model`` (radclip-mini's format) to use instead of its own.
    """
    rows = _rows(Path(manifest), label_column, split)
    encoder = create_model(model, pretrained=None if weights is None else str(weights))
    if finding is not None:
        rows = [(path, value.lower()) for path, value in rows if value.lower() in _YES | _NO]
        chosen = custom_label_set([finding], findings=True)
        truth = np.array([value in _YES for _, value in rows], dtype=bool)
    else:
        classes = list(labels) if labels else sorted({value for _, value in rows if value})
        by_name = {name.lower(): i for i, name in enumerate(classes)}
        rows = [(path, value) for path, value in rows if value.lower() in by_name]
        chosen = _restricted(label_set, classes) if label_set else custom_label_set(classes)
        truth = np.array([by_name[value.lower()] for _, value in rows], dtype=int)
    if not rows:
        raise ManifestError(f"{manifest}: no rows with a usable {label_column!r} value")
    images = read_images([path for path, _ in rows], encoder.image_size)
    vectors = np.concatenate([
        encoder.encode_images(images[start : start + 64]) for start in range(0, len(images), 64)
    ])
    probabilities = ZeroShotClassifier(encoder, chosen).probabilities(vectors)
    if finding is None:
        metrics = classification_metrics(probabilities, truth, chosen.labels)
    else:
        scores = probabilities[:, 0]
        predicted = scores >= 0.5
        recalls = [float((predicted[truth == c] == c).mean()) for c in (True, False) if (truth == c).any()]
        metrics = {
            "n": int(len(truth)),
            "finding": finding,
            "positives": int(truth.sum()),
            "accuracy": float((predicted == truth).mean()),
            "balanced_accuracy": float(np.mean(recalls)),
            "macro_auc": auc(scores, truth),
            "chance_accuracy": float(max(truth.mean(), 1 - truth.mean())),
        }
    return {"model": model, "manifest": str(manifest), "split": split, **metrics}
