"""Findings retrieval: does a text query for a finding bring back the images whose captions state it?

Each caption's positive findings come from the report finding extractor
(``radsearch.drafting.findings.positive_findings``: negation-aware, so "no effusion" is no
positive). Every finding with at least ``min_positives`` positive images in the evaluated rows
becomes one text query, the finding's name through the findings prompt templates
(``label_sets.FINDING_TEMPLATES``, averaged in embedding space as zero-shot does). The images are
ranked by cosine to the query; per finding: precision@k and average precision, and their means
over findings (mAP). "No Finding" is left out: on CT and MR teaching captions it means only that
no chest observation was named.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radsearch.drafting.findings import positive_findings
from radsearch.drafting.vocabulary import NO_FINDING
from radsearch.encoders import Encoder
from radsearch.label_sets import custom_label_set
from radsearch.training.images import read_images
from radsearch.training.manifest import Pair
from radsearch.zeroshot import ZeroShotClassifier

MIN_POSITIVES = 3
TOP_K = 10
_BATCH = 64


def ranking(scores: np.ndarray) -> np.ndarray:
    """Candidates best first; equal scores keep their row order (deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def precision_at_k(scores: np.ndarray, positives: np.ndarray, k: int = TOP_K) -> float:
    """Share of the top ``k`` (or of all candidates, when fewer) that are positive."""
    top = ranking(scores)[:k]
    return float(np.asarray(positives, dtype=bool)[top].mean()) if len(top) else 0.0


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Mean over the positives of the precision at each one's rank (0 without positives)."""
    hits = np.asarray(positives, dtype=bool)[ranking(scores)]
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def finding_labels(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Finding -> bool per text: the text states it as present."""
    found = [positive_findings(text) - {NO_FINDING} for text in texts]
    names = sorted(set().union(*found)) if found else []
    return {name: np.array([name in f for f in found], dtype=bool) for name in names}


def findings_metrics(
    image_vectors: np.ndarray, query_vectors: dict[str, np.ndarray], labels: dict[str, np.ndarray],
    k: int = TOP_K,
) -> dict:
    """Per finding and mean precision@k and average precision of unit-vector text queries."""
    per_finding = {}
    for name, query in query_vectors.items():
        scores = image_vectors @ query
        per_finding[name] = {
            "positives": int(labels[name].sum()),
            f"P@{k}": precision_at_k(scores, labels[name], k),
            "AP": average_precision(scores, labels[name]),
        }
    mean = (lambda key: float(np.mean([m[key] for m in per_finding.values()]))
            if per_finding else None)
    return {"n": int(len(image_vectors)), "findings": len(per_finding), "mAP": mean("AP"),
            f"mean_P@{k}": mean(f"P@{k}"), "per_finding": per_finding}


def evaluate_findings(encoder: Encoder, pairs: Sequence[Pair], *, min_positives: int = MIN_POSITIVES,
                      k: int = TOP_K) -> dict:
    """Findings retrieval of ``encoder`` over the images of ``pairs`` labelled by their captions."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    labels = {name: positive for name, positive in finding_labels([p.text for p in pairs]).items()
              if positive.sum() >= min_positives}
    queries: dict[str, np.ndarray] = {}
    image_vectors = np.zeros((len(pairs), 1), dtype=np.float32)
    if labels:  # no query, no image to encode
        image_vectors = np.concatenate([
            encoder.encode_images(read_images([p.image for p in pairs[start : start + _BATCH]],
                                              encoder.image_size))
            for start in range(0, len(pairs), _BATCH)
        ])
        names = sorted(labels)
        vectors = ZeroShotClassifier(encoder, custom_label_set(names, findings=True)).positive
        queries = dict(zip(names, vectors))
    return {"min_positives": min_positives, **findings_metrics(image_vectors, queries, labels, k)}
