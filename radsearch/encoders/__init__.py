"""Embedding models: images and texts into one L2-normalised space.

    from radsearch.encoders import create_model
    encoder = create_model()                      # "radclip-mini", cached per (name, device)
    vectors = encoder.encode_texts(["pleural effusion"])

Importing this package is cheap: torch and the pretrained towers load only when a model is built
and used.
"""

from radsearch.encoders._registry import (
    DEFAULT_MODEL,
    ModelInfo,
    create_model,
    list_models,
    register_model,
)
from radsearch.encoders.base import Encoder

# Imported for their registrations.
from radsearch.encoders import hashing_tiny, radclip_mini  # noqa: E402,F401  isort: skip

__all__ = ["DEFAULT_MODEL", "Encoder", "ModelInfo", "create_model", "list_models", "register_model"]
