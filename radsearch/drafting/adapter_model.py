"""The adapter drafter's trainable part: cross-modal adapters on frozen towers, and a small decoder
grounded on the visual tokens and on the retrieved neighbours' report tokens (UniCrossAdapter, with
retrieval grounding and a copy path added).

At each of three depths an interaction adapter takes the image backbone's patch grid at one stage
and the text tower's states after one layer, projects both down to ``bottleneck`` dims, and:

- vision: self-attention over the patches, cross-attention to the *neighbours'* report tokens (the
  text that is known before anything is written), a small FFN, up-projection added back;
- text (the report being written): *causal* self-attention, cross-attention to the vision stream's
  bottleneck tokens, a small FFN, up-projection added back.

Vision never reads the report being written: under teacher forcing that would let every position
see the whole target through the visual tokens, which decoding cannot (the reference code's fault).
Up-projections start at zero, so every adapter starts as the identity of the frozen features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AdapterConfig:
    stage_channels: tuple[int, ...]
    text_width: int
    text_depths: tuple[int, ...]
    grid: int
    vocab_size: int
    bottleneck: int = 64
    adapter_heads: int = 4
    adapter_ffn: int = 128
    d_model: int = 256
    heads: int = 4
    layers: int = 3
    ffn: int = 512
    dropout: float = 0.1
    max_len: int = 64  # tokens of a written report, BOS and EOS included
    neighbour_tokens: int = 48  # tokens read of each neighbour's report
    k: int = 5  # neighbours read (at most)
    cross_modal: bool = True
    grounding: bool = True
    copy: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AdapterConfig:
        data = dict(data)
        for key in ("stage_channels", "text_depths"):
            data[key] = tuple(data[key])
        return cls(**data)


def causal_mask(steps: int, device: torch.device) -> torch.Tensor:
    """``True`` where attention is allowed: every position up to and including its own."""
    return torch.ones(steps, steps, dtype=torch.bool, device=device).tril()


class Cache:
    """Keys and values already computed while decoding, per attention module: a written prefix's
    (grown one position a step) and the memory's (computed once per draft)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the rows of the beams that go on (``rows``: their parents' rows)."""
        self.entries = {key: (k[rows], v[rows]) for key, (k, v) in self.entries.items()}


class Attention(nn.Module):
    """Multi-head attention, self or cross; with a ``Cache``, self-attention appends the new
    positions' keys and values and cross-attention computes the memory's only once."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None, cache: Cache | None = None) -> torch.Tensor:
        """``allowed``: boolean, broadcast to ``(B, heads, T, S)``, True where attention may go."""
        q = self._split(self.query(x))
        known = cache.entries.get(id(self)) if cache is not None else None
        if memory is not None and known is not None:
            k, v = known
        else:
            source = x if memory is None else memory
            k, v = self._split(self.key(source)), self._split(self.value(source))
            if memory is None and known is not None:
                k, v = torch.cat([known[0], k], 2), torch.cat([known[1], v], 2)
            if cache is not None:
                cache.entries[id(self)] = (k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(x.shape))


class _Block(nn.Module):
    """Pre-norm attention (self or cross) with a residual."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = Attention(width, heads, dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                allowed: torch.Tensor | None = None, cache: Cache | None = None) -> torch.Tensor:
        return x + self.attention(self.norm(x), memory, allowed, cache)


class _FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _zero_linear(width_in: int, width_out: int) -> nn.Linear:
    layer = nn.Linear(width_in, width_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _keys(padding: torch.Tensor) -> torch.Tensor:
    """A key padding mask (True = padding) as ``allowed`` for attention: ``(B, 1, 1, S)``."""
    return ~padding[:, None, None, :]


class InteractionAdapter(nn.Module):
    """One depth's adapter pair: the vision stream and the (causal) text stream, see the module."""

    def __init__(self, channels: int, text_width: int, c: AdapterConfig) -> None:
        super().__init__()
        b = c.bottleneck
        self.cross_modal = c.cross_modal
        self.down_v, self.up_v = nn.Linear(channels, b), _zero_linear(b, channels)
        self.down_t, self.up_t = nn.Linear(text_width, b), _zero_linear(b, text_width)
        self.self_v = _Block(b, c.adapter_heads, c.dropout)
        self.self_t = _Block(b, c.adapter_heads, c.dropout)
        self.ffn_v = _FeedForward(b, c.adapter_ffn, c.dropout)
        self.ffn_t = _FeedForward(b, c.adapter_ffn, c.dropout)
        if c.cross_modal:
            self.cross_v = _Block(b, c.adapter_heads, c.dropout)  # vision -> neighbours' text
            self.cross_t = _Block(b, c.adapter_heads, c.dropout)  # text -> vision
            self.down_n = nn.Linear(text_width, b)

    def vision(self, grid: torch.Tensor, neighbours: torch.Tensor | None,
               neighbour_padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the vision stream's bottleneck tokens, the adapted patch grid)."""
        v = self.self_v(self.down_v(grid))
        if self.cross_modal and neighbours is not None:
            v = self.cross_v(v, self.down_n(neighbours), _keys(neighbour_padding))
        v = self.ffn_v(v)
        return v, grid + self.up_v(v)

    def text(self, states: torch.Tensor, allowed: torch.Tensor, vision: torch.Tensor,
             cache: Cache | None = None) -> torch.Tensor:
        """The adapted text states; ``allowed`` is causal, so position t reads positions <= t only."""
        t = self.self_t(self.down_t(states), allowed=allowed, cache=cache)
        if self.cross_modal:
            t = self.cross_t(t, vision, cache=cache)
        return states + self.up_t(self.ffn_t(t))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the memory, FFN."""

    def __init__(self, c: AdapterConfig) -> None:
        super().__init__()
        self.self_attention = _Block(c.d_model, c.heads, c.dropout)
        self.cross_attention = _Block(c.d_model, c.heads, c.dropout)
        self.ffn = _FeedForward(c.d_model, c.ffn, c.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor,
                memory_allowed: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        x = self.self_attention(x, allowed=allowed, cache=cache)
        x = self.cross_attention(x, memory, memory_allowed, cache)
        return self.ffn(x)


@dataclass
class Memory:
    """What the decoder reads for one batch of queries, computed once per draft."""

    vision: list[torch.Tensor]  # per depth, the vision stream's bottleneck tokens
    tokens: torch.Tensor  # (B, M, d): visual tokens, then neighbour tokens
    padding: torch.Tensor  # (B, M) True = not a token
    neighbour_classes: torch.Tensor  # (B, N) output classes of the neighbour tokens (copy path)
    neighbour_padding: torch.Tensor  # (B, N)

    def select(self, rows: torch.Tensor) -> Memory:
        return Memory([v[rows] for v in self.vision], self.tokens[rows], self.padding[rows],
                      self.neighbour_classes[rows], self.neighbour_padding[rows])


class AdapterDrafterNet(nn.Module):
    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        c = self.config = config
        if len(c.stage_channels) != len(c.text_depths):
            raise ValueError("as many image stages as text depths are needed")
        self.adapters = nn.ModuleList(InteractionAdapter(ch, c.text_width, c) for ch in c.stage_channels)
        self.visual_in = nn.ModuleList(nn.Linear(ch, c.d_model) for ch in c.stage_channels)
        self.visual_position = nn.Parameter(torch.zeros(len(c.stage_channels), c.grid * c.grid, c.d_model))
        self.text_in = nn.ModuleList(nn.Linear(c.text_width, c.d_model) for _ in c.text_depths)
        self.neighbour_in = nn.Linear(c.text_width, c.d_model)
        self.neighbour_rank = nn.Embedding(c.k, c.d_model)
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=0)
        self.position = nn.Embedding(c.max_len, c.d_model)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))  # output weights tied to ``embed``
        if c.copy:
            self.copy_query = nn.Linear(c.d_model, c.d_model)
            self.copy_gate = nn.Linear(c.d_model, 1)
        nn.init.normal_(self.visual_position, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def memory(self, grids: list[torch.Tensor], neighbours: list[torch.Tensor] | None,
               neighbour_padding: torch.Tensor, neighbour_classes: torch.Tensor,
               neighbour_rank: torch.Tensor) -> Memory:
        """Visual tokens of every stage and (with grounding) the neighbour tokens.

        ``grids``: per stage ``(B, G*G, C)``; ``neighbours``: per text depth ``(B, N, H)`` states of
        the neighbours' reports (both ways), ``neighbour_padding`` ``(B, N)`` True = padding,
        ``neighbour_rank`` ``(B, N)`` 0-based rank of the neighbour a token comes from."""
        c = self.config
        grounded = c.grounding and neighbours is not None
        vision, tokens = [], []
        for i, adapter in enumerate(self.adapters):
            v, grid = adapter.vision(grids[i], neighbours[i] if grounded else None, neighbour_padding)
            vision.append(v)
            tokens.append(self.visual_in[i](grid) + self.visual_position[i])
        visual = torch.cat(tokens, 1)
        padding = torch.zeros(visual.shape[:2], dtype=torch.bool, device=visual.device)
        if grounded:
            nb = self.neighbour_in(neighbours[-1]) + self.neighbour_rank(neighbour_rank)
            return Memory(vision, torch.cat([visual, nb], 1), torch.cat([padding, neighbour_padding], 1),
                          neighbour_classes, neighbour_padding)
        empty = neighbour_classes[:, :0]
        return Memory(vision, visual, padding, empty, neighbour_padding[:, :0])

    def forward(self, memory: Memory, text: list[torch.Tensor], classes: torch.Tensor,
                padding: torch.Tensor, cache: Cache | None = None, offset: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """Log-probabilities ``(B, T, V)`` of the next token at every position of the written prefix.

        ``text``: per depth ``(B, T, H)`` causal text-tower states of the prefix; ``classes``
        ``(B, T)`` its output classes; ``padding`` ``(B, T)`` True = padding. Decoding passes only
        the new positions (from ``offset``) with the ``cache`` of the earlier ones; ``last_only``:
        the last position's distribution only, ``(B, 1, V)``."""
        c = self.config
        steps = classes.shape[1]
        device = classes.device
        positions = torch.arange(offset, offset + steps, device=device)
        # Causal and not padding: queries at ``positions`` read keys at 0 .. their own position.
        keys = offset + steps
        allowed = torch.ones(steps, keys, dtype=torch.bool, device=device).tril(offset)[None, None]
        if offset == 0:
            allowed = allowed & _keys(padding)
        x = self.embed(classes) + self.position(positions)
        for i, adapter in enumerate(self.adapters):
            x = x + self.text_in[i](adapter.text(text[i], allowed, memory.vision[i], cache))
        memory_allowed = _keys(memory.padding)
        for layer in self.layers:
            x = layer(x, memory.tokens, allowed, memory_allowed, cache)
        h = self.norm(x[:, -1:] if last_only else x)
        logits = h @ self.embed.weight.T + self.out_bias
        if not (c.copy and memory.neighbour_classes.shape[1]):
            return logits.log_softmax(-1)
        # Copy path: attention over the neighbour tokens, mixed in by a learned gate.
        nb = memory.tokens[:, -memory.neighbour_classes.shape[1]:]
        scores = self.copy_query(h) @ nb.transpose(1, 2) / math.sqrt(c.d_model)
        scores = scores.masked_fill(memory.neighbour_padding[:, None, :], float("-inf"))
        pointer = torch.zeros_like(logits).scatter_add(
            2, memory.neighbour_classes[:, None, :].expand(-1, h.shape[1], -1), scores.softmax(-1))
        gate = torch.sigmoid(self.copy_gate(h))
        return torch.log(gate * logits.softmax(-1) + (1 - gate) * pointer + 1e-9)


def trainable_state(net: AdapterDrafterNet) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def nll(log_probs: torch.Tensor, targets: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Mean token negative log-likelihood over non-padding targets."""
    return F.nll_loss(log_probs.flatten(0, 1), targets.flatten(), ignore_index=pad)
