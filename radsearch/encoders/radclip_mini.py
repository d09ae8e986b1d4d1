"""``radclip-mini``: a CLIP-style pair of real pretrained towers projected into one 512-d space.

Image tower: ImageNet EfficientNet-Lite0 (1280-d pooled features, see ``_efficientnet``), or the
Lite1 / Lite2 a weights file records (at their native 240 / 260 px input). Text tower:
all-MiniLM-L6-v2 (384-d). Both load offline from pip packages, lazily, on first use: indexing
images never loads the text tower, a text search never loads the image tower. torch, timm and
sentence-transformers are imported only here, inside methods, so ``import radsearch.encoders``
stays cheap.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.encoders import _efficientnet, _minilm, _text_runtime
from radsearch.encoders._radclip_weights import (
    DEFAULT_BACKBONE,
    IMAGE_PROJECTION,
    TEXT_PROJECTION,
    WEIGHTS_FILE,
    digest_tensors,
    file_sha256,
    initial_weights,
    load_weights,
)
from radsearch.encoders._registry import ModelLoadError, register_model
from radsearch.encoders.base import Encoder, l2_normalise, three_channels
from radsearch.encoders.slice_pooling import module_from_tensors, pool_volume

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

_DIM = 512
UNTRAINED_NAME = "radclip-mini-untrained"
_TEXT_BATCH = 64
# What an exported text graph is checked on: short, long and empty, padded together.
_PROBE_TEXTS = ("", "no acute cardiopulmonary abnormality",
                "small left pleural effusion with adjacent compressive atelectasis of the lower lobe, "
                "unchanged from the prior examination; no pneumothorax")


class RadClipMini(Encoder):
    name = "radclip-mini"
    dim = _DIM
    image_size = _efficientnet.IMAGE_SIZE
    channels = 3  # grayscale replicated, or CT in three windows
    mean = _efficientnet.MEAN
    std = _efficientnet.STD

    def __init__(
        self,
        device: str = "cpu",
        *,
        weights_file: Path | None = None,
        untrained: bool = False,
        batch_size: int = 32,
        text_runtime: str | None = None,
        backbone: str | None = None,
    ) -> None:
        """``text_runtime``: auto | onnx | torch (see ``_text_runtime``; default: the environment).
        ``backbone``: the image backbone expected (a weights file of another is refused); by
        default the one the weights file records."""
        self.device = device
        self.text_runtime = text_runtime
        self.batch_size = batch_size
        if untrained:
            self._weights = replace(initial_weights(), backbone=backbone or DEFAULT_BACKBONE)
        else:
            self._weights = load_weights(weights_file, backbone)
        self.backbone = _efficientnet.backbone(self._weights.backbone)
        self.image_size = self.backbone.image_size
        if untrained:
            self.name = UNTRAINED_NAME
        self._lock = threading.Lock()
        self._text_lock = threading.Lock()
        self._text_runner: _text_runtime.TextRunner | None = None
        self._tokenizer: Tokenizer | None = None
        self._image_tower: torch.nn.Module | None = None
        self._text_tower: SentenceTransformer | None = None
        self._slice_pooling: torch.nn.Module | None = None
        self._hash: str | None = None

    @property
    def image_tower(self) -> torch.nn.Module:
        with self._lock:
            if self._image_tower is None:
                self._image_tower = _efficientnet.build_image_tower(
                    self._weights.image_tower, self.device, self.backbone)
            return self._image_tower

    @property
    def text_tower(self) -> SentenceTransformer:
        with self._lock:
            if self._text_tower is None:
                self._text_tower = _minilm.build_text_tower(self._weights.text_tower, self.device)
            return self._text_tower

    @property
    def slice_pooling(self) -> torch.nn.Module | None:
        """The trained ``SlicePooling`` of the weights file; ``None`` when it has none."""
        if not self._weights.slice_pooling:
            return None
        with self._lock:
            if self._slice_pooling is None:
                module = module_from_tensors(self._weights.slice_pooling)
                if module.dim != _DIM:
                    raise ValueError(f"{self._weights.source}: slice pooling has dim {module.dim}, "
                                     f"expected {_DIM}")
                self._slice_pooling = module.to(self.device)
            return self._slice_pooling

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """The image tower's pooled features, float32 ``(N, 1280)``, before projection."""
        import torch

        images = self._check_images(images)
        tower = self.image_tower
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255
        batches = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = torch.tensor(images[start : start + self.batch_size], device=self.device)
                rgb = three_channels(pixels)
                x = ((rgb - mean) / std).contiguous(memory_format=torch.channels_last)
                batches.append(tower(x).float().cpu().numpy())
        if not batches:
            return np.zeros((0, _efficientnet.FEATURE_DIM), dtype=np.float32)
        return np.concatenate(batches)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """The text tower's unit-norm sentence embeddings, float32 ``(N, 384)``, before projection."""
        out = np.zeros((len(texts), _minilm.FEATURE_DIM), dtype=np.float32)
        if len(texts) == 0:
            return out
        runner, tok = self._text_runtime()
        # Similar lengths batched together: less padding to compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _TEXT_BATCH):
            rows = order[start : start + _TEXT_BATCH]
            out[rows] = runner(*_minilm.tokenize(tok, [texts[i] for i in rows]))
        return out

    def _text_runtime(self) -> tuple[_text_runtime.TextRunner, Tokenizer]:
        with self._text_lock:
            if self._text_runner is None:
                self._tokenizer = _minilm.tokenizer()
                self._text_runner = self._build_text_runner()
            return self._text_runner, self._tokenizer

    def _build_text_runner(self) -> _text_runtime.TextRunner:
        """On the CPU: ONNX Runtime from the cache, else an export of the torch graph, else the torch
        graph. On a GPU: the torch graph."""
        from radsearch.encoders._minilm_graph import SentenceGraph

        runtime = _text_runtime.requested_runtime(self.text_runtime)
        if not _text_runtime.onnx_wanted(runtime, self.device):
            return _text_runtime.TorchRunner(SentenceGraph(self.text_tower))
        key = self._text_graph_key()
        cached = _text_runtime.cached_onnx(key)
        if cached is not None:
            return cached
        probe = _minilm.tokenize(self._tokenizer, _PROBE_TEXTS)
        return _text_runtime.export_or_torch(SentenceGraph(self.text_tower), key, probe,
                                             required=runtime == "onnx")

    def _text_graph_key(self) -> str:
        """The exported graph's identity: graph version, bundled tower files, shipped text deltas."""
        from radsearch.encoders._minilm_graph import GRAPH_VERSION

        digest = hashlib.sha256(f"{GRAPH_VERSION}\n".encode())
        for path in _minilm.model_files():
            digest.update(f"{path.name} {file_sha256(str(path))}\n".encode())
        digest_tensors(digest, self._weights.text_tower)
        return digest.hexdigest()[:32]

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        return l2_normalise(self.image_features(images) @ self._weights.projections[IMAGE_PROJECTION].T)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(self.text_features(texts) @ self._weights.projections[TEXT_PROJECTION].T)

    def pool_slices(self, vectors: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        # Without trained pooling weights this is the base class's mean, which is exactly what an
        # untrained SlicePooling computes: no torch work for nothing.
        module = self.slice_pooling
        if module is None:
            return super().pool_slices(vectors, positions)
        return pool_volume(vectors, positions, module)

    def weights_hash(self) -> str:
        if self._hash is None:
            # Lite0's line is the one every index built so far was hashed with.
            digest = hashlib.sha256(f"radclip-mini/v1 image={self.backbone.arch}\n".encode())
            digest.update(f"image_tower_file {file_sha256(str(self.backbone.weights_path()))}\n".encode())
            for path in _minilm.model_files():
                digest.update(f"text_tower_file {path.name} {file_sha256(str(path))}\n".encode())
            tensors = {
                **self._weights.projections,
                **{f"image_tower.{k}": v for k, v in self._weights.image_tower.items()},
                **{f"text_tower.{k}": v for k, v in self._weights.text_tower.items()},
                # Present only when trained: untrained pooling is the plain mean, hash unchanged.
                **{f"slice_pooling.{k}": v for k, v in self._weights.slice_pooling.items()},
            }
            digest_tensors(digest, tensors)
            self._hash = digest.hexdigest()
        return self._hash

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "grayscale": "replicated to 3 channels"}

    def logit_scale(self) -> float:
        learned = self._weights.logit_scale
        return super().logit_scale() if learned is None else float(np.exp(learned))


def _create_with_weights(device: str, path: Path) -> Encoder:
    from safetensors import SafetensorError

    try:
        encoder = RadClipMini(device, weights_file=path)
    except (ValueError, SafetensorError) as error:  # a file not in the format
        raise ModelLoadError(f"{RadClipMini.name}@{path}: {error}") from None
    resolved = path.resolve()
    if resolved != WEIGHTS_FILE:
        # An index records the model's name and reopens it by that name: it must name the file.
        encoder.name = f"{RadClipMini.name}@{resolved}"
    return encoder


@register_model(
    "radclip-mini",
    dim=_DIM,
    description=(
        "EfficientNet-Lite1 (ImageNet) + all-MiniLM-L6-v2 towers, contrastively trained on "
        "radiology image-text pairs into one 512-d space; offline, CPU-friendly (built-in default)"
    ),
    weights_factory=_create_with_weights,
)
def _create(device: str) -> Encoder:
    return RadClipMini(device)


@register_model(
    UNTRAINED_NAME,
    dim=_DIM,
    description="radclip-mini before training (Lite0 and MiniLM towers, seeded projections), for comparison",
)
def _create_untrained(device: str) -> Encoder:
    return RadClipMini(device, untrained=True)
