"""Batches for the adapter drafter: neighbour reports as token states, written prefixes as inputs.

Training and drafting build their inputs here, so both feed the network the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radsearch.drafting.adapter_towers import FrozenTowers, pad_ids
from radsearch.drafting.adapter_vocab import Vocab


@dataclass(frozen=True)
class EncodedReport:
    """One neighbour report read by the frozen text tower (both ways), kept in half precision."""

    tower_ids: tuple[int, ...]
    states: tuple[torch.Tensor, ...]  # per tapped depth, (L, H)


def encode_reports(towers: FrozenTowers, texts: Sequence[str], limit: int,
                   batch: int = 32) -> list[EncodedReport]:
    rows = towers.token_ids(texts, limit)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # little padding per batch
    done: dict[int, EncodedReport] = {}
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        ids, mask = pad_ids([rows[i] for i in chosen], towers.pad)
        states = towers.text_states(ids, mask, causal=False)
        for j, i in enumerate(chosen):
            n = len(rows[i])
            done[i] = EncodedReport(tuple(rows[i]), tuple(s[j, :n].half() for s in states))
    return [done[i] for i in range(len(rows))]


@dataclass(frozen=True)
class NeighbourBatch:
    states: list[torch.Tensor]  # per depth (B, N, H)
    padding: torch.Tensor  # (B, N) True = padding
    classes: torch.Tensor  # (B, N)
    rank: torch.Tensor  # (B, N)


def neighbour_batch(per_query: Sequence[Sequence[EncodedReport]], vocab: Vocab) -> NeighbourBatch:
    """Each query's neighbour reports, best first, as one row of concatenated tokens."""
    lengths = [sum(len(r.tower_ids) for r in reports) for reports in per_query]
    n = max(1, max(lengths, default=1))
    depths = len(per_query[0][0].states) if per_query and per_query[0] else 0
    width = per_query[0][0].states[0].shape[1] if depths else 1
    states = [torch.zeros(len(per_query), n, width) for _ in range(depths)]
    padding = torch.ones(len(per_query), n, dtype=torch.bool)
    classes = torch.zeros(len(per_query), n, dtype=torch.long)
    rank = torch.zeros(len(per_query), n, dtype=torch.long)
    for b, reports in enumerate(per_query):
        at = 0
        for r, report in enumerate(reports):
            size = len(report.tower_ids)
            for d in range(depths):
                states[d][b, at:at + size] = report.states[d].float()
            padding[b, at:at + size] = False
            classes[b, at:at + size] = torch.tensor(vocab.classes(report.tower_ids))
            rank[b, at:at + size] = r
            at += size
    return NeighbourBatch(states, padding, classes, rank)


def prefix_inputs(towers: FrozenTowers, vocab: Vocab, prefixes: Sequence[Sequence[int]]
                  ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Written prefixes (output classes, BOS first) as (causal text states per depth, classes,
    padding)."""
    tower_rows = [vocab.tower(p) for p in prefixes]
    ids, mask = pad_ids(tower_rows, towers.pad)
    states = towers.text_states(ids, mask, causal=True)
    classes, _ = pad_ids(prefixes, Vocab.PAD)
    return states, classes, mask == 0
