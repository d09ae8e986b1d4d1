"""radclip-mini's text tower as one plain torch graph: token ids and mask in, unit vectors out.

The arithmetic of sentence-transformers' Transformer -> mean Pooling -> Normalize for
all-MiniLM-L6-v2 (a BERT encoder), written out: the same tensors, the same order of operations
(tests compare the two). Two reasons: transformers' per-call mask building and module dispatch cost
more than the matrix products for a one-sentence query (13 ms vs 9.7 ms here), and its mask builder
is traced into constants by the ONNX exporter, while this graph exports exactly (``_text_runtime``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Bump when the graph's arithmetic changes: exported copies keyed by it are then rebuilt.
GRAPH_VERSION = "minilm-graph/1"


class _Layer(nn.Module):
    """One BERT layer: fused q/k/v projection, attention, two residual LayerNorms, GELU MLP."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, heads: int, eps: float) -> None:
        super().__init__()
        self.heads, self.eps = heads, eps
        # A constant, not h.shape[-1]: the ONNX exporter needs fixed normalised shapes.
        self.width = int(state[prefix + "attention.output.dense.weight"].shape[0])

        def take(name: str) -> torch.Tensor:
            return state[prefix + name].detach().clone()

        attention = "attention.self."
        self.register_buffer("qkv_w", torch.cat([take(f"{attention}{x}.weight") for x in ("query", "key", "value")]))
        self.register_buffer("qkv_b", torch.cat([take(f"{attention}{x}.bias") for x in ("query", "key", "value")]))
        for name, source in (("out", "attention.output.dense"), ("up", "intermediate.dense"),
                             ("down", "output.dense")):
            self.register_buffer(f"{name}_w", take(f"{source}.weight"))
            self.register_buffer(f"{name}_b", take(f"{source}.bias"))
        for name, source in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
            self.register_buffer(f"{name}_w", take(f"{source}.weight"))
            self.register_buffer(f"{name}_b", take(f"{source}.bias"))

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = h.shape[0], h.shape[1], self.width
        qkv = F.linear(h, self.qkv_w, self.qkv_b)
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask)
        context = context.transpose(1, 2).reshape(batch, length, width)
        h = F.layer_norm(h + F.linear(context, self.out_w, self.out_b), (width,), self.ln1_w, self.ln1_b, self.eps)
        hidden = F.gelu(F.linear(h, self.up_w, self.up_b))
        return F.layer_norm(h + F.linear(hidden, self.down_w, self.down_b), (width,), self.ln2_w, self.ln2_b,
                            self.eps)


class SentenceGraph(nn.Module):
    """``(input_ids, attention_mask)`` int64 ``(N, L)`` -> unit-norm mean-pooled ``(N, 384)``."""

    def __init__(self, model: SentenceTransformer) -> None:
        super().__init__()
        bert = _check_supported(model)
        config = bert.config
        state = bert.state_dict()
        self.width = config.hidden_size
        self.eps = config.layer_norm_eps
        for name in ("word", "position", "token_type"):
            self.register_buffer(f"{name}_embeddings", state[f"embeddings.{name}_embeddings.weight"].detach().clone())
        self.register_buffer("ln_w", state["embeddings.LayerNorm.weight"].detach().clone())
        self.register_buffer("ln_b", state["embeddings.LayerNorm.bias"].detach().clone())
        self.layers = nn.ModuleList(
            _Layer(state, f"encoder.layer.{i}.", config.num_attention_heads, config.layer_norm_eps)
            for i in range(config.num_hidden_layers)
        )
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        # Single-segment text: every token type is 0.
        h = (self.word_embeddings[input_ids] + self.position_embeddings[:length]
             + self.token_type_embeddings[0])
        h = F.layer_norm(h, (self.width,), self.ln_w, self.ln_b, self.eps)
        keep = attention_mask.to(h.dtype)
        # transformers' padding mask: padded keys get the dtype's minimum added to their score.
        additive_mask = ((1.0 - keep) * torch.finfo(h.dtype).min)[:, None, None, :]
        for layer in self.layers:
            h = layer(h, additive_mask)
        weights = keep[..., None]
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def _check_supported(model: SentenceTransformer) -> nn.Module:
    """The BERT model inside ``model``, after checking it is the pipeline this graph reproduces."""
    modules = [type(module).__name__ for module in model]
    if modules != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(f"text tower modules {modules}: expected Transformer, Pooling, Normalize")
    pooling = model[1].get_config_dict().get("pooling_mode")
    if pooling != "mean":
        raise ValueError(f"text tower pooling {pooling!r}: expected mean pooling")
    bert = model[0].auto_model
    config = bert.config
    if (config.model_type != "bert" or config.hidden_act != "gelu"
            or getattr(config, "position_embedding_type", "absolute") != "absolute"):
        raise ValueError(f"text tower {config.model_type}/{config.hidden_act}: expected a BERT with GELU "
                         "and absolute positions")
    return bert
