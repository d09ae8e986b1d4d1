"""``hashing-tiny``: a fast, deterministic, numpy-only encoder for tests and quick runs.

Not a semantic model. Images: 16x16 block means, centred per image, then a fixed random +-1
projection (which roughly preserves cosines, so similar images get similar vectors); a one-channel
model, so the channels of a 3-channel image (CT in windows) are averaged. Texts: signed hashed bag
of lower-cased word unigrams and bigrams. Every constant is derived from hashlib, so the vectors
are identical on every machine, Python and numpy version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from radsearch.encoders._registry import register_model
from radsearch.encoders.base import Encoder, l2_normalise

_DIM = 64
_GRID = 16
_IMAGE_SIZE = 64
_WORD = re.compile(r"\w+")
# Stands in for inputs with no signal (a flat image, a text without words): a unit vector anyway.
_FALLBACK = np.full(_DIM, 1.0 / np.sqrt(_DIM), dtype=np.float32)


def _projection() -> np.ndarray:
    """(256, 64) matrix of +-1/sqrt(64), its signs taken from sha256 in counter mode."""
    n_bytes = _GRID * _GRID * _DIM // 8
    stream = b"".join(
        hashlib.sha256(f"hashing-tiny/projection/{i}".encode()).digest() for i in range(n_bytes // 32)
    )
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8)).reshape(_GRID * _GRID, _DIM)
    return ((bits.astype(np.float32) * 2 - 1) / np.sqrt(_DIM)).astype(np.float32)


@lru_cache(maxsize=65536)
def _bucket(feature: str) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % _DIM, (1.0 if digest[4] & 1 else -1.0)


class HashingTiny(Encoder):
    name = "hashing-tiny"
    dim = _DIM
    image_size = _IMAGE_SIZE
    channels = 1

    def __init__(self) -> None:
        self._projection = _projection()

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        images = self._check_images(images)
        block = _IMAGE_SIZE // _GRID
        # Channels averaged with the blocks: the mean of per-channel centred grids, and exactly
        # the grayscale grid when the channels are a gray image replicated.
        channels = images.shape[1] if images.ndim == 4 else 1
        shape = (len(images), channels, _GRID, block, _GRID, block)
        grid = images.reshape(shape).mean(axis=(1, 3, 5), dtype=np.float64)
        flat = grid.reshape(len(images), _GRID * _GRID)
        centred = (flat - flat.mean(axis=1, keepdims=True)) / 255.0
        vectors = l2_normalise(centred.astype(np.float32) @ self._projection)
        flat_images = np.abs(centred).max(axis=1) < 1e-9
        vectors[flat_images] = _FALLBACK
        return vectors

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), _DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in [*words, *(f"{a} {b}" for a, b in zip(words, words[1:]))]:
                bucket, sign = _bucket(feature)
                vectors[row, bucket] += sign
        empty = ~vectors.any(axis=1)
        vectors = l2_normalise(vectors)
        vectors[empty] = _FALLBACK
        return vectors

    def weights_hash(self) -> str:
        digest = hashlib.sha256(b"hashing-tiny/v1 blake2b-8 signed unigrams+bigrams mod 64\n")
        digest.update(self._projection.astype("<f4").tobytes())
        return digest.hexdigest()

    def preprocessing(self) -> dict:
        return {
            **super().preprocessing(),
            "normalisation": "16x16 block mean, per-image mean subtracted, /255, channels averaged",
        }


@register_model(
    "hashing-tiny",
    dim=_DIM,
    description="deterministic numpy-only hashing encoder for tests and quick runs (not semantic)",
)
def _create(device: str) -> Encoder:
    return HashingTiny()  # numpy only: the device does not matter
