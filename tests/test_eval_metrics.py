"""Retrieval metrics on hand-made similarity matrices (exact-pair ground truth, tie handling)."""

from __future__ import annotations

import numpy as np
import pytest

from radsearch.training.metrics import (
    bidirectional_metrics,
    chance_metrics,
    mean_recall,
    retrieval_metrics,
)


def test_recall_and_median_rank_by_hand():
    # Row i is the query, column i its true candidate.
    similarity = np.array([
        [0.9, 0.1, 0.2, 0.0],  # rank 1
        [0.8, 0.5, 0.1, 0.0],  # rank 2
        [0.1, 0.2, 0.3, 0.0],  # rank 1
        [0.7, 0.6, 0.5, 0.4],  # rank 4
    ])
    metrics = retrieval_metrics(similarity)
    assert metrics == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.5}
    # The other direction reads the columns: ranks 1, 2, 2, 1.
    assert retrieval_metrics(similarity.T) == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.5}


def test_ranks_beyond_k():
    n = 12
    similarity = np.eye(n)[::-1].copy()  # each query's 1 sits off the diagonal (n even)
    metrics = retrieval_metrics(similarity)
    # The true score is 0, one candidate scores 1, and the n - 2 other zeros tie with it: the rank
    # is uniform on 2 .. n, so P(rank <= 5) = 4 / (n - 1).
    assert metrics["R@1"] == 0.0
    assert metrics["R@5"] == pytest.approx(4 / (n - 1))
    assert metrics["median_rank"] == pytest.approx(2 + (n - 2) / 2)


def test_constant_scores_land_at_chance_not_at_rank_one():
    metrics = retrieval_metrics(np.zeros((20, 20)))
    chance = chance_metrics(20)["image_to_text"]
    for key in ("R@1", "R@5", "R@10", "median_rank"):
        assert metrics[key] == pytest.approx(chance[key])
    assert chance["R@5"] == 5 / 20 and chance["median_rank"] == 10.5


def test_identical_captions_share_the_hit():
    # Images 0 and 1 share one caption (texts 0 and 1 identical); image 2 has its own.
    images = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    metrics = bidirectional_metrics(images, texts)
    assert metrics["n"] == 3
    # Image -> text: texts 0 and 1 tie, so images 0 and 1 each reach their own at rank 1 or 2.
    assert metrics["image_to_text"]["R@1"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    # Text -> image: text 1 is closer to image 0 than to its own image 1 (exact pair: a miss).
    assert metrics["text_to_image"]["R@1"] == pytest.approx(2 / 3)
    assert mean_recall(metrics) == pytest.approx((2 / 3 + 2 / 3 + 4 * 1.0) / 6)


def test_shape_errors():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 images but 3 texts"):
        bidirectional_metrics(np.zeros((2, 4)), np.zeros((3, 4)))
