"""The retrieval drafter: the best-supported neighbour report, pruned and completed by consensus.

As in CXR-RePaiR and X-REM, the draft starts from one real report rather than from sentences
assembled freely, so it reads like a report; the neighbours' agreement decides which one and what
changes in it:

1. Each neighbour gets a weight, a softmax of the neighbours' image scores.
2. Report choice (a weighted medoid): each neighbour's report is scored by its own weight, by how
   closely the *other* neighbours' reports say the same (the mean, over its sentences, of the
   closest sentence's text cosine in each other report, both ways, weighted by their weights), by
   how many of the positive findings it states they state too (finding extractor, Jaccard), and by
   image–sentence similarity (the query image against its sentences in the shared space).
3. Pruning: a sentence of that report that too little of the other neighbours' weight supports
   (text cosine above ``agree_from``) is dropped, as is one on the losing side of a present/absent
   vote on a finding (the side whose neighbours weigh more wins), never all of them.
4. Completion: a sentence of another neighbour that enough of the others support is added, in the
   place it holds in its own report, unless the draft already says it (the same words, or a text
   cosine at which it would be cited for a draft sentence) or it contradicts a sentence of the draft.
5. Labels: sentences of the form ``Name: value`` (``Finding: COVID-19``) are alternatives — the
   draft states one value per name, the one the most neighbour weight states.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from radsearch.drafting._registry import register_drafter
from radsearch.drafting.base import DraftLine, Drafter, Neighbour, NeighbourSentence, ReportSource
from radsearch.drafting.citations import SUPPORT_THRESHOLD, contradicts, findings_of
from radsearch.drafting.text import normalise


@dataclass(frozen=True)
class RetrievalSettings:
    """Chosen on tuning data only (medpix2 dev, a part of covid_cxr train):
    benchmarks/tune_report_drafter.py and docs/drafting.md."""

    temperature: float = 0.2  # softmax of neighbour image scores into weights
    consensus: float = 1.0  # weight of the other reports' text agreement in a report's score
    labels: float = 1.0  # weight of the other reports' finding agreement in a report's score
    image: float = 0.0  # weight of the mean image-sentence similarity in a report's score
    agree_from: float = 0.7  # text cosine below which another neighbour's sentence does not agree
    prune_below: float = 0.0  # drop a chosen sentence supported by less of the others' weight
    add_from: float = 0.35  # add another neighbour's sentence supported by this much of the others' weight
    duplicate_from: float = 0.9  # text cosine from which two sentences are the same


_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z ]{0,30}):\s*(\S[^:]{0,40})$")


def label_name(sentence: str) -> str | None:
    """``finding`` for "Finding: COVID-19." — a short ``Name: value`` sentence — else None."""
    match = _LABEL.match(sentence)
    if match is None or len(match.group(2).split()) > 4:
        return None
    return " ".join(match.group(1).lower().split())


def neighbour_weights(neighbours: list[Neighbour], temperature: float) -> np.ndarray:
    scores = np.array([n.score for n in neighbours], dtype=np.float64)
    weights = np.exp((scores - scores.max()) / temperature)
    return weights / weights.sum()


@dataclass
class _Candidate:
    neighbour: int
    sentence: NeighbourSentence
    position: float  # relative position in its own section, 0..1
    support: float = 0.0  # the share of the other neighbours' weight that says the same


class RetrievalDrafter(Drafter):
    name = "retrieval"

    def __init__(self, settings: RetrievalSettings | None = None):
        self.settings = settings or RetrievalSettings()

    def compose(self, query: np.ndarray, neighbours: list[Neighbour],
                source: ReportSource) -> list[DraftLine]:
        s = self.settings
        candidates = _candidates(neighbours)
        if not candidates:
            return []
        weights = neighbour_weights(neighbours, s.temperature)
        matrix = np.stack([c.sentence.vector for c in candidates]).astype(np.float64)
        owner = np.array([c.neighbour for c in candidates])
        similarity = matrix @ matrix.T
        present = [n for n in range(len(neighbours)) if (owner == n).any()]
        # closest[i, n]: the cosine of candidate i's closest sentence in neighbour n's report.
        closest = np.full((len(candidates), len(neighbours)), np.nan)
        for n in present:
            closest[:, n] = similarity[:, owner == n].max(axis=1)
        agree = np.clip((closest - s.agree_from) / (1.0 - s.agree_from), 0.0, 1.0)
        for i, candidate in enumerate(candidates):
            others = [n for n in present if n != candidate.neighbour]
            total = sum(weights[n] for n in others)
            candidate.support = (sum(weights[n] * agree[i, n] for n in others) / total) if total else 0.0
        base = self._choose_report(query, neighbours, candidates, closest, owner, weights, present)
        return self._revise(base, candidates, weights, similarity)

    def _choose_report(self, query: np.ndarray, neighbours: list[Neighbour], candidates, closest,
                       owner: np.ndarray, weights: np.ndarray, present: list[int]) -> int:
        """The neighbour whose report the draft starts from (a weighted medoid, see step 2)."""
        s = self.settings
        positives = [{name for c in candidates if c.neighbour == n
                      for name, status in findings_of(c.sentence.text) if status == "positive"}
                     for n in range(len(neighbours))]
        image = np.stack([c.sentence.vector for c in candidates]) @ query
        best, best_score = present[0], -np.inf
        for n in present:
            mine = owner == n
            text = labels = total = 0.0
            for m in present:
                if m == n:
                    continue
                both_ways = 0.5 * (np.mean(closest[mine, m]) + np.mean(closest[owner == m, n]))
                union = positives[n] | positives[m]
                text += weights[m] * both_ways
                labels += weights[m] * (len(positives[n] & positives[m]) / len(union) if union else 0.0)
                total += weights[m]
            score = (weights[n] / weights.max() + s.image * float(np.mean(image[mine]))
                     + (s.consensus * text + s.labels * labels) / (total or 1.0))
            if score > best_score:
                best, best_score = n, score
        return best

    def _revise(self, base: int, candidates: list[_Candidate], weights: np.ndarray,
                similarity: np.ndarray) -> list[DraftLine]:
        s = self.settings
        losing = _losing_sides(candidates, weights)
        index = {id(c): i for i, c in enumerate(candidates)}
        own = [c for c in candidates if c.neighbour == base]
        kept = [c for c in own if c.support >= s.prune_below
                and not losing.intersection(findings_of(c.sentence.text))]
        if not kept:  # never an empty draft: the report's best-supported sentence stays
            kept = [max(own, key=lambda c: c.support)]
        chosen: list[_Candidate] = []
        for candidate in kept + sorted((c for c in candidates if c.neighbour != base
                                        and c.support >= s.add_from
                                        and c.sentence.section in {k.sentence.section for k in kept}),
                                       key=lambda c: -c.support):
            i = index[id(candidate)]
            if candidate.neighbour != base and losing.intersection(findings_of(candidate.sentence.text)):
                continue
            # An added sentence must say something the draft lacks: not what a draft sentence
            # already says in other words (the cosine from which it would cite it).
            same_from = s.duplicate_from if candidate.neighbour == base else SUPPORT_THRESHOLD
            if any(normalise(candidate.sentence.text) == normalise(c.sentence.text)
                   or similarity[i, index[id(c)]] >= same_from
                   or contradicts(candidate.sentence.text, c.sentence.text) for c in chosen):
                continue
            chosen.append(candidate)
        chosen = _one_value_per_label(chosen, candidates, weights)
        sections = list(dict.fromkeys(c.sentence.section for c in own))
        chosen.sort(key=lambda c: (sections.index(c.sentence.section), c.position, c.neighbour != base))
        return [DraftLine(c.sentence.section, c.sentence.text, c.sentence.vector) for c in chosen]


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


def _losing_sides(candidates: list[_Candidate], weights: np.ndarray) -> set[tuple[str, str]]:
    """(finding, status) of the weaker side of every present/absent disagreement."""
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
    return losing


def _one_value_per_label(chosen: list[_Candidate], candidates: list[_Candidate],
                         weights: np.ndarray) -> list[_Candidate]:
    """Each ``Name: value`` label once, with the value the most neighbour weight states."""
    votes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    first: dict[tuple[str, str], _Candidate] = {}
    for c in candidates:
        name = label_name(c.sentence.text)
        if name is not None:
            value = normalise(c.sentence.text)
            votes[name][value] += weights[c.neighbour]
            first.setdefault((name, value), c)
    out, stated = [], set()
    for c in chosen:
        name = label_name(c.sentence.text)
        if name is None:
            out.append(c)
        elif name not in stated:
            stated.add(name)
            winner = max(votes[name].items(), key=lambda item: item[1])[0]
            best = first[(name, winner)]
            out.append(_Candidate(c.neighbour, best.sentence, c.position, best.support))
    return out


@register_drafter("retrieval", description="default: the neighbour report the others agree with most, "
                  "pruned of what they do not support and completed with what most of them say")
def _retrieval() -> Drafter:
    return RetrievalDrafter()
