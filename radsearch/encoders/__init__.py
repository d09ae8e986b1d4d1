"""Embedding models: images and texts into one L2-normalised space.

    from radsearch.encoders import create_model
    encoder = create_model()                      # "radclip-mini", cached per (name, device)
    vectors = encoder.encode_texts(["pleural effusion"])

Besides the registered names, ``create_model`` loads open_clip models (``open_clip:ARCH@TAG``,
``open_clip:ARCH@/file``, ``open_clip:/dir``, ``hf-hub:ORG/REPO``), Hugging Face CLIPModel
checkpoints (``hf-clip:/dir``, ``hf-clip:/weights?config=/config.json``) and radsearch checkpoint
folders (``checkpoint:/dir``, written by ``save_checkpoint``); see ``_registry`` for the syntax.
``create_model("radclip-mini", pretrained="file.safetensors")`` runs radclip-mini with a weights file.

For training, the public parts of radclip-mini (what ``radsearch.training`` builds on):

- ``radsearch.encoders.weights``: its weights file format (``load_weights``, ``save_weights``,
  ``weights_tensors``, the tensor names, ``initial_projections``);
- ``radsearch.encoders.towers``: its pretrained towers (``build_image_tower``,
  ``build_text_tower``) and their input size, normalisation and feature sizes;
- ``radsearch.encoders.slice_pooling``: the series pooling module and its tensors.

Importing this package is cheap: torch and the pretrained towers load only when a model is built
and used.
"""

from radsearch.encoders._hub import HubUnavailableError
from radsearch.encoders._registry import (
    DEFAULT_MODEL,
    NAME_SYNTAXES,
    ModelInfo,
    ModelLoadError,
    ModelSpec,
    NameSyntax,
    UnknownModelError,
    create_model,
    list_models,
    model_name_help,
    parse_model_name,
    register_model,
)
from radsearch.encoders.base import Encoder

# Imported for their registrations.
from radsearch.encoders import hashing_tiny, radclip_mini  # noqa: E402,F401  isort: skip
from radsearch.encoders._checkpoint import load_checkpoint, save_checkpoint  # noqa: E402  isort: skip
from radsearch.encoders.towers import build_image_tower, build_text_tower  # noqa: E402  isort: skip
from radsearch.encoders.weights import load_weights, save_weights  # noqa: E402  isort: skip

__all__ = [
    "DEFAULT_MODEL",
    "NAME_SYNTAXES",
    "Encoder",
    "HubUnavailableError",
    "ModelInfo",
    "ModelLoadError",
    "ModelSpec",
    "NameSyntax",
    "UnknownModelError",
    "build_image_tower",
    "build_text_tower",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "model_name_help",
    "parse_model_name",
    "register_model",
    "save_checkpoint",
    "save_weights",
]
