"""Radiology-safe image augmentation on the reader's uint8 squares.

Small geometric changes (rotation, scale / crop, shift) and intensity changes (brightness,
contrast, gamma) that a different scanner, window or positioning could produce. No horizontal flip
by default: left and right are findings in radiology (situs, laterality of a lesion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Augmentation:
    rotate_degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.15)  # > 1 zooms in, i.e. a crop of the image
    shift: float = 0.05  # of the side
    brightness: float = 0.1  # added, on 0..1
    contrast: float = 0.15  # multiplied around the mean, 1 +- this
    gamma: tuple[float, float] = (0.8, 1.25)
    horizontal_flip: bool = False

    def __call__(self, images: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """uint8 ``(N, S, S)`` -> augmented uint8 ``(N, S, S)``; random draws from ``generator``."""
        import torch
        import torch.nn.functional as F

        n = len(images)
        if n == 0:
            return images

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

        x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1)
        angle = uniform(-self.rotate_degrees, self.rotate_degrees) * math.pi / 180
        scale = torch.exp(uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        flip = torch.ones(n, dtype=torch.float64)
        if self.horizontal_flip:
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(-self.shift, self.shift) * 2], dim=1),
                torch.stack([sin * flip, cos, uniform(-self.shift, self.shift) * 2], dim=1),
            ],
            dim=1,
        ).float()
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Zero fill: the reader pads with zeros too, so new borders look like its padding.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        view = (n, 1, 1, 1)
        gamma = torch.exp(uniform(math.log(self.gamma[0]), math.log(self.gamma[1]))).float().view(view)
        x = x.clamp(0, 1).pow(gamma)
        contrast = uniform(1 - self.contrast, 1 + self.contrast).float().view(view)
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + uniform(-self.brightness, self.brightness).float().view(view)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
