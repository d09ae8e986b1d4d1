"""The frozen towers the adapter drafter reads: patch grids of three image-backbone stages, and the
hidden states of three text-transformer layers, causal for the report being written.

Sizes are read from the models (``feature_info`` of the timm image backbone, the BERT config of the
text tower), never assumed. The text tower runs its own layers here rather than through the library's
forward: the report being written must be encoded *causally* (position t sees tokens 0..t only), so
that what training sees under teacher forcing is exactly what decoding sees, token by token; a
neighbour's report, which is known in full, is encoded both ways.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radsearch.drafting.adapter_model import Cache
from radsearch.encoders.base import Encoder
from radsearch.errors import RadsearchError


@dataclass(frozen=True)
class TowerShape:
    """What the adapters must fit: image stage channels, text width and the tapped depths."""

    stage_channels: tuple[int, ...]
    text_width: int
    text_depths: tuple[int, ...]  # 1-based layer numbers whose outputs are tapped


def spread_depths(layers: int, taps: int = 3) -> tuple[int, ...]:
    """``taps`` layer numbers spread evenly, ending with the last (6 layers -> 2, 4, 6)."""
    return tuple(sorted({max(1, round(layers * (i + 1) / taps)) for i in range(taps)}))


class FrozenTowers:
    """The image backbone and text tower of an encoder, frozen, with taps at three depths each."""

    def __init__(self, encoder: Encoder, grid: int = 7, taps: int = 3) -> None:
        image = getattr(encoder, "image_tower", None)
        text = getattr(encoder, "text_tower", None)
        if image is None or text is None or not hasattr(image, "feature_info"):
            raise RadsearchError(f"the adapter drafter needs an encoder with a timm image backbone and "
                                 f"a BERT-style text tower; {encoder.name} has none")
        self.encoder = encoder
        self.image = image
        self.bert = text[0].auto_model
        self.tokenizer = text.tokenizer
        if not hasattr(self.bert, "encoder") or not hasattr(self.bert.encoder, "layer"):
            raise RadsearchError(f"{encoder.name}: the text tower is not BERT-style (no encoder.layer)")
        self.max_tokens = int(getattr(text, "max_seq_length", 256) or 256)
        self.grid = grid
        stages = list(image.feature_info)[-taps:]
        self._stage_modules = [info["module"] for info in stages]
        config = self.bert.config
        self.shape = TowerShape(tuple(int(info["num_chs"]) for info in stages), int(config.hidden_size),
                                spread_depths(int(config.num_hidden_layers), taps))
        self.heads = int(config.num_attention_heads)

    # --- image -------------------------------------------------------------------------------

    def embed_with_grids(self, pixels: np.ndarray) -> tuple[np.ndarray, list[torch.Tensor]]:
        """uint8 images ``(N, S, S)`` or ``(N, 3, S, S)`` -> (the encoder's image embeddings
        ``(N, dim)``, per stage ``(N, grid*grid, C)`` float32): one pass of the backbone, each
        tapped stage's feature map average-pooled to a ``grid`` x ``grid`` patch grid."""
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in self._stage_modules}
        modules = dict(self.image.named_modules())

        def keep(name: str):
            def hook(_module, _inputs, out: torch.Tensor) -> None:
                grid = F.adaptive_avg_pool2d(out.float(), self.grid)
                captured[name].append(grid.flatten(2).transpose(1, 2).cpu())
            return hook

        hooks = [modules[name].register_forward_hook(keep(name)) for name in self._stage_modules]
        try:
            vectors = self.encoder.encode_images(pixels)
        finally:
            for hook in hooks:
                hook.remove()
        return vectors, [torch.cat(captured[name]).clone() for name in self._stage_modules]

    def image_grids(self, pixels: np.ndarray) -> list[torch.Tensor]:
        return self.embed_with_grids(pixels)[1]

    # --- text --------------------------------------------------------------------------------

    def token_ids(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Each text as the tower's WordPiece ids, ``[CLS] ... [SEP]``, at most ``limit`` ids (the
        end cut off, ``[SEP]`` kept)."""
        limit = min(limit, self.max_tokens)
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                                                   max_length=limit)["input_ids"]]

    @property
    def bos(self) -> int:
        return int(self.tokenizer.cls_token_id)

    @property
    def eos(self) -> int:
        return int(self.tokenizer.sep_token_id)

    @property
    def pad(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @torch.no_grad()
    def text_states(self, ids: torch.Tensor, mask: torch.Tensor, causal: bool,
                    cache: Cache | None = None, offset: int = 0) -> list[torch.Tensor]:
        """Hidden states ``(N, T, H)`` after each tapped layer for token ids ``(N, T)`` with padding
        ``mask`` (1 = token); ``causal``: position t attends to positions <= t only. Decoding passes
        only the new tokens (from position ``offset``) and the ``cache`` of the earlier ones."""
        bert = self.bert
        device = next(bert.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        steps = ids.shape[1]
        positions = torch.arange(offset, offset + steps, device=device)[None].expand_as(ids)
        x = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids), position_ids=positions)
        if cache is not None:
            allowed = torch.ones(steps, offset + steps, dtype=torch.bool, device=device).tril(offset)[None, None]
        else:
            allowed = mask[:, None, None, :].bool()
            if causal:
                allowed = allowed & torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
        out = []
        for number, layer in enumerate(bert.encoder.layer, start=1):
            x = _bert_layer(layer, x, allowed, self.heads, cache)
            if number in self.shape.text_depths:
                out.append(x.float().cpu())
            if number == self.shape.text_depths[-1]:
                break
        return out


def _bert_layer(layer: nn.Module, x: torch.Tensor, allowed: torch.Tensor, heads: int,
                cache: Cache | None = None) -> torch.Tensor:
    """One BERT layer (post-norm) with an explicit boolean attention mask ``(N, 1, T|1, S)``."""
    attention = layer.attention
    n, steps, width = x.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, steps, heads, width // heads).transpose(1, 2)

    q = split(attention.self.query(x))
    k = split(attention.self.key(x))
    v = split(attention.self.value(x))
    if cache is not None:
        known = cache.entries.get(id(layer))
        if known is not None:
            k, v = torch.cat([known[0], k], 2), torch.cat([known[1], v], 2)
        cache.entries[id(layer)] = (k, v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, steps, width)
    x = attention.output.LayerNorm(attention.output.dense(context) + x)
    hidden = layer.intermediate(x)
    return layer.output.LayerNorm(layer.output.dense(hidden) + x)


def pad_ids(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(N, T)`` ids and their mask (1 = token)."""
    steps = max(1, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), steps), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), steps), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask
