"""radsearch's own checkpoints: a folder that ``create_model("checkpoint:/dir")`` (or ``"/dir"``) loads.

Layout::

    weights.safetensors   the family's tensors (safetensors only: never pickle)
    config.json           {"format": "radsearch-checkpoint", "format_version": 1,
                           "family": "radclip-mini", "dim": 512,
                           "params": {"image_tower": "tf_efficientnet_lite0", "image_size": 224},
                           "preprocessing": {...}, "weights_sha256": "..."}
    MODEL_CARD.md         what it is, the data, the command, the figures

Family ``radclip-mini``: the weights file has exactly the format of radclip-mini's shipped file
(``weights``: both projections, optional tower replacements, slice pooling, logit scale);
``params`` names the EfficientNet-Lite image tower (Lite0, Lite1 or Lite2's timm architecture) and the
input size; the weights file records the same backbone, and a checkpoint whose two disagree is
refused. ``preprocessing`` is a
record for people and tools; the loader rebuilds it from the family and ``params``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radsearch.encoders import _efficientnet
from radsearch.encoders._radclip_weights import BACKBONE_KEY, IMAGE_PROJECTION, load_weights
from radsearch.encoders._registry import CHECKPOINT_PREFIX, ModelLoadError
from radsearch.encoders.base import RESIZE_POLICY, Encoder
from radsearch.encoders.radclip_mini import RadClipMini
from radsearch.encoders.weights import weights_tensors

if TYPE_CHECKING:
    import torch

FORMAT = "radsearch-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "MODEL_CARD.md"
RADCLIP_MINI = "radclip-mini"
# The image towers radclip-mini can build (``_efficientnet``); a checkpoint naming another is refused.
IMAGE_TOWERS = tuple(b.arch for b in _efficientnet.BACKBONES.values())
_BACKBONE_OF = {b.arch: b.name for b in _efficientnet.BACKBONES.values()}
_IMAGE_SIZES = range(32, 1025)


class RadClipMiniCheckpoint(RadClipMini):
    """radclip-mini with a checkpoint's weights and input size, named by its folder."""

    def __init__(self, name: str, directory: Path, params: dict[str, Any], device: str) -> None:
        try:
            super().__init__(device, weights_file=directory / WEIGHTS_FILE,
                             backbone=_BACKBONE_OF[params["image_tower"]])
        except ValueError as error:  # _radclip_weights refuses a malformed file
            raise ModelLoadError(f"{name}: {error}") from None
        self.name = name
        self.image_size = params["image_size"]
        self._params = params

    def weights_hash(self) -> str:
        # The input size changes the outputs but not the tensors: it is hashed with them.
        digest = hashlib.sha256(f"{FORMAT}/v{FORMAT_VERSION} {RADCLIP_MINI}\n".encode())
        digest.update(json.dumps(self._params, sort_keys=True).encode() + b"\n")
        digest.update(super().weights_hash().encode())
        return digest.hexdigest()


def _radclip_mini_params(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(params) - {"image_tower", "image_size"}
    if unknown:
        raise ValueError(f"unknown radclip-mini checkpoint params: {', '.join(sorted(unknown))}")
    tower = params.get("image_tower", _efficientnet.ARCH)
    if tower not in IMAGE_TOWERS:
        raise ValueError(f"image tower {tower!r} cannot be built here (available: {', '.join(IMAGE_TOWERS)})")
    size = params.get("image_size", _efficientnet.BACKBONES[_BACKBONE_OF[tower]].image_size)
    if not isinstance(size, int) or isinstance(size, bool) or size not in _IMAGE_SIZES:
        raise ValueError(f"image_size must be an int from 32 to 1024, got {size!r}")
    return {"image_tower": tower, "image_size": size}


def _radclip_mini_preprocessing(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_size": params["image_size"],
        "channels": 3,
        "mean": list(RadClipMini.mean),
        "std": list(RadClipMini.std),
        "resize": RESIZE_POLICY,
        "grayscale": "replicated to 3 channels",
    }


def save_checkpoint(
    source: Encoder | Mapping[str, torch.Tensor],
    directory: str | Path,
    *,
    card: str,
    params: Mapping[str, Any] | None = None,
) -> Path:
    """Write a radclip-mini checkpoint folder; returns it (absolute). Loads with ``create_model``.

    ``source``: a radclip-mini encoder (its weights are saved) or the tensors of radclip-mini's
    weights file format (``image_projection.weight``, ``text_projection.weight``, optional
    ``image_tower.*``, ``text_tower.*``, ``slice_pooling.*``, ``logit_scale``). ``params``:
    ``image_tower`` (``tf_efficientnet_lite0``, the default, ``-lite1`` or ``-lite2``; an encoder's
    own by default) and ``image_size`` (default: the encoder's, else the tower's native size).
    ``card``: the MODEL_CARD.md text. An existing checkpoint in ``directory`` is replaced (the
    config is written last, so a torn write fails to load); a non-empty folder that is not one is
    refused.
    """
    import torch
    from safetensors.torch import save_file

    if isinstance(source, RadClipMini):
        tensors = weights_tensors(source._weights)
        params = {"image_tower": source.backbone.arch, "image_size": source.image_size, **(params or {})}
    elif isinstance(source, Mapping):
        tensors = dict(source)
    else:
        raise TypeError(f"cannot save a checkpoint of {type(source).__name__}: radclip-mini only")
    params = _radclip_mini_params(params or {})
    if not card.strip():
        raise ValueError("a checkpoint needs a model card")
    directory = Path(directory).expanduser().resolve()
    if directory.is_dir() and any(directory.iterdir()) and _read_config(directory) is None:
        raise ValueError(f"{directory} is not empty and holds no radsearch checkpoint")
    directory.mkdir(parents=True, exist_ok=True)
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} is not a tensor")
    # Copies: safetensors refuses tensors that share memory, and the caller's stay untouched.
    tensors = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    staged = directory / f".{WEIGHTS_FILE}.tmp"
    backbone = _BACKBONE_OF[params["image_tower"]]
    save_file(tensors, str(staged), metadata={BACKBONE_KEY: backbone})
    try:
        weights = load_weights(staged, backbone)  # the encoder's own reader checks names and shapes
    except ValueError as error:
        staged.unlink()
        raise ValueError(str(error).replace(str(staged), "checkpoint weights")) from None
    os.replace(staged, directory / WEIGHTS_FILE)
    (directory / CARD_FILE).write_text(card.rstrip() + "\n", encoding="utf-8")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": RADCLIP_MINI,
        "dim": int(weights.projections[IMAGE_PROJECTION].shape[0]),
        "params": params,
        "preprocessing": _radclip_mini_preprocessing(params),
        "weights_sha256": _sha256(directory / WEIGHTS_FILE),
    }
    staged_config = directory / f".{CONFIG_FILE}.tmp"
    staged_config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(staged_config, directory / CONFIG_FILE)
    return directory


def load_checkpoint(directory: str | Path, *, device: str = "cpu") -> Encoder:
    """The encoder of a checkpoint folder, uncached (``create_model`` caches it)."""
    directory = Path(directory).expanduser().resolve()
    name = CHECKPOINT_PREFIX + str(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"{name}: no such folder")
    config = _read_config(directory)
    if config is None:
        raise ModelLoadError(f"{name}: not a radsearch checkpoint (no {CONFIG_FILE} with "
                             f"format {FORMAT!r}){_other_format_hint(directory)}")
    if config.get("format_version") != FORMAT_VERSION or config.get("family") != RADCLIP_MINI:
        raise ModelLoadError(
            f"{name}: checkpoint format {config.get('format_version')!r} family "
            f"{config.get('family')!r} is not supported (version {FORMAT_VERSION}, {RADCLIP_MINI})"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{name}: {WEIGHTS_FILE} is missing")
    if _sha256(weights) != config.get("weights_sha256"):
        raise ModelLoadError(f"{name}: {WEIGHTS_FILE} does not match the sha256 in {CONFIG_FILE}")
    try:
        params = _radclip_mini_params(config.get("params") or {})
    except ValueError as error:
        raise ModelLoadError(f"{name}: {error}") from None
    encoder = RadClipMiniCheckpoint(name, directory, params, device)
    if encoder.dim != config.get("dim"):
        raise ModelLoadError(f"{name}: config says dim {config.get('dim')}, the weights give {encoder.dim}")
    return encoder


def _read_config(directory: Path) -> dict | None:
    """The checkpoint config in ``directory``, or None when it holds none."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("format") == FORMAT else None


def _other_format_hint(directory: Path) -> str:
    if (directory / "open_clip_config.json").is_file():
        return f"; it is an open_clip folder: use open_clip:{directory}"
    if (directory / CONFIG_FILE).is_file():
        return f"; if it is a Hugging Face CLIPModel folder, use hf-clip:{directory}"
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
