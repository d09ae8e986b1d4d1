"""The retrieval drafter: a draft composed of the neighbours' own sentences.

1. Every sentence of every neighbour's report is a candidate, scored by
   - the weight of the neighbour that wrote it (a softmax of the neighbours' image scores),
   - agreement: how strongly the *other* neighbours say the same thing (for each, its closest
     sentence by text embedding, counted above ``agree_from``, weighted by that neighbour's weight),
   - image–sentence similarity: the query image against the sentence in the shared embedding space.
2. Contradictions are settled per finding before choosing (finding extractor): when candidates
   state a finding as present and others as absent, the side whose neighbours weigh more is kept
   and every sentence of the other side is dropped, so a draft never says both.
3. Sections: those that at least half the neighbours' weight has (FINDINGS, IMPRESSION, or one
   REPORT section where the reports have no headings), in the neighbours' order; each gets about as
   many sentences as the neighbours' sections have (weighted mean × ``length``).
4. In each section the best candidates are taken greedily, skipping near-duplicates of a sentence
   already taken (text cosine ≥ ``duplicate_from``, or the same words); the chosen sentences are
   written in the order they hold in their own reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from radsearch.drafting._registry import register_drafter
from radsearch.drafting.base import DraftLine, Drafter, Neighbour, NeighbourSentence, ReportSource
from radsearch.drafting.citations import contradicts, findings_of
from radsearch.drafting.text import normalise


@dataclass(frozen=True)
class RetrievalSettings:
    """Chosen on tuning data only (medpix2 dev, a part of covid_cxr train):
    benchmarks/tune_report_drafter.py and docs/drafting.md."""

    temperature: float = 0.2  # softmax of neighbour image scores into weights
    agreement: float = 1.0  # weight of agreement among neighbours in a sentence's score
    image: float = 2.0  # weight of image-sentence similarity
    agree_from: float = 0.7  # text cosine below which another neighbour does not agree at all
    duplicate_from: float = 0.9  # text cosine from which two sentences are the same
    length: float = 1.3  # draft length relative to the neighbours' (weighted mean per section)


@dataclass
class _Candidate:
    neighbour: int
    sentence: NeighbourSentence
    position: float  # relative position in its own section, 0..1
    score: float = 0.0


def neighbour_weights(neighbours: list[Neighbour], temperature: float) -> np.ndarray:
    scores = np.array([n.score for n in neighbours], dtype=np.float64)
    weights = np.exp((scores - scores.max()) / temperature)
    return weights / weights.sum()


class RetrievalDrafter(Drafter):
    name = "retrieval"

    def __init__(self, settings: RetrievalSettings | None = None):
        self.settings = settings or RetrievalSettings()

    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        s = self.settings
        weights = neighbour_weights(neighbours, s.temperature)
        candidates = _candidates(neighbours)
        if not candidates:
            return []
        matrix = np.stack([c.sentence.vector for c in candidates])
        owner = np.array([c.neighbour for c in candidates])
        similarity = matrix @ matrix.T
        agree = np.clip((similarity - s.agree_from) / (1.0 - s.agree_from), 0.0, 1.0)
        image = matrix @ query
        for i, candidate in enumerate(candidates):
            support = 0.0
            for n in range(len(neighbours)):
                if n != candidate.neighbour and (owner == n).any():
                    support += weights[n] * agree[i, owner == n].max()
            candidate.score = (weights[candidate.neighbour] + s.agreement * support
                               + s.image * float(image[i]))
        kept = _settle_contradictions(candidates, weights)
        lines: list[DraftLine] = []
        for section, count in _section_plan(neighbours, weights, s.length):
            chosen = _choose(sorted((c for c in kept if c.sentence.section == section),
                                    key=lambda c: -c.score), count, s.duplicate_from)
            chosen.sort(key=lambda c: (c.position, -c.score))
            lines += [DraftLine(section, c.sentence.text, c.sentence.vector) for c in chosen]
        return lines


def _candidates(neighbours: list[Neighbour]) -> list[_Candidate]:
    out = []
    for n, neighbour in enumerate(neighbours):
        by_section: dict[str, list[NeighbourSentence]] = defaultdict(list)
        for sentence in neighbour.sentences:
            by_section[sentence.section].append(sentence)
        for sentences in by_section.values():
            for i, sentence in enumerate(sentences):
                out.append(_Candidate(n, sentence, i / max(1, len(sentences) - 1)))
    return out


def _settle_contradictions(candidates: list[_Candidate], weights: np.ndarray) -> list[_Candidate]:
    """Drop the sentences on the weaker side of every present/absent disagreement."""
    said: dict[tuple[str, str], set[int]] = defaultdict(set)
    for c in candidates:
        for name, status in findings_of(c.sentence.text):
            said[(name, status)].add(c.neighbour)
    losing: set[tuple[str, str]] = set()
    for (name, status), who in said.items():
        if status != "positive" or (name, "negative") not in said:
            continue
        present = sum(weights[n] for n in who)
        absent = sum(weights[n] for n in said[(name, "negative")])
        losing.add((name, "negative") if present > absent else (name, "positive"))
    return [c for c in candidates if not losing.intersection(findings_of(c.sentence.text))]


def _section_plan(neighbours: list[Neighbour], weights: np.ndarray,
                  length: float) -> list[tuple[str, int]]:
    """(section, number of sentences) in draft order."""
    share: dict[str, float] = defaultdict(float)
    sentences: dict[str, float] = defaultdict(float)
    order: dict[str, float] = defaultdict(float)
    for weight, neighbour in zip(weights, neighbours):
        sections = list(dict.fromkeys(s.section for s in neighbour.sentences))
        for rank, section in enumerate(sections):
            share[section] += weight
            order[section] += weight * rank
            sentences[section] += weight * sum(s.section == section for s in neighbour.sentences)
    plan = []
    for section in sorted(share, key=lambda name: order[name] / share[name]):
        if share[section] >= 0.5:
            plan.append((section, max(1, round(length * sentences[section] / share[section]))))
    return plan


def _choose(ranked: list[_Candidate], count: int, duplicate_from: float) -> list[_Candidate]:
    chosen: list[_Candidate] = []
    seen_words: set[str] = set()
    for candidate in ranked:
        if len(chosen) == count:
            break
        words = normalise(candidate.sentence.text)
        if words in seen_words or any(
            float(np.dot(candidate.sentence.vector, c.sentence.vector)) >= duplicate_from for c in chosen
        ):
            continue
        # A sentence that contradicts one already chosen (within one neighbour's own report, or
        # on a finding the vote left open) is left out.
        if any(contradicts(candidate.sentence.text, c.sentence.text) for c in chosen):
            continue
        chosen.append(candidate)
        seen_words.add(words)
    return chosen


@register_drafter("retrieval", description="default: the neighbours' sentences, chosen by agreement among "
                  "neighbours and image-sentence similarity, deduplicated, contradictions settled")
def _retrieval() -> Drafter:
    return RetrievalDrafter()
