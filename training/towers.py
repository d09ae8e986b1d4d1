"""radclip-mini's two pretrained towers as trainable torch modules, each lockable whole or in part.

Built on ``radsearch.encoders.towers``: outputs match radclip-mini's tower features exactly (same
normalisation, same unit-norm sentence embedding), so what is trained here is what the encoder runs
after export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from radsearch.encoders import towers


class ImageTower(nn.Module):
    """uint8 ``(N, S, S)`` grayscale -> pooled EfficientNet-Lite features ``(N, 1280)``.

    ``trainable_blocks``: None locks the tower; 0 trains it all; k > 0 trains the last k of its
    stages (``blocks``) plus the head convolution. BatchNorm statistics stay frozen in every case:
    contrastive batches here are small and all one modality, which would skew them.
    """

    def __init__(self, net: nn.Module, trainable_blocks: int | None = None) -> None:
        super().__init__()
        self.net = net
        # None: forward takes pixels. An int: forward takes the activations entering this stage
        # (the output of ``trunk()``), so a locked front runs once, through the feature cache.
        self.first_block: int | None = None
        # The encoder's normalisation, on 0..255 pixels.
        mean = torch.tensor(towers.IMAGE_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(towers.IMAGE_STD).view(1, 3, 1, 1) * 255
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        net.requires_grad_(False)
        # What the export compares against: only tensors that changed are shipped.
        self.pretrained = {} if trainable_blocks is None else _copy_state(net)
        if trainable_blocks == 0:
            net.requires_grad_(True)
        elif trainable_blocks is not None:
            for block in net.blocks[-trainable_blocks:]:
                block.requires_grad_(True)
            net.conv_head.requires_grad_(True)
            net.bn2.requires_grad_(True)

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        self.net.eval()  # frozen BatchNorm statistics, see the class docstring
        return self

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        rgb = pixels.unsqueeze(1).expand(-1, 3, -1, -1).float()
        return ((rgb - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def trunk(self, tail_blocks: int) -> ImageTrunk:
        """The front of the tower, up to its last ``tail_blocks`` stages; from now on ``forward``
        takes that front's output. Those stages and the head stay here."""
        self.first_block = len(self.net.blocks) - tail_blocks
        return ImageTrunk(self, self.first_block)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.first_block is None:
            return self.net(self.normalise(inputs)).float()
        x = inputs.float().contiguous(memory_format=torch.channels_last)
        x = self.net.bn2(self.net.conv_head(self.net.blocks[self.first_block:](x)))
        return self.net.forward_head(x).float()


class ImageTrunk(nn.Module):
    """uint8 ``(N, S, S)`` -> the activations entering stage ``first_block`` of a tower (locked).

    Its state dict is the front's weights only, so its feature-cache key differs from the whole
    tower's and from a trunk cut elsewhere."""

    def __init__(self, tower: ImageTower, first_block: int) -> None:
        super().__init__()
        self._normalise = tower.normalise  # a bound method: the tower is not a submodule here
        self.conv_stem, self.bn1 = tower.net.conv_stem, tower.net.bn1
        self.blocks = tower.net.blocks[:first_block]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(self._normalise(pixels)))
        return self.blocks(x).float().contiguous()


class TextTower(nn.Module):
    """Texts -> all-MiniLM-L6-v2 unit-norm sentence embeddings ``(N, 384)``.

    ``trainable_layers``: None locks the tower; 0 trains it all; k > 0 trains the last k
    transformer layers. Dropout stays off even while training: on CPU it makes each step about
    three times slower (no fused attention), and only a few layers learn here.
    """

    def __init__(self, model: nn.Module, trainable_layers: int | None = None) -> None:
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        self.pretrained = {} if trainable_layers is None else _copy_state(model)
        if trainable_layers == 0:
            model.requires_grad_(True)
        elif trainable_layers is not None:
            for layer in model[0].auto_model.encoder.layer[-trainable_layers:]:
                layer.requires_grad_(True)

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        self.model.eval()  # no dropout, see the class docstring
        return self

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        features = self.model.preprocess(list(texts))
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"].float()


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}


def build_image_tower(
    device: str, trainable_blocks: int | None, backbone: str = towers.DEFAULT_BACKBONE
) -> ImageTower:
    """The pretrained tower (no shipped deltas: training always starts from the offline weights)."""
    return ImageTower(towers.build_image_tower(device, backbone=backbone), trainable_blocks).to(device)


def build_text_tower(device: str, trainable_layers: int | None) -> TextTower:
    return TextTower(towers.build_text_tower(device), trainable_layers).to(device)
