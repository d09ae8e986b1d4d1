"""Label queries over an index: equal to classifying every stored study vector, on each back end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radsearch.storage.backends import BackendSpec, Point, PointFilter, open_backend
from radsearch.storage.payloads import study_point_id
from radsearch.cli import app
from radsearch.encoders import create_model
from radsearch.encoders.base import l2_normalise
from radsearch.errors import RadsearchError
from radsearch.filters import Filters
from radsearch.indexer import index_folder
from radsearch.label_search import (
    label_classifier,
    label_query,
    query_backend,
    resolve_label,
    threshold_search,
)
from radsearch.samples import sample_studies_path
from radsearch.storage.store import Store
from radsearch.zeroshot import ZeroShotClassifier
from tests.backend_params import FAISS, QDRANT_EDGE, needs

MODALITIES = ["CT", "MR", "CR"]
PROBABILITIES = (0.05, 0.3, 0.5, 0.7, 0.95)
runner = CliRunner()


# qdrant-client's local mode (a Qdrant server's stand-in) is brute force in Python: slow, so it
# gets one test of its own below.
BACKENDS = [FAISS, QDRANT_EDGE]


@pytest.fixture(scope="module")
def encoder():
    return create_model("hashing-tiny")


def _study_vectors(encoder, n: int, seed: int = 0) -> np.ndarray:
    """Mixtures of label prompt embeddings plus noise: probabilities spread over (0, 1)."""
    modality, finding = (label_classifier(encoder, resolve_label(label, label_set=name))
                         for label, name in (("CT", "modality"), ("Pleural Effusion", "chexpert")))
    directions = np.concatenate([modality.positive, finding.positive, finding.negative])
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(directions), 0.3), size=n)
    noise = rng.standard_normal((n, encoder.dim)) / np.sqrt(encoder.dim)
    return l2_normalise(weights @ directions + 0.25 * noise)


def _fill(kind: str, encoder, root: Path, n: int):
    """A back end holding n synthetic study vectors with study cards; the cards on the side."""
    vectors = _study_vectors(encoder, n)
    cards = [{"study": f"study-{i:04d}", "modality": [MODALITIES[i % 3]],
              "study_date": f"2020-01-{1 + i % 28:02d}", "study_day": 20200101 + i % 28,
              "preview": [{"path": f"/x/{i}.dcm", "frame": 0, "modality": MODALITIES[i % 3],
                           "view": None}]}
             for i in range(n)]
    spec = BackendSpec(kind, ":memory:" if kind == "qdrant" else None)
    backend = open_backend(spec, root, vector_name="hashing-tiny", read_only=False)
    backend.create_collection("studies", encoder.dim)
    backend.upsert("studies", [Point(study_point_id(card["study"]), vector, card)
                               for card, vector in zip(cards, vectors)])
    backend.persist()
    return backend, vectors, cards


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, encoder, tmp_path_factory):
    backend, vectors, cards = _fill(request.param, encoder, tmp_path_factory.mktemp("store"), 700)
    yield backend, vectors, cards
    backend.close()


def _brute_force(classifier, label, vectors, cards, min_prob, point_filter) -> dict[str, float]:
    row = classifier.label_set.labels.index(label)
    probabilities = classifier.probabilities(vectors)[:, row]
    return {card["study"]: float(p) for card, p in zip(cards, probabilities)
            if p >= min_prob and point_filter.matches(card)}


FILTERS = [Filters(), Filters(modality="CT"), Filters(date_from="2020-01-05", date_to="2020-01-12")]


@pytest.mark.parametrize("label, options", [
    ("pleural effusion", {}),                                   # chexpert's finding
    ("pleural effusion", {"label_set": "chexpert"}),
    ("CT", {"label_set": "modality", "findings": True}),       # a single-label set's label alone
    ("nodule", {}),                                              # a free finding of its own
])
def test_finding_query_equals_brute_force(store, encoder, label, options):
    backend, vectors, cards = store
    choice = resolve_label(label, **options)
    assert choice.label_set.kind == "findings"
    classifier = label_classifier(encoder, choice)
    # the full classifier agrees with the one-finding classifier the query embeds
    full = ZeroShotClassifier(encoder, choice.label_set)
    sizes = []
    for filters in FILTERS:
        point_filter = filters.point_filter()
        for min_prob in PROBABILITIES:
            expected = _brute_force(full, choice.label, vectors, cards, min_prob, point_filter)
            hits, candidates = query_backend(backend, classifier, choice.label, min_prob=min_prob,
                                             point_filter=point_filter)
            assert {hit.study: hit.probability for hit in hits} == pytest.approx(expected, abs=1e-5)
            assert [hit.probability for hit in hits] == sorted(
                (hit.probability for hit in hits), reverse=True)
            assert len(expected) <= candidates <= len(expected) + 5  # the threshold prunes
            sizes.append(len(expected))
    assert max(sizes) > 20 and min(sizes) < 600  # the thresholds cut through the studies


@pytest.mark.parametrize("label, options", [
    ("CT", {"label_set": "modality"}),
    ("mri", {"labels": "CT, MRI, X-ray"}),
    ("Pleural Effusion", {"label_set": "chexpert", "findings": False}),  # softmax over findings
])
def test_single_label_query_equals_brute_force(store, encoder, label, options):
    backend, vectors, cards = store
    choice = resolve_label(label, **options)
    assert choice.label_set.kind == "single"
    classifier = label_classifier(encoder, choice)
    for filters in FILTERS:
        point_filter = filters.point_filter()
        population = sum(point_filter.matches(card) for card in cards)
        for min_prob in PROBABILITIES:
            expected = _brute_force(classifier, choice.label, vectors, cards, min_prob,
                                    point_filter)
            hits, candidates = query_backend(backend, classifier, choice.label, min_prob=min_prob,
                                             point_filter=point_filter)
            assert {hit.study: hit.probability for hit in hits} == pytest.approx(expected, abs=1e-5)
            assert [hit.probability for hit in hits] == sorted(
                (hit.probability for hit in hits), reverse=True)
            # the necessary condition leaves out most of the studies that do not match
            assert 0 <= candidates - len(expected) <= (population - len(expected)) / 2


@needs("qdrant_client")
def test_qdrant_server_back_end_gives_the_same_answer(encoder, tmp_path):
    backend, vectors, cards = _fill("qdrant", encoder, tmp_path, 300)
    try:
        point_filter = Filters(modality="CT").point_filter()
        for label, options in (("pleural effusion", {}), ("CT", {"label_set": "modality"})):
            choice = resolve_label(label, **options)
            classifier = label_classifier(encoder, choice)
            for min_prob in (0.3, 0.9):
                expected = _brute_force(ZeroShotClassifier(encoder, choice.label_set),
                                        choice.label, vectors, cards, min_prob, point_filter)
                hits, _ = query_backend(backend, classifier, choice.label, min_prob=min_prob,
                                        point_filter=point_filter)
                assert {h.study: h.probability for h in hits} == pytest.approx(expected, abs=1e-5)
    finally:
        backend.close()


def test_limit_keeps_the_most_probable(store, encoder):
    backend, vectors, cards = store
    for options in ({"label_set": "chexpert"}, {"labels": "CT, MRI, X-ray"}):
        choice = resolve_label("pleural effusion" if "label_set" in options else "CT", **options)
        classifier = label_classifier(encoder, choice)
        every, _ = query_backend(backend, classifier, choice.label, min_prob=0.3)
        counting = Counting(backend)
        first, _ = query_backend(counting, classifier, choice.label, min_prob=0.3, limit=7)
        assert [hit.study for hit in first] == [hit.study for hit in every[:7]]
        if choice.label_set.kind == "findings":  # in probability order: 7 deep is enough
            assert counting.asked == [7]


class Counting:
    """A back end that records the k of every search."""

    def __init__(self, backend):
        self.backend = backend
        self.asked: list[int] = []

    def search(self, collection, vector, k, filter=None):
        self.asked.append(k)
        return self.backend.search(collection, vector, k, filter)

    def fetch(self, *args, **kwargs):
        return self.backend.fetch(*args, **kwargs)

    def count(self, *args, **kwargs):
        return self.backend.count(*args, **kwargs)


def test_threshold_search_doubles_k_until_the_threshold_is_passed(store):
    backend, vectors, cards = store
    unit = l2_normalise(vectors[:1])[0]
    scores = vectors @ unit
    threshold = float(np.sort(scores)[-100]) - 1e-6  # the 100 best, and no more
    counting = Counting(backend)
    hits = threshold_search(counting, unit, threshold, PointFilter(), first_k=10)
    assert counting.asked == [10, 20, 40, 80, 160]  # 160 is the first k with a hit below
    assert {hit.payload["study"] for hit in hits} == {
        cards[i]["study"] for i in np.flatnonzero(scores >= threshold)}
    counting.asked.clear()
    assert len(threshold_search(counting, unit, -2.0, PointFilter(), first_k=256)) == 700
    assert counting.asked == [256, 512, 1024]  # all pass: the collection ran out


def test_first_k_is_estimated_from_a_sample(store, encoder):
    backend, _, _ = store
    counting = Counting(backend)
    choice = resolve_label("pleural effusion")
    hits, candidates = query_backend(counting, label_classifier(encoder, choice), choice.label,
                                     min_prob=0.05)
    assert len(counting.asked) == 1 and counting.asked[0] >= candidates > 256  # one search


def test_hit_carries_the_study_card(store, encoder):
    backend, _, cards = store
    choice = resolve_label("pleural effusion")
    hits, _ = query_backend(backend, label_classifier(encoder, choice), choice.label,
                            min_prob=0.9, point_filter=Filters(modality="MR").point_filter())
    card = {c["study"]: c for c in cards}[hits[0].study]
    assert hits[0].modalities == ["MR"] and hits[0].study_date == card["study_date"]
    assert hits[0].images[0].path == card["preview"][0]["path"]


# -- a real index of the sample studies, through the API and the CLI --------------------------
@pytest.fixture(scope="module")
def real_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("label-query") / "studies"
    shutil.copytree(sample_studies_path(), root)
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct.dcm")
    index = root.parent / "index"
    index_folder(root, index=index, model="hashing-tiny", workers=0)
    return index


def _stored_studies(index: Path) -> tuple[np.ndarray, list[dict]]:
    with Store.open_for_reading(index) as store:
        records = store.backend.fetch("studies", PointFilter(), 1000, with_vectors=True)
    return np.stack([r.vector for r in records]), [r.payload for r in records]


def test_label_query_on_a_real_index_equals_classifying_each_study(real_index, encoder):
    vectors, cards = _stored_studies(real_index)
    assert len(cards) == 14
    found = 0
    for label, options in (("pleural effusion", {}), ("CT", {"labels": "CT, MRI"}),
                           ("mri", {"labels": "CT, MRI, X-ray"})):
        choice = resolve_label(label, **options)
        classifier = ZeroShotClassifier(encoder, choice.label_set)
        for filters in (Filters(), Filters(modality="CT"), Filters(modality="MR")):
            for min_prob in (0.2, 0.5, 0.8):
                expected = _brute_force(classifier, choice.label, vectors, cards, min_prob,
                                        filters.point_filter())
                results = label_query(label, min_prob=min_prob, filters=filters,
                                      index=real_index, **options)
                assert {h.study: h.probability for h in results.hits} == pytest.approx(
                    expected, abs=1e-5)
                assert results.model == "hashing-tiny" and results.min_prob == min_prob
                found += len(expected)
    assert found > 30


def test_cli_label_query_json_matches_the_api(real_index):
    result = runner.invoke(app, ["search", "--label", "MRI", "--labels", "CT, MRI, X-ray",
                                 "--min-prob", "0.5", "--index", str(real_index), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    api = label_query("MRI", labels="CT, MRI, X-ray", min_prob=0.5, index=real_index)
    assert data["label"] == "MRI" and data["kind"] == "single" and data["label_set"] == "custom"
    assert [h["study"] for h in data["hits"]] == [h.study for h in api.hits] != []
    assert {"probability", "study_date", "modalities", "images"} <= set(data["hits"][0])

    ct = runner.invoke(app, ["search", "--label", "CT", "--labels", "CT, MRI", "--min-prob",
                             "0.01", "--modality", "CT", "--index", str(real_index), "--json"])
    hits = json.loads(ct.output)["hits"]
    assert len(hits) == 1 and hits[0]["modalities"] == ["CT"]

    top = runner.invoke(app, ["search", "--label", "pleural effusion", "--min-prob", "0.01",
                              "-k", "2", "--index", str(real_index), "--json"])
    assert len(json.loads(top.output)["hits"]) == 2

    table = runner.invoke(app, ["search", "--label", "pleural effusion", "--min-prob", "0.01",
                                "--index", str(real_index)])
    assert table.exit_code == 0 and "Pleural Effusion (chexpert, finding)" in table.output


@pytest.mark.parametrize("args, message", [
    (["--label", "x", "--label-set", "nope"], "unknown label set 'nope'"),
    (["--label", "fracture", "--label-set", "modality"], "is not in modality"),
    (["--label", "x", "--min-prob", "0"], "strictly between 0 and 1"),
    (["--label", "x", "--min-prob", "1.5"], "strictly between 0 and 1"),
    (["--label", "nodule", "--single"], "needs competing labels"),
    (["effusion", "--label", "x"], "not both"),
    (["--label", "x", "--in", "reports"], "drop --in"),
    (["effusion", "--label-set", "chexpert"], "go with --label"),
    ([], "give a query TEXT"),
])
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["search", *args, "--index", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert isinstance(result.exception, RadsearchError) and message in str(result.exception)


def test_cli_error_is_one_line_with_exit_code_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "search", "--label", "effusion", "--min-prob", "2",
         "--index", str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "error: --min-prob must lie strictly between 0 and 1, not 2.0\n"


def test_an_hnsw_index_returns_k_hits_beyond_its_ef_search():
    """A threshold search asks for thousands of neighbours: FAISS's HNSW must search that deep
    (it returns at most efSearch otherwise, which would end the search early)."""
    from radsearch.storage.backends.faiss_index import FaissIndex, IndexChoice

    vectors = l2_normalise(np.random.default_rng(0).normal(size=(3000, 16)))
    index = FaissIndex(16, IndexChoice("hnsw", {"m": 16, "ef_construction": 40, "ef_search": 16}))
    index.add(vectors, np.arange(3000, dtype=np.int64))
    scores, ids = index.search(vectors[0], 1000)
    assert len(ids) == 1000 and len(set(ids.tolist())) == 1000
    exact = np.sort(vectors @ vectors[0])[::-1][:1000]
    assert np.mean(np.isin(np.round(scores, 5), np.round(exact, 5))) > 0.95
