"""A CLIP-style pair: two encoders, two linear projections, a learnable temperature, InfoNCE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: keeps the softmax from collapsing onto one candidate


class ClipModel(nn.Module):
    """``image_encoder`` / ``text_encoder`` map their inputs to features (``nn.Identity`` when the
    inputs are cached features of a locked tower); the projections map features to the shared
    space, as ``features @ weight.T`` without bias."""

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_projection: torch.Tensor,
        text_projection: torch.Tensor,
        temperature: float = INIT_TEMPERATURE,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = _linear(image_projection)
        self.text_projection = _linear(text_projection)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def embed_images(self, inputs) -> torch.Tensor:
        return F.normalize(self.image_projection(self.image_encoder(inputs).float()), dim=-1)

    def embed_texts(self, inputs) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_encoder(inputs).float()), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def projection_parameters(self) -> list[nn.Parameter]:
        return [self.image_projection.weight, self.text_projection.weight]


def contrastive_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of aligned pairs (pair ``i`` is row ``i`` of both).

    ``positives`` (bool ``(B, B)``, image row, text column, the diagonal set) makes it
    multi-positive: the target of each query is spread evenly over its positives, so two images of
    one case with near-identical captions are not pushed apart as negatives. Without it, identical
    captions need no special case: their embeddings are identical, and one-hot targets then give
    the same loss as splitting the target between them.
    """
    logits = scale * image_embeddings.float() @ text_embeddings.float().T
    if positives is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    weights = positives.to(device=logits.device, dtype=logits.dtype)
    image_to_text = weights / weights.sum(dim=1, keepdim=True)
    text_to_image = weights.T / weights.T.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.T, text_to_image)) / 2


def _linear(weight: torch.Tensor) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return layer
