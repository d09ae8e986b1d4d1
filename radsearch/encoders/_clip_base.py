"""What open_clip and Hugging Face CLIP encoders share: grayscale or 3-channel in, per-model
normalisation, hashing.

torch is imported inside functions only: building the registry must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radsearch.encoders._radclip_weights import digest_tensors, file_sha256
from radsearch.encoders.base import Encoder, l2_normalise, three_channels

if TYPE_CHECKING:
    import torch

# OpenAI CLIP's image statistics: the default of CLIP models that do not state their own.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TEXT_BATCH = 64


def square_size(size: Any) -> int:
    """A model's input size as one int; radsearch pads images to squares."""
    if isinstance(size, int):
        return size
    height, width = (int(v) for v in size)
    if height != width:
        raise ValueError(f"non-square model input {height}x{width} is not supported")
    return height


class TorchClipEncoder(Encoder):
    """A CLIP-style torch model: subclasses embed normalised 3-channel batches and token batches."""

    channels = 3  # grayscale replicated, or CT in three windows

    def __init__(
        self,
        *,
        name: str,
        model: torch.nn.Module,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str,
        identity: dict[str, Any],
        tokenizer_files: Sequence[Path] = (),
        batch_size: int = 32,
    ) -> None:
        self.name = name
        self.model = model.eval().requires_grad_(False).to(device)
        self.image_size = image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.device = device
        self.batch_size = batch_size
        self._identity = identity
        self._tokenizer_files = sorted(tokenizer_files)
        self._hash: str | None = None
        self.dim = self._probe_dim()

    @abstractmethod
    def _embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float ``(N, 3, S, S)`` -> ``(N, dim)``."""

    @abstractmethod
    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        """``N`` texts -> ``(N, dim)``."""

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            image_dim = self._embed_images(
                torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)
            ).shape[-1]
            text_dim = self._embed_texts(["x"]).shape[-1]
        if image_dim != text_dim:
            raise ValueError(f"{self.name}: image embeddings are {image_dim}-d, text {text_dim}-d")
        return int(image_dim)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = self._check_images(images)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255
        batches = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = torch.from_numpy(images[start : start + self.batch_size]).to(self.device)
                rgb = three_channels(pixels)
                batches.append(self._embed_images((rgb - mean) / std).float().cpu().numpy())
        return l2_normalise(np.concatenate(batches))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        batches = [np.zeros((0, self.dim), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), _TEXT_BATCH):
                vectors = self._embed_texts(texts[start : start + _TEXT_BATCH])
                batches.append(vectors.float().cpu().numpy())
        return l2_normalise(np.concatenate(batches))

    def weights_hash(self) -> str:
        """sha256 over the model's identity (architecture, preprocessing), tokenizer files, tensors."""
        if self._hash is None:
            digest = hashlib.sha256(json.dumps(self._identity, sort_keys=True).encode() + b"\n")
            for path in self._tokenizer_files:
                digest.update(f"tokenizer_file {path.name} {file_sha256(str(path))}\n".encode())
            digest_tensors(digest, self.model.state_dict())
            self._hash = digest.hexdigest()
        return self._hash

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "grayscale": "replicated to 3 channels"}
