"""Aligned image-text pairs in memory, as the trainer feeds them to a ClipModel.

Images are either cached features of a locked tower or part of one (``(views, N, ...)``: view 0
as read, the others augmented) or uint8 frames augmented on the fly for a tower that learns. Texts
are either cached features of a locked text tower or the strings themselves.

A pair may have other positive texts besides its caption (``options``: rewordings of the caption,
its case's texts); a training step shows one of them. ``positive_groups`` marks pairs that are
positives of each other (one case, the same or a near-identical caption), which the multi-positive
loss does not push apart.
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
    options: Sequence[Sequence[str]] | None = None  # per pair: other positive texts
    option_features: Sequence[np.ndarray] | None = None  # per pair, float32 (len(options[i]), D)
    positive_groups: np.ndarray | None = None  # int per pair; equal ids are positives
    caption_probability: float = 0.5  # a pair with options shows its own caption this often

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

    def text_inputs(
        self, indices: np.ndarray, device: str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor | list[str], list[str]]:
        """A batch of text inputs and the strings they are; ``generator`` None gives each pair's own
        caption (evaluation), else a pair with options shows one of them half the time."""
        choice = np.full(len(indices), -1)
        if generator is not None and self.options is not None:
            draws = torch.rand(len(indices), 2, generator=generator).numpy()
            for j, i in enumerate(indices):
                count = len(self.options[i])
                if count and draws[j, 0] >= self.caption_probability:
                    choice[j] = min(int(draws[j, 1] * count), count - 1)
        strings = [self.texts[i] if c < 0 else self.options[i][c] for i, c in zip(indices, choice)]
        if self.text_features is None:
            return strings, strings
        rows = [self.text_features[i] if c < 0 else self.option_features[i][c]
                for i, c in zip(indices, choice)]
        return torch.from_numpy(np.stack(rows)).to(device), strings

    def positives(self, indices: np.ndarray, strings: Sequence[str]) -> np.ndarray:
        """bool ``(B, B)``: image ``a`` and text ``b`` of a batch belong together (the diagonal, one
        positive group, or the very same text)."""
        same_text = np.array([[a == b for b in strings] for a in strings])
        if self.positive_groups is None:
            return same_text | np.eye(len(indices), dtype=bool)
        groups = self.positive_groups[indices]
        return same_text | (groups[:, None] == groups[None, :])
