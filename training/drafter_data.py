"""What the adapter drafter trains on, read once through the frozen towers and kept in memory.

For every training and dev row: the image's patch grids (the frozen image backbone at three
stages), its report as the tower's token ids with the causal text states of its prefix, and its k
neighbours: the corpus rows nearest by the encoder's image embedding, never a row of the same case
or patient (``group``) and never the same image, as ``radsearch draft`` never drafts from the
query's own study or patient. Reports are read as the metrics and the drafter read them
(``report_body``: sentences, no headings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radsearch.drafting.adapter_inputs import EncodedReport, encode_reports
from radsearch.drafting.adapter_towers import FrozenTowers, pad_ids
from radsearch.drafting.text import report_body
from radsearch.training.images import read_image
from radsearch.training.manifest import Pair


@dataclass
class Example:
    grids: list[torch.Tensor]  # per stage (G*G, C), float16
    tower_ids: list[int]  # the report, [CLS] ... [SEP]
    prefix_states: list[torch.Tensor]  # per depth (len(tower_ids) - 1, H), float16, causal
    neighbours: list[int]  # corpus rows, nearest first
    reference: str


@dataclass
class DrafterData:
    train: list[Example]
    dev: list[Example]
    corpus: list[EncodedReport]
    corpus_texts: list[str]


def _images(towers: FrozenTowers, pairs: Sequence[Pair], log: Callable[[str], None]
            ) -> tuple[np.ndarray, list[list[torch.Tensor]]]:
    """Image embeddings (N, dim) and per-row stage grids, read in chunks to bound memory."""
    size = towers.encoder.image_size
    vectors, grids = [], []
    for start in range(0, len(pairs), 64):
        chunk = np.stack([read_image(p.image, size) for p in pairs[start:start + 64]])
        embedded, stages = towers.embed_with_grids(chunk)
        vectors.append(embedded)
        grids += [[s[i].half() for s in stages] for i in range(len(chunk))]
        log(f"images {min(start + 64, len(pairs))}/{len(pairs)}")
    return np.concatenate(vectors), grids


def prefix_states(towers: FrozenTowers, rows: Sequence[Sequence[int]], batch: int = 32
                  ) -> list[list[torch.Tensor]]:
    """For each report, the causal states of its prefix (every token but the last)."""
    out: list[list[torch.Tensor] | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch):
        chosen = order[start:start + batch]
        ids, mask = pad_ids([rows[i][:-1] for i in chosen], towers.pad)
        states = towers.text_states(ids, mask, causal=True)
        for j, i in enumerate(chosen):
            n = len(rows[i]) - 1
            out[i] = [s[j, :n].half() for s in states]
    return out  # type: ignore[return-value]


def nearest_allowed(query: np.ndarray, corpus: np.ndarray, query_pairs: Sequence[Pair],
                    corpus_pairs: Sequence[Pair], k: int) -> list[list[int]]:
    """For each query row, the k corpus rows nearest by cosine, same image or case left out."""
    scores = query @ corpus.T
    out = []
    for i, pair in enumerate(query_pairs):
        ranked = np.argsort(-scores[i], kind="stable")
        allowed = [int(j) for j in ranked if corpus_pairs[j].image != pair.image
                   and (pair.group is None or (corpus_pairs[j].source, corpus_pairs[j].group)
                        != (pair.source, pair.group))]
        out.append(allowed[:k])
    return out


def build_data(towers: FrozenTowers, train: Sequence[Pair], dev: Sequence[Pair],
               corpus: Sequence[Pair], k: int, max_len: int, neighbour_tokens: int,
               log: Callable[[str], None] = lambda message: None) -> DrafterData:
    everything = {p.image: p for p in [*corpus, *train, *dev]}  # an image is read once
    log(f"reading {len(everything)} images ({len(corpus)} corpus, {len(train)} train, {len(dev)} dev rows)")
    vectors, grids = _images(towers, list(everything.values()), log)
    row_of = {image: i for i, image in enumerate(everything)}
    corpus_vectors = vectors[[row_of[p.image] for p in corpus]]
    corpus_texts = [report_body(p.text) for p in corpus]
    log("encoding the corpus reports")
    encoded = encode_reports(towers, corpus_texts, neighbour_tokens)
    sets = []
    for pairs in (train, dev):
        rows_here = [row_of[p.image] for p in pairs]
        neighbours = nearest_allowed(vectors[rows_here], corpus_vectors, pairs, corpus, k)
        texts = [report_body(p.text) for p in pairs]
        rows = towers.token_ids(texts, max_len)
        log(f"encoding {len(rows)} reports causally")
        states = prefix_states(towers, rows)
        sets.append([Example(grids[r], rows[i], states[i], neighbours[i], texts[i])
                     for i, r in enumerate(rows_here)])
    return DrafterData(sets[0], sets[1], encoded, corpus_texts)


def text_only_examples(towers: FrozenTowers, texts: Sequence[str], max_len: int) -> list[Example]:
    """Report texts without images, for the decoder's text-only pretraining."""
    texts = [report_body(t) for t in texts]
    texts = [t for t in texts if t.strip()]
    rows = towers.token_ids(texts, max_len)
    states = prefix_states(towers, rows)
    return [Example([], rows[i], states[i], [], texts[i]) for i in range(len(rows))]
