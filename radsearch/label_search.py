"""Label queries over a whole index: the stored studies the zero-shot classifier assigns a label.

    from radsearch.label_search import label_query
    label_query("pleural effusion", min_prob=0.7, filters=Filters(modality="CR"))
    label_query("CT", label_set="modality", min_prob=0.8)

No stored vector is re-encoded: the label's prompts are embedded once and the question becomes a
threshold search along one direction, through the back end's ordinary filtered search.

- A finding (a label of a findings set such as chexpert, or one label alone) has
  ``p = sigmoid(scale * x.(t_pos - t_neg))``, linear in the unit study vector ``x`` before the
  sigmoid: ``p >= P`` exactly when ``x.u >= logit(P) / (scale * |d|)`` with ``d = t_pos - t_neg``
  and ``u = d / |d|``.
- A label ``l`` of a single-label set (softmax over the set): ``p_l >= P`` implies, for any
  weights ``w`` over the competing labels, ``scale * x.(t_l - sum_j w_j t_j) >= logit(P) + H(w)``
  (Jensen's inequality; ``H`` the entropy; one competitor alone gives the pairwise bound
  ``x.(t_l - t_j) >= logit(P) / scale``). That necessary condition, with the weights that prune
  most on a sample of the studies, gives candidates whose stored vectors are then fetched and
  classified exactly.

Every back end ranks by inner product; ``u`` is a unit vector, so its scores are cosines and the
threshold is rescaled by ``|d|``. The search asks for k points - k estimated from a sample of the
studies, then doubled until the last score falls below the threshold or the collection ends. A
finding's probability comes from the score; studies within MARGIN of the threshold are decided on
their stored vectors, as :class:`~radsearch.zeroshot.ZeroShotClassifier` computes it. So the answer
equals classifying every stored study vector and keeping ``p >= P`` - on an exact index (FAISS
below 50,000 vectors or ``faiss_index=flat``, qdrant below its full-scan threshold); an approximate
one (HNSW) can miss a few studies (see benchmarks/label_query.py for its recall).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.storage.backends import Backend, Hit, PointFilter
from radsearch.encoders import Encoder
from radsearch.errors import RadsearchError
from radsearch.filters import Filters
from radsearch.label_sets import (
    FINDINGS,
    LABEL_SETS,
    SINGLE,
    LabelSet,
    custom_label_set,
    get_label_set,
)
from radsearch.retrieval import ImageHit, unmatched_filters
from radsearch.zeroshot import ZeroShotClassifier

if TYPE_CHECKING:
    from radsearch.index_handle import Index

STUDIES = "studies"
FIRST_K = 256  # the least first k of the threshold search
# Studies sampled (those passing the filters) to estimate the first k and to choose a single-label
# query's direction.
SAMPLE = 512
# The back end's float32 inner products may differ from the classifier's in the last bits: studies
# this close (in cosine) to the threshold are decided on their stored vectors.
MARGIN = 1e-4
_FETCH_CHUNK = 500


@dataclass
class LabelHit:
    study: str
    probability: float  # as `radsearch classify` gives it for this study
    study_date: str | None
    description: str | None
    modalities: list[str]
    body_parts: list[str]
    images: list[ImageHit] = field(default_factory=list)  # the study's first images


@dataclass
class LabelQueryResults:
    label: str
    label_set: str
    kind: str  # "findings" (label vs "no label") or "single" (softmax over the set)
    min_prob: float
    model: str
    candidates: int  # studies the threshold search returned (a superset of the hits)
    hits: list[LabelHit]  # most probable first
    # With no hits: the values the index holds for each filter no study matches (see
    # radsearch.retrieval.unmatched_filters)
    unmatched_filters: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LabelChoice:
    """What a label query classifies against: ``label`` within ``label_set`` (of its kind)."""

    label: str
    label_set: LabelSet


def resolve_label(
    label: str,
    *,
    labels: str | list[str] | None = None,
    label_set: str | None = None,
    findings: bool | None = None,
) -> LabelChoice:
    """The label and its set. ``label_set``: a built-in set; ``labels``: the competing labels
    (single-label unless ``findings``); neither: the finding of that name in a built-in findings
    set (chexpert's "Pleural Effusion" for "pleural effusion"), else a finding of its own.
    ``findings`` True/False scores a set's labels as findings / with a softmax whatever its kind."""
    if not label or not label.strip():
        raise RadsearchError("empty --label")
    if labels is not None and label_set is not None:
        raise RadsearchError("give either --labels or --label-set, not both")
    if label_set is not None:
        chosen = get_label_set(label_set)
    elif labels is not None:
        chosen = custom_label_set(labels, findings=bool(findings))
    else:
        chosen = _built_in_finding(label) or custom_label_set([label.strip()], findings=True)
    if findings is not None and chosen.kind != (FINDINGS if findings else SINGLE):
        chosen = dataclasses.replace(chosen, kind=FINDINGS if findings else SINGLE)
    if chosen.kind == SINGLE and len(chosen.labels) < 2:
        raise RadsearchError("a single-label query needs competing labels: give --labels or "
                             "--label-set")
    matches = [name for name in chosen.labels if name.casefold() == label.strip().casefold()]
    if not matches:
        where = "--labels" if labels is not None else chosen.name
        raise RadsearchError(f"label {label!r} is not in {where}: use one of "
                             f"{', '.join(chosen.labels)}")
    return LabelChoice(matches[0], chosen)


def _built_in_finding(label: str) -> LabelSet | None:
    for label_set in LABEL_SETS.values():
        if label_set.kind == FINDINGS and any(
                name.casefold() == label.strip().casefold() for name in label_set.labels):
            return label_set
    return None


def check_min_prob(min_prob: float) -> float:
    if not 0.0 < min_prob < 1.0:
        raise RadsearchError(f"--min-prob must lie strictly between 0 and 1, not {min_prob}")
    return float(min_prob)


def label_classifier(encoder: Encoder, choice: LabelChoice) -> ZeroShotClassifier:
    """The classifier of a label query: a finding needs only its own prompt pair embedded."""
    label_set = choice.label_set
    if label_set.kind == FINDINGS:
        label_set = dataclasses.replace(label_set, labels=(choice.label,))
    return ZeroShotClassifier(encoder, label_set)


def label_query(
    label: str,
    *,
    min_prob: float = 0.5,
    labels: str | list[str] | None = None,
    label_set: str | None = None,
    findings: bool | None = None,
    filters: Filters | None = None,
    index: Path | None = None,
    backend: str | None = None,
    url: str | None = None,
    limit: int | None = None,
) -> LabelQueryResults:
    """The indexed studies whose zero-shot probability of ``label`` is at least ``min_prob``, most
    probable first (the ``limit`` most probable when given), among those that pass ``filters``.

    ``labels``/``label_set``/``findings``: see :func:`resolve_label`. ``backend``/``url`` search
    another store than the index's own, as :func:`radsearch.retrieval.search` does."""
    from radsearch.index_handle import open_index

    _question(label, labels, label_set, findings, min_prob, limit)  # before opening the index
    with open_index(index, backend, url) as opened:
        return opened.label_query(label, min_prob=min_prob, labels=labels, label_set=label_set,
                                  findings=findings, filters=filters, limit=limit)


def _question(label: str, labels: str | list[str] | None, label_set: str | None,
              findings: bool | None, min_prob: float,
              limit: int | None) -> tuple[LabelChoice, float]:
    """The label asked for and the least probability, or one line on what is wrong with them."""
    choice = resolve_label(label, labels=labels, label_set=label_set, findings=findings)
    min_prob = check_min_prob(min_prob)
    if limit is not None and limit < 1:
        raise RadsearchError(f"the limit must be at least 1, not {limit}")
    return choice, min_prob


def label_query_in(index: Index, label: str, *, min_prob: float,
                   labels: str | list[str] | None, label_set: str | None,
                   findings: bool | None, filters: Filters | None,
                   limit: int | None) -> LabelQueryResults:
    """``Index.label_query``: the label's direction searched in the index's store."""
    choice, min_prob = _question(label, labels, label_set, findings, min_prob, limit)
    point_filter = (filters or Filters()).point_filter()
    classifier = label_classifier(index.encoder, choice)
    hits, candidates = query_backend(index.store.backend, classifier, choice.label,
                                     min_prob=min_prob, point_filter=point_filter, limit=limit)
    unmatched = {} if hits else unmatched_filters(index.store, filters)
    return LabelQueryResults(label=choice.label, label_set=choice.label_set.name,
                             kind=choice.label_set.kind, min_prob=min_prob,
                             model=index.encoder.name, candidates=candidates, hits=hits,
                             unmatched_filters=unmatched)


def query_backend(
    backend: Backend,
    classifier: ZeroShotClassifier,
    label: str,
    *,
    min_prob: float,
    point_filter: PointFilter | None = None,
    limit: int | None = None,
) -> tuple[list[LabelHit], int]:
    """The label query on an open back end's ``studies`` collection: (hits, candidates - the
    studies the threshold search returned)."""
    point_filter = point_filter or PointFilter()
    row = classifier.label_set.labels.index(label)
    logit = math.log(min_prob / (1.0 - min_prob))
    records = backend.fetch(STUDIES, point_filter, SAMPLE, with_vectors=True)
    if not records:
        return [], 0  # no study passes the filters
    sample = np.stack([record.vector for record in records])
    finding = classifier.label_set.kind == FINDINGS
    if finding:  # exact: p >= P  <=>  scale * x.d >= logit(P)
        direction, bound = classifier.finding_direction(label), logit
    else:  # necessary: p >= P  =>  scale * x.d >= bound
        direction, bound = _pruning_bound(classifier, row, logit, sample)
    norm = max(float(np.linalg.norm(direction)), 1e-12)
    unit = (direction / norm).astype(np.float32)
    threshold = bound / (classifier.scale * norm)  # in cosine along `unit`
    if threshold - MARGIN > 1.0:
        return [], 0  # no unit vector reaches it
    # The first k: the sample's share above the threshold, scaled to the collection, with room.
    share = float(np.mean(sample @ unit >= threshold - MARGIN))
    total = len(records) if len(records) < SAMPLE else backend.count(STUDIES, point_filter)
    first_k = max(FIRST_K, math.ceil(1.25 * share * total))
    # A finding's probability is monotonic along the direction: the best `limit` come first.
    enough = limit if finding else None
    found = threshold_search(backend, unit, threshold - MARGIN, point_filter,
                             first_k=min(first_k, enough or first_k), enough=enough)
    if finding:
        hits = _finding_hits(backend, classifier, found, threshold, norm, min_prob)
    else:
        hits = _single_hits(backend, classifier, row, found, min_prob)
    hits.sort(key=lambda hit: (-hit.probability, hit.study))
    return (hits if limit is None else hits[:limit]), len(found)


def _pruning_bound(classifier: ZeroShotClassifier, row: int, logit: float,
                   sample: np.ndarray) -> tuple[np.ndarray, float]:
    """(d, b) with ``p_l >= P`` implying ``scale * x.d >= b``: the one pruning most on the sample.

    With z = scale * x.t, p_l >= P means sum_j exp(z_j - z_l) <= (1 - P) / P over the competitors
    j. For any weights w over them (w >= 0, summing to 1), Jensen's inequality gives sum_j
    exp(z_j - z_l) >= exp(sum_j w_j (z_j - z_l) + H(w)), so p_l >= P implies
    scale * x.(t_l - sum_j w_j t_j) >= logit(P) + H(w), with equality of the bounds where w is the
    study's own softmax over the competitors. Tried: each competitor alone (H = 0), all alike, and
    the mean competitor softmax of the sampled studies most likely to be l (tight for studies like
    them); kept: the fewest sampled studies passing, then the widest margin above their scores."""
    texts = classifier.positive
    others = [j for j in range(len(texts)) if j != row]
    logits = classifier.scale * (sample @ texts[others].T)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    likely = np.argsort(-classifier.probabilities(sample)[:, row])[: max(8, len(sample) // 10)]
    weights = np.vstack([np.eye(len(others)), np.full(len(others), 1.0 / len(others)),
                         softmax[likely].mean(axis=0)])
    directions = texts[row] - weights @ texts[others]
    norms = np.maximum(np.linalg.norm(directions, axis=1), 1e-12)
    entropies = -np.sum(weights * np.log(np.where(weights > 0, weights, 1.0)), axis=1)
    bounds = logit + entropies
    scores = sample @ (directions / norms[:, None]).T  # (studies, weights), cosines
    thresholds = bounds / (classifier.scale * norms)
    passing = np.sum(scores >= thresholds, axis=0)
    margins = (thresholds - scores.mean(axis=0)) / np.maximum(scores.std(axis=0), 1e-12)
    best = int(np.lexsort((-margins, passing))[0])
    return directions[best], float(bounds[best])


def threshold_search(backend: Backend, unit: np.ndarray, threshold: float,
                     point_filter: PointFilter, *, first_k: int = FIRST_K,
                     enough: int | None = None) -> list[Hit]:
    """Every study passing ``point_filter`` whose score along ``unit`` is at least ``threshold``,
    best first (only the first ``enough`` when given): k doubles until the last hit falls below
    the threshold or fewer than k come back (the collection is exhausted)."""
    k = max(first_k, enough or 1)
    while True:
        hits = backend.search(STUDIES, unit, k, point_filter)
        passing = [hit for hit in hits if hit.score >= threshold]
        if (len(hits) < k or len(passing) < len(hits)
                or (enough is not None and len(passing) >= enough)):
            return passing if enough is None else passing[:enough]
        k *= 2


def _finding_hits(backend: Backend, classifier: ZeroShotClassifier, found: list[Hit],
                  threshold: float, norm: float, min_prob: float) -> list[LabelHit]:
    """A finding's probability from the score, sigmoid(scale * |d| * x.u); the studies within
    MARGIN of the threshold are decided on their stored vectors, as the classifier does."""
    sure = [hit for hit in found if hit.score >= threshold + MARGIN]
    hits = [_label_hit(hit.payload, _sigmoid(classifier.scale * norm * hit.score)) for hit in sure]
    border = [hit for hit in found if hit.score < threshold + MARGIN]
    if border:
        hits += _single_hits(backend, classifier, 0, border, min_prob)
    return hits


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit))


def _single_hits(backend: Backend, classifier: ZeroShotClassifier, row: int, found: list[Hit],
                 min_prob: float) -> list[LabelHit]:
    """The candidates' probabilities from their stored vectors; those >= min_prob."""
    cards = {hit.payload["study"]: hit.payload for hit in found}
    vectors = _stored_vectors(backend, list(cards))
    keys = [key for key in cards if key in vectors]  # a study removed meanwhile is left out
    if not keys:
        return []
    probabilities = classifier.probabilities(np.stack([vectors[key] for key in keys]))[:, row]
    return [_label_hit(cards[key], float(p)) for key, p in zip(keys, probabilities)
            if p >= min_prob]


def _stored_vectors(backend: Backend, keys: list[str]) -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(keys), _FETCH_CHUNK):
        chunk = keys[start : start + _FETCH_CHUNK]
        for record in backend.fetch(STUDIES, PointFilter.build(any_of={"study": chunk}),
                                    len(chunk), with_vectors=True):
            vectors[record.payload["study"]] = record.vector
    return vectors


def _label_hit(card: dict, probability: float) -> LabelHit:
    return LabelHit(
        study=card["study"],
        probability=probability,
        study_date=card.get("study_date"),
        description=card.get("description"),
        modalities=list(card.get("modality") or []),
        body_parts=list(card.get("body_part") or []),
        images=[ImageHit(path=image["path"], frame=image["frame"], score=0.0,
                         modality=image.get("modality"), view=image.get("view"))
                for image in card.get("preview", [])],
    )
