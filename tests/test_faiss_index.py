"""FAISS index selection by collection size and searches deep enough for k hits."""

from __future__ import annotations

import numpy as np
import pytest

from radsearch.storage.backends.faiss_index import (
    EXACT_LIMIT,
    FaissIndex,
    IndexChoice,
    choose_index,
    training_sample,
)
from radsearch.errors import RadsearchError


def test_exact_below_the_limit_ivf_sq8_with_re_ranking_above(monkeypatch):
    monkeypatch.delenv("RADSEARCH_FAISS_INDEX", raising=False)
    monkeypatch.delenv("RADSEARCH_FAISS_PARAMS", raising=False)
    assert choose_index(EXACT_LIMIT - 1, 512).kind == "flat"
    at_100k = choose_index(100_000, 512)
    assert at_100k == IndexChoice("ivfsq", {"nlist": 1024, "nprobe": 170, "k_factor": 8})
    assert choose_index(1_000_000, 512).params["nlist"] == 4096
    assert choose_index(EXACT_LIMIT * 10, 512, device="cuda").kind == "flat"  # brute force on a GPU


def test_the_choice_is_overridable_by_argument_and_environment(monkeypatch):
    assert choose_index(10, 512, "hnsw", overrides={"m": 48}).params["m"] == 48
    monkeypatch.setenv("RADSEARCH_FAISS_INDEX", "ivfpq")
    monkeypatch.setenv("RADSEARCH_FAISS_PARAMS", "nprobe=64")
    choice = choose_index(200_000, 512)
    assert choice.kind == "ivfpq" and choice.params["nprobe"] == 64 and choice.params["pq_m"] == 64
    assert IndexChoice.from_dict(choice.to_dict()) == choice  # recorded as JSON in the catalog
    monkeypatch.setenv("RADSEARCH_FAISS_PARAMS", "nprobe=many")
    with pytest.raises(RadsearchError, match="not key=integer"):
        choose_index(200_000, 512)


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_an_ivf_index_returns_k_hits_beyond_what_its_nprobe_lists_hold(tmp_path):
    vectors, ids = _unit(4000, 32), np.arange(4000, dtype=np.int64) * 7
    index = FaissIndex(32, IndexChoice("ivfsq", {"nlist": 64, "nprobe": 2, "k_factor": 8}))
    index.train(vectors[np.isin(ids, training_sample(ids, 64))])
    index.add(vectors, ids)
    scores, found = index.search(vectors[5], 10)
    assert found[0] == ids[5] and scores[0] == pytest.approx(1.0, abs=1e-3)
    # Two lists of 64 hold ~125 vectors; a deep search must still return k distinct hits, best first.
    scores, found = index.search(vectors[5], 1500)
    assert len(set(found.tolist())) == 1500 and np.all(np.diff(scores) <= 1e-6)
    exact = np.argsort(-(vectors @ vectors[5]))[:1500]
    assert len(set(found[:150].tolist()) & set(ids[exact[:150]].tolist())) >= 145
    index.save(tmp_path / "i.faiss")  # and it reloads as the same kind
    loaded = FaissIndex.load(tmp_path / "i.faiss", 32, index.choice)
    assert loaded is not None and loaded.size == 4000
