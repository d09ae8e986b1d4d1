"""Retrieval metrics over a square similarity matrix whose diagonal holds the true pairs.

Ground truth is the exact pair: image ``i`` belongs with text ``i`` only, even where another row
has the same caption or comes from the same case. Ties are scored as the expectation over a random
tie order: with ``g`` candidates scoring higher than the true one and ``t`` others scoring the same,
the rank is uniform on ``g + 1 .. g + 1 + t``. So two identical captions share a hit, and a model
that gives every candidate the same score lands at chance instead of at rank 1.
"""

from __future__ import annotations

import numpy as np

RECALL_AT = (1, 5, 10)


def true_pair_ranks(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: (candidates scoring higher than the true pair, others scoring the same)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got shape {similarity.shape}")
    true = np.diag(similarity)[:, None]
    higher = (similarity > true).sum(axis=1)
    ties = (similarity == true).sum(axis=1) - 1  # minus the true pair itself
    return higher, ties


def retrieval_metrics(similarity: np.ndarray) -> dict:
    """Recall@1/5/10 and median rank, queries along rows (``similarity[query, candidate]``)."""
    higher, ties = true_pair_ranks(similarity)
    out = {}
    for k in RECALL_AT:
        # P(rank <= k) with the rank uniform on higher + 1 .. higher + 1 + ties.
        hit = np.clip((k - higher) / (ties + 1), 0.0, 1.0)
        out[f"R@{k}"] = float(hit.mean()) if len(hit) else 0.0
    expected_rank = higher + 1 + ties / 2
    out["median_rank"] = float(np.median(expected_rank)) if len(expected_rank) else 0.0
    return out


def bidirectional_metrics(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> dict:
    """``{"n", "image_to_text", "text_to_image"}`` for row-aligned unit-norm embeddings."""
    image_embeddings = np.asarray(image_embeddings, dtype=np.float32)
    text_embeddings = np.asarray(text_embeddings, dtype=np.float32)
    if image_embeddings.shape[0] != text_embeddings.shape[0]:
        raise ValueError(f"{len(image_embeddings)} images but {len(text_embeddings)} texts")
    # Scored against the distinct rows only, then spread back: identical captions (or images) get
    # bit-identical scores and so count as ties, whatever order the matrix product sums in.
    images, image_index = np.unique(image_embeddings, axis=0, return_inverse=True)
    texts, text_index = np.unique(text_embeddings, axis=0, return_inverse=True)
    similarity = (images @ texts.T)[image_index.reshape(-1)][:, text_index.reshape(-1)]
    return {
        "n": int(similarity.shape[0]),
        "image_to_text": retrieval_metrics(similarity),
        "text_to_image": retrieval_metrics(similarity.T),
    }


def chance_metrics(n: int) -> dict:
    """What random scores give on ``n`` pairs: R@k = k / n, median rank (n + 1) / 2."""
    one_way = {f"R@{k}": min(k / n, 1.0) for k in RECALL_AT} if n else {f"R@{k}": 0.0 for k in RECALL_AT}
    one_way["median_rank"] = (n + 1) / 2
    return {"n": n, "image_to_text": dict(one_way), "text_to_image": dict(one_way)}


def mean_recall(metrics: dict) -> float:
    """One number to choose checkpoints by: the mean of R@1/5/10 over both directions."""
    values = [metrics[d][f"R@{k}"] for d in ("image_to_text", "text_to_image") for k in RECALL_AT]
    return float(np.mean(values))
