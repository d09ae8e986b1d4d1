"""Citations: for each draft sentence, the neighbour sentences that say the same thing.

A neighbour sentence supports a draft sentence when their text embeddings are close (cosine at
least ``SUPPORT_THRESHOLD``) and the finding extractor finds no contradiction between them ("no
pleural effusion" never supports "small left pleural effusion", however close their embeddings).
Each neighbour is cited once, by its best supporting sentence, best first; a sentence no neighbour
supports gets no citation and is shown as unsupported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from radsearch.drafting.base import Citation, DraftLine, DraftSentence, Neighbour
from radsearch.drafting.findings import sentence_findings

SUPPORT_THRESHOLD = 0.8
_OPPOSITE = {("positive", "negative"), ("negative", "positive")}


@lru_cache(maxsize=65536)
def findings_of(sentence: str) -> tuple[tuple[str, str], ...]:
    """The sentence's findings and statuses (cached: neighbour sentences recur across drafts)."""
    return tuple(sorted(sentence_findings(sentence).items()))


def contradicts(a: str, b: str) -> bool:
    """Whether one sentence states as present a finding the other states as absent."""
    theirs = dict(findings_of(b))
    return any((status, theirs.get(name)) in _OPPOSITE for name, status in findings_of(a))


def cite(lines: Sequence[DraftLine], neighbours: Sequence[Neighbour],
         encode_texts: Callable[[list[str]], np.ndarray]) -> list[DraftSentence]:
    """The draft's sentences with their citations; lines without a vector are encoded first."""
    missing = [line.text for line in lines if line.vector is None]
    encoded = iter(encode_texts(missing)) if missing else iter(())
    vectors = [line.vector if line.vector is not None else next(encoded) for line in lines]
    out = []
    for line, vector in zip(lines, vectors):
        citations = []
        for number, neighbour in enumerate(neighbours, start=1):
            best: tuple[float, str] | None = None
            for sentence in neighbour.sentences:
                score = float(np.dot(vector, sentence.vector))
                if score >= SUPPORT_THRESHOLD and (best is None or score > best[0]) \
                        and not contradicts(line.text, sentence.text):
                    best = (score, sentence.text)
            if best is not None:
                citations.append(Citation(number, neighbour.study, best[1], round(best[0], 4)))
        citations.sort(key=lambda c: -c.score)
        out.append(DraftSentence(line.text, line.section, citations))
    return out
