"""The encoder interface every embedding model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from radsearch.encoders.slice_pooling import mean_pool

if TYPE_CHECKING:
    import torch

RESIZE_POLICY = "longest side, centred zero padding"


class Encoder(ABC):
    """Maps images and texts into one L2-normalised embedding space.

    Images arrive as uint8 ``(N, S, S)`` grayscale or ``(N, 3, S, S)`` (CT in three Hounsfield
    windows) with ``S == image_size``, already resized (longest side) and zero-padded to a centred
    square by the reader; the encoder only normalises (per channel) and runs. A grayscale image
    and its replication to three channels embed alike, so one batch may mix the two forms
    (``reading.stack_frames``).
    """

    name: str
    dim: int
    image_size: int
    # Model-side input normalisation, applied to ``pixels / 255`` per channel.
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @abstractmethod
    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S)`` or ``(N, 3, S, S)`` -> float32 ``(N, dim)`` with unit-norm rows."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> float32 ``(N, dim)`` with unit-norm rows."""

    @abstractmethod
    def weights_hash(self) -> str:
        """sha256 hex over every weight that affects the outputs."""

    def pool_slices(self, vectors: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """One series' volume embedding from its slice vectors ``(n, dim)`` in slice order and their
        positions (mm along the slice normal; ``None`` when unknown): float32 ``(dim,)``, unit length.

        Default: the mean of the slice vectors, renormalised. Models with a trained slice pooling
        override it; any override must not depend on the order of slices whose positions are known.
        """
        return mean_pool(vectors)

    def logit_scale(self) -> float:
        """The inverse temperature that turns cosines into logits (zero-shot classification).

        CLIP's trained value, 100, unless the model learned its own.
        """
        return 100.0

    def preprocessing(self) -> dict:
        """JSON-able description of the expected input, recorded in every index."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "resize": RESIZE_POLICY,
            "dtype": "uint8",
        }

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "weights_hash": self.weights_hash(),
            "preprocessing": self.preprocessing(),
        }

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        size = self.image_size
        if images.dtype != np.uint8 or images.shape[1:] not in ((size, size), (3, size, size)):
            raise ValueError(
                f"{self.name} expects uint8 images of shape (N, {size}, {size}) or "
                f"(N, 3, {size}, {size}); got {images.dtype} {images.shape}"
            )
        return images


def three_channels(pixels: torch.Tensor) -> torch.Tensor:
    """A uint8 batch, ``(N, S, S)`` grayscale (replicated) or ``(N, 3, S, S)``, as float
    ``(N, 3, S, S)`` for a model's per-channel normalisation."""
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(1).expand(-1, 3, -1, -1)
    return pixels.float()


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))
