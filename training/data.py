"""Aligned image-text pairs in memory, as the trainer feeds them to a ClipModel.

Images are either cached features of a locked tower (``(views, N, D)``: view 0 as read, the others
augmented) or uint8 frames augmented on the fly for a tower that learns. Texts are either cached
features of a locked text tower or the strings themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radsearch.training.augment import Augmentation


@dataclass
class PairData:
    texts: Sequence[str]
    image_features: np.ndarray | None = None  # float32 (views, N, D)
    frames: np.ndarray | None = None  # uint8 (N, S, S)
    text_features: np.ndarray | None = None  # float32 (N, D)
    augmentation: Augmentation | None = None

    def __post_init__(self) -> None:
        if (self.image_features is None) == (self.frames is None):
            raise ValueError("give exactly one of image_features and frames")
        n_images = len(self.frames) if self.frames is not None else self.image_features.shape[1]
        if n_images != len(self.texts) or (
            self.text_features is not None and len(self.text_features) != len(self.texts)
        ):
            raise ValueError("images, texts and text features must be aligned")

    def __len__(self) -> int:
        return len(self.texts)

    def image_inputs(
        self, indices: np.ndarray, generator: torch.Generator | None, device: str
    ) -> torch.Tensor:
        """A batch of image inputs; ``generator`` None gives the images as read (evaluation)."""
        if self.image_features is not None:
            views = np.zeros(len(indices), dtype=np.int64)
            if generator is not None:
                count = len(self.image_features)
                views = torch.randint(count, (len(indices),), generator=generator).numpy()
            return torch.from_numpy(self.image_features[views, indices]).to(device)
        frames = self.frames[indices]
        if generator is not None and self.augmentation is not None:
            frames = self.augmentation(frames, generator)
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device)

    def text_inputs(self, indices: np.ndarray, device: str) -> torch.Tensor | list[str]:
        if self.text_features is not None:
            return torch.from_numpy(self.text_features[indices]).to(device)
        return [self.texts[i] for i in indices]
