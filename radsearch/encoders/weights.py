"""radclip-mini's weights file: the public format that training writes and the encoder reads.

A safetensors file (never pickle) holding, by name:

- ``image_projection.weight`` (512, 1280) and ``text_projection.weight`` (512, 384), both required,
  applied as ``features @ weight.T`` (``torch.nn.Linear(..., bias=False)`` layout);
- optionally ``image_tower.<name>`` / ``text_tower.<name>``: replacements for the pretrained tensor
  ``<name>`` of the image tower's / the text tower's state dict (see ``towers``), same shape;
- optionally ``slice_pooling.<name>``: the state dict of a trained ``SlicePooling``
  (``slice_pooling``); without it, series are pooled by the plain mean;
- optionally ``logit_scale``: a scalar, the log of the learned inverse temperature; it changes no
  embedding.

Its header's metadata records the image backbone (``image_backbone``: ``efficientnet-lite0``, the
default, ``-lite1`` or ``-lite2``; absent means Lite0): the model runs a file on the tower it was
trained on, and ``load_weights(path, backbone=...)`` refuses a file of another backbone.

``save_weights`` stores projections and tower tensors as float16 (a small file to ship), pooling
tensors and the scale as float32. ``create_model("radclip-mini", pretrained=path)`` runs a file;
``load_weights`` reads and checks one.

    from radsearch.encoders.weights import load_weights, save_weights, weights_tensors
    tensors = weights_tensors(load_weights())          # the shipped file, by name
    save_weights({**tensors, "logit_scale": torch.tensor(4.0)}, "runs/a/radclip-mini.safetensors")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from radsearch.encoders._radclip_weights import (
    BACKBONE_KEY,
    DEFAULT_BACKBONE,
    IMAGE_PROJECTION,
    IMAGE_TOWER_PREFIX,
    LOGIT_SCALE,
    PROJECTION_SHAPES,
    TEXT_PROJECTION,
    TEXT_TOWER_PREFIX,
    WEIGHTS_FILE,
    RadClipWeights,
    initial_projections,
    initial_weights,
    load_weights,
)
from radsearch.encoders.slice_pooling import PREFIX as SLICE_POOLING_PREFIX

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKBONE_KEY",
    "DEFAULT_BACKBONE",
    "IMAGE_PROJECTION",
    "IMAGE_TOWER_PREFIX",
    "LOGIT_SCALE",
    "PROJECTION_SHAPES",
    "SLICE_POOLING_PREFIX",
    "TEXT_PROJECTION",
    "TEXT_TOWER_PREFIX",
    "WEIGHTS_FILE",
    "RadClipWeights",
    "initial_projections",
    "initial_weights",
    "load_weights",
    "save_weights",
    "weights_tensors",
]


def weights_tensors(weights: RadClipWeights) -> dict[str, torch.Tensor]:
    """``weights`` as the named tensors of the file format (what ``save_weights`` takes)."""
    import torch

    tensors = {name: torch.from_numpy(array) for name, array in weights.projections.items()}
    for prefix, part in (
        (IMAGE_TOWER_PREFIX, weights.image_tower),
        (TEXT_TOWER_PREFIX, weights.text_tower),
        (SLICE_POOLING_PREFIX, weights.slice_pooling),
    ):
        tensors.update({prefix + name: tensor for name, tensor in part.items()})
    if weights.logit_scale is not None:
        tensors[LOGIT_SCALE] = torch.tensor(weights.logit_scale, dtype=torch.float32)
    return tensors


def save_weights(
    tensors: Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    *,
    backbone: str = DEFAULT_BACKBONE,
) -> Path:
    """Write ``tensors`` (named as in the format) to the weights file ``path``; returns the path.

    The file is checked by ``load_weights`` before it replaces ``path`` (a malformed set of tensors
    raises ValueError and leaves ``path`` as it was). ``metadata``: strings kept in the file's
    header (recipe, epochs, scores). ``backbone``: the image backbone the tensors were trained on,
    recorded in the header. Readable by all: a file to share or ship, not a secret.
    """
    import torch
    from safetensors.torch import save_file

    out = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} is not a tensor")
        if name == LOGIT_SCALE:
            tensor = tensor.reshape(()) if tensor.numel() == 1 else tensor
            dtype = torch.float32
        else:
            dtype = torch.float32 if name.startswith(SLICE_POOLING_PREFIX) else torch.float16
        # Copies: safetensors refuses tensors that share memory; the caller's stay untouched.
        out[name] = tensor.detach().to("cpu", dtype=dtype, copy=True).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    save_file(out, str(staged), metadata={**(metadata or {}), BACKBONE_KEY: backbone})
    try:
        load_weights(staged, backbone)
    except ValueError as error:
        staged.unlink()
        raise ValueError(str(error).replace(str(staged), str(path))) from None
    staged.chmod(0o644)
    os.replace(staged, path)
    return path
