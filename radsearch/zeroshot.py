"""Zero-shot classification of images and studies against any labels.

    from radsearch.zeroshot import ZeroShotClassifier, classify
    classify("chest.dcm", label_set="chexpert")        # a file: read, embed, classify
    classify("1.2.840...", labels="CT, MRI", index=i)  # an indexed study: its stored vector

Single-label sets: softmax over the labels of ``logit_scale * cosine``. Findings sets: each finding
alone, softmax of its positive against its negative prompt ensemble (CheXzero).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.encoders import DEFAULT_MODEL, Encoder, create_model
from radsearch.encoders.base import l2_normalise
from radsearch.errors import RadsearchError
from radsearch.label_sets import FINDINGS, LabelSet, custom_label_set, get_label_set
from radsearch.query_embedding import embed_file

if TYPE_CHECKING:
    from radsearch.index_handle import Index


@dataclass
class LabelScore:
    label: str
    probability: float
    similarity: float  # cosine of the image with the label's (positive) prompt ensemble


@dataclass
class Classification:
    query: str
    label_set: str
    kind: str  # "single" (probabilities sum to 1) or "findings" (independent probabilities)
    model: str
    scores: list[LabelScore]  # most probable first

    @property
    def top(self) -> str:
        return self.scores[0].label

    def to_dict(self) -> dict:
        return {**asdict(self), "top": self.top}


def _ensemble(encoder: Encoder, prompt_lists: list[list[str]]) -> np.ndarray:
    """One unit vector per label: the mean of its prompts' embeddings (averaged in embedding space)."""
    flat = [prompt for prompts in prompt_lists for prompt in prompts]
    vectors = encoder.encode_texts(flat)
    means, offset = [], 0
    for prompts in prompt_lists:
        means.append(vectors[offset : offset + len(prompts)].mean(axis=0))
        offset += len(prompts)
    return l2_normalise(np.stack(means))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class ZeroShotClassifier:
    """Label embeddings computed once; classifies any number of image/study vectors."""

    def __init__(self, encoder: Encoder, label_set: LabelSet):
        self.encoder = encoder
        self.label_set = label_set
        self.scale = float(encoder.logit_scale())
        labels = label_set.labels
        self.positive = _ensemble(encoder, [label_set.prompts(label) for label in labels])
        self.negative = (
            _ensemble(encoder, [label_set.prompts(label, negative=True) for label in labels])
            if label_set.kind == FINDINGS
            else None
        )

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` unit vectors -> ``(n, labels)`` probabilities."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        positive = vectors @ self.positive.T
        if self.negative is None:
            return _softmax(self.scale * positive)
        negative = vectors @ self.negative.T
        # Softmax of two logits (finding vs "no finding") is the sigmoid of their difference.
        return 1.0 / (1.0 + np.exp(-self.scale * (positive - negative)))

    def finding_direction(self, label: str) -> np.ndarray:
        """For a findings set: w with P(label | v) = sigmoid(scale * v.w), monotonic in v.w."""
        if self.negative is None:
            raise ValueError("finding directions exist for findings sets only")
        row = self.label_set.labels.index(label)
        return self.positive[row] - self.negative[row]

    def classify(self, vector: np.ndarray, query: str) -> Classification:
        probabilities = self.probabilities(vector)[0]
        similarities = (np.atleast_2d(vector) @ self.positive.T)[0]
        order = np.argsort(-probabilities, kind="stable")
        return Classification(
            query=query,
            label_set=self.label_set.name,
            kind=self.label_set.kind,
            model=self.encoder.name,
            scores=[
                LabelScore(self.label_set.labels[i], float(probabilities[i]), float(similarities[i]))
                for i in order
            ],
        )


def resolve_label_set(
    labels: str | list[str] | None = None, label_set: str | None = None, *, findings: bool = False
) -> LabelSet:
    if (labels is None) == (label_set is None):
        raise RadsearchError("give either labels or a label set")
    if label_set is not None:
        return get_label_set(label_set)
    return custom_label_set(labels, findings=findings)


def classify(
    query: str | Path,
    *,
    labels: str | list[str] | None = None,
    label_set: str | None = None,
    findings: bool = False,
    index: Path | None = None,
    model: str | None = None,
    backend: str | None = None,
    url: str | None = None,
) -> Classification:
    """Classify an image file, or a study of an index (by UID, key or file), against labels.

    A file with no index, back end or URL given is embedded with ``model`` (default: the default
    model); otherwise the index's model is used (``backend``/``url``: see
    :func:`radsearch.retrieval.search`)."""
    chosen = resolve_label_set(labels, label_set, findings=findings)
    path = Path(query)
    if path.is_file() and index is None and backend is None and url is None:
        encoder = create_model(model or DEFAULT_MODEL)
        vector, _ = embed_file(path, encoder, salt="query")
        return ZeroShotClassifier(encoder, chosen).classify(vector, str(query))
    from radsearch.index_handle import open_index

    with open_index(index, backend, url) as opened:
        return opened.classify(query, labels=labels, label_set=label_set, findings=findings)


def classify_in(index: Index, query: str | Path, *, labels: str | list[str] | None,
                label_set: str | None, findings: bool) -> Classification:
    """``Index.classify``: an indexed study's stored vector (a study named by key or UID, or an
    indexed file's study), else an image file embedded with the index's model."""
    chosen = resolve_label_set(labels, label_set, findings=findings)
    try:
        vector, _ = index.study_vector(str(query))
    except RadsearchError:
        if not Path(query).is_file():
            raise
        vector = index.embed(query).vector
    return ZeroShotClassifier(index.encoder, chosen).classify(vector, str(query))
