"""Image-text retrieval of any registered encoder on a manifest split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radsearch.encoders import Encoder
from radsearch.training.images import read_images
from radsearch.training.manifest import Pair
from radsearch.training.metrics import bidirectional_metrics

_BATCH = 64


def evaluate_retrieval(encoder: Encoder, pairs: Sequence[Pair]) -> dict:
    """``{"n", "image_to_text": {R@1, R@5, R@10, median_rank}, "text_to_image": {...}}``.

    Ground truth is the exact pair (image ``i`` <-> text ``i``), see ``metrics``. Images are read as
    ``radsearch index`` reads them, at the encoder's input size.
    """
    if not pairs:
        raise ValueError("no pairs to evaluate")
    image_vectors = []
    for start in range(0, len(pairs), _BATCH):
        batch = pairs[start : start + _BATCH]
        frames = read_images([p.image for p in batch], encoder.image_size)
        image_vectors.append(encoder.encode_images(frames))
    texts = [p.text for p in pairs]
    # Each distinct caption encoded once, so identical captions get identical vectors.
    unique = list(dict.fromkeys(texts))
    text_vectors = encoder.encode_texts(unique)
    position = {text: i for i, text in enumerate(unique)}
    return bidirectional_metrics(
        np.concatenate(image_vectors), text_vectors[[position[t] for t in texts]]
    )
