"""The text side of training: caption rewordings and which pairs are positives of each other.

A rewording keeps what a caption says and changes how much of it a text shows: each sentence of
a caption of several sentences, and the caption less one sentence. No words are made up or
dropped inside a sentence, so a negation ("no effusion") is never turned around.

Two pairs are positives of each other when their captions are the same once case, punctuation and
spacing are set aside, or when they are of one case (group) and their captions share at least
``NEAR_IDENTICAL`` of their words (Jaccard): one finding shown on two slices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from radsearch.training.manifest import Pair

NEAR_IDENTICAL = 0.8
MAX_VARIANTS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_WORD = re.compile(r"[a-z0-9]+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def caption_variants(text: str) -> list[str]:
    """Up to ``MAX_VARIANTS`` rewordings of a caption (none for a one-sentence caption)."""
    parts = sentences(text)
    if len(parts) < 2:
        return []
    variants = [s for s in parts if len(_WORD.findall(s.lower())) >= 3]
    if len(parts) > 2:
        variants += [" ".join(parts[:i] + parts[i + 1 :]) for i in range(len(parts))]
    unique = [v for v in dict.fromkeys(variants) if v != text]
    return unique[:MAX_VARIANTS]


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def positive_groups(pairs: Sequence[Pair], near_identical: float = NEAR_IDENTICAL) -> np.ndarray:
    """int per pair; pairs with the same id are positives of each other (see the module doc)."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    by_text: dict[str, int] = {}
    by_group: dict[tuple[str, str], list[int]] = {}
    words = [_words(p.text) for p in pairs]
    for i, pair in enumerate(pairs):
        key = " ".join(_WORD.findall(pair.text.lower()))
        union(i, by_text.setdefault(key, i))
        if pair.group is not None:
            by_group.setdefault((pair.source, pair.group), []).append(i)
    for members in by_group.values():
        for x, a in enumerate(members):
            for b in members[x + 1 :]:
                union_size = len(words[a] | words[b])
                if union_size and len(words[a] & words[b]) / union_size >= near_identical:
                    union(a, b)
    return np.array([find(i) for i in range(len(pairs))], dtype=np.int64)
