"""radclip-mini's own weights: the two projections into the shared space, and optional tower deltas.

Until a trained file ships, the projections are untrained but deterministic: orthogonal matrices
from a fixed ``torch.Generator`` seed. When ``radsearch/model_weights/radclip-mini.safetensors``
exists, it is used instead. Its format (read with ``safetensors.torch.load_file`` only, never pickle):

- ``image_projection.weight`` float (512, 1280) and ``text_projection.weight`` float (512, 384),
  both required, applied as ``features @ weight.T`` (``torch.nn.Linear(..., bias=False)`` layout);
- optionally ``image_tower.<name>`` / ``text_tower.<name>``: replacements for the pretrained tensor
  ``<name>`` of the timm EfficientNet state dict / the SentenceTransformer state dict (same shape);
- optionally ``slice_pooling.<name>``: the state dict of a trained ``SlicePooling`` (see
  ``slice_pooling.py``); without it, series are pooled by the plain mean;
- optionally ``logit_scale``: a scalar, the log of the learned inverse temperature (cosine * exp of
  it = the logits the model was trained with); it does not change any embedding.

The header's metadata key ``image_backbone`` names the image tower the file was trained on
(``efficientnet-lite0``, ``-lite1`` or ``-lite2``, see ``_efficientnet``); a file without it (the
first shipped files) is Lite0's. The tower deltas and projections only make sense on that backbone
(Lite1's last stage even has Lite0's shapes), so it decides which tower runs the file, and a reader
that expects another backbone refuses the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.encoders.slice_pooling import PREFIX as SLICE_POOLING_PREFIX

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "model_weights" / "radclip-mini.safetensors"
IMAGE_PROJECTION = "image_projection.weight"
TEXT_PROJECTION = "text_projection.weight"
PROJECTION_SHAPES = {IMAGE_PROJECTION: (512, 1280), TEXT_PROJECTION: (512, 384)}
IMAGE_TOWER_PREFIX = "image_tower."
TEXT_TOWER_PREFIX = "text_tower."
LOGIT_SCALE = "logit_scale"
BACKBONE_KEY = "image_backbone"  # in the safetensors header's metadata
DEFAULT_BACKBONE = "efficientnet-lite0"

_SEED = 20240917
# The orthogonal init goes through LAPACK's QR, whose last bits may differ between BLAS builds and
# CPUs; snapping to a 2**-16 grid (far above that noise, far below anything that matters for
# cosines: ~1e-5) makes the bytes, and so the weights hash, the same on every machine.
_GRID = 2.0**16


@dataclass(frozen=True)
class RadClipWeights:
    projections: dict[str, np.ndarray]  # float32, keyed by IMAGE_PROJECTION / TEXT_PROJECTION
    image_tower: dict[str, torch.Tensor]
    text_tower: dict[str, torch.Tensor]
    source: str  # the file they came from, or "initial"
    slice_pooling: dict[str, torch.Tensor] = field(default_factory=dict)  # empty: mean pooling
    logit_scale: float | None = None  # log inverse temperature, when the file has one
    backbone: str = DEFAULT_BACKBONE  # the image tower the file was trained on


def initial_projections() -> dict[str, np.ndarray]:
    """The untrained projections: seeded orthogonal init, identical on every machine and run."""
    import torch

    generator = torch.Generator().manual_seed(_SEED)
    projections = {}
    for name, shape in PROJECTION_SHAPES.items():
        weight = torch.nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), generator=generator)
        projections[name] = (np.round(weight.numpy() * _GRID) / _GRID).astype(np.float32)
    return projections


def initial_weights() -> RadClipWeights:
    """The untrained composite: pretrained towers as they install, seeded projections."""
    return RadClipWeights(initial_projections(), {}, {}, "initial")


def load_weights(path: Path | None = None, backbone: str | None = None) -> RadClipWeights:
    """Weights from ``path``; by default the shipped file when present, else the initial ones.

    ``backbone``: the image backbone the caller will run; a file recorded for another is refused
    (ValueError), as is a file naming a backbone radsearch does not know.
    """
    if path is None:
        if not WEIGHTS_FILE.exists():
            weights = initial_weights()
            return weights if backbone is None else replace(weights, backbone=backbone)
        path = WEIGHTS_FILE
    from safetensors import safe_open
    from safetensors.torch import load_file

    from radsearch.encoders._efficientnet import BACKBONES  # here: that module imports this one

    with safe_open(str(path), "pt") as handle:
        recorded = (handle.metadata() or {}).get(BACKBONE_KEY, DEFAULT_BACKBONE)
    if recorded not in BACKBONES:
        raise ValueError(f"{path}: image backbone {recorded!r} is not one of {', '.join(BACKBONES)}")
    if backbone is not None and recorded != backbone:
        raise ValueError(f"{path} was trained on {recorded}, not {backbone}")
    tensors = load_file(str(path))
    projections = {}
    for name, shape in PROJECTION_SHAPES.items():
        tensor = tensors.pop(name, None)
        if tensor is None or tuple(tensor.shape) != shape:
            found = None if tensor is None else tuple(tensor.shape)
            raise ValueError(f"{path}: {name} must have shape {shape}, found {found}")
        projections[name] = tensor.float().numpy()
    logit_scale = tensors.pop(LOGIT_SCALE, None)
    if logit_scale is not None and logit_scale.numel() != 1:
        raise ValueError(f"{path}: {LOGIT_SCALE} must be a scalar, found shape {tuple(logit_scale.shape)}")
    towers: dict[str, dict[str, torch.Tensor]] = {
        IMAGE_TOWER_PREFIX: {}, TEXT_TOWER_PREFIX: {}, SLICE_POOLING_PREFIX: {}
    }
    for name, tensor in tensors.items():
        prefix = next((p for p in towers if name.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"{path}: unexpected tensor {name!r}")
        towers[prefix][name.removeprefix(prefix)] = tensor
    return RadClipWeights(
        projections, towers[IMAGE_TOWER_PREFIX], towers[TEXT_TOWER_PREFIX], str(path),
        slice_pooling=towers[SLICE_POOLING_PREFIX],
        logit_scale=None if logit_scale is None else float(logit_scale), backbone=recorded,
    )


def apply_overrides(module: torch.nn.Module, overrides: dict[str, torch.Tensor], tower: str) -> None:
    """Replace named tensors of ``module``'s state dict, refusing unknown names or shapes."""
    if not overrides:
        return
    state = module.state_dict()
    for name, tensor in overrides.items():
        if name not in state or state[name].shape != tensor.shape:
            raise ValueError(f"{tower} has no tensor {name!r} of shape {tuple(tensor.shape)}")
    module.load_state_dict({**state, **overrides})


@lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """sha256 of a weight file, computed once per process (the files are read-only packages)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tensors(digest: hashlib._Hash, tensors: dict[str, torch.Tensor | np.ndarray]) -> None:
    """Feed ``tensors`` to ``digest`` in name order: each one's name, dtype, shape and bytes."""
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor_bytes(tensor))


def tensor_bytes(tensor: torch.Tensor | np.ndarray) -> bytes:
    """Raw little-endian bytes of a tensor or array, for hashing."""
    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor).tobytes()
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
