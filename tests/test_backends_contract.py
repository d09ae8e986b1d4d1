"""One contract suite, run against every back end and compared with exact numpy search, result by
result (qdrant-client's congruence-test habit): FAISS+SQLite, qdrant-edge, and qdrant-client's
local mode standing in for a Qdrant server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radsearch.storage.backends import Backend, BackendSpec, Point, PointFilter, open_backend
from radsearch.storage.backends.base import exact_search
from radsearch.storage.payloads import point_id
from tests.backend_params import needs

DIM = 24
MODALITIES = ["CT", "MR", "CR", "US", None]
BODY_PARTS = ["CHEST", "HEAD", "ABDOMEN"]


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """Tiny indexes: OpenMP threads only fight each other (10x slower on a busy machine)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


BACKENDS = [
    pytest.param(("faiss", {}), id="faiss"),
    pytest.param(("qdrant-edge", {}), id="qdrant-edge", marks=needs("qdrant_edge")),
    pytest.param(("qdrant", {}), id="qdrant-local", marks=needs("qdrant_client")),
]


class Opener:
    """Opens one back end of a kind on a temporary store (qdrant-client's local mode in memory,
    or on disk with ``on_disk``: it commits every point, which is slow on a real disk)."""

    def __init__(self, kind: str, options: dict, root: Path, on_disk: bool = False):
        url = (str(root / "qdrant-local") if on_disk else ":memory:") if kind == "qdrant" else None
        self.spec = BackendSpec(kind, url, options)
        self.root = root
        self.backend: Backend | None = None

    def open(self, read_only: bool = False) -> Backend:
        self.close()
        self.backend = open_backend(self.spec, self.root, vector_name="test-model",
                                    read_only=read_only)
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


@pytest.fixture(params=BACKENDS)
def opener(request, tmp_path):
    kind, options = request.param
    opened = Opener(kind, options, tmp_path)
    yield opened
    opened.close()


def _fill(backend: Backend) -> tuple[Backend, Reference]:
    backend.create_collection("images", DIM)
    points = make_points(600)
    backend.upsert("images", points)
    backend.persist()
    return backend, Reference(points)


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request, tmp_path_factory):
    """A store of 600 points, shared by the tests that only read it."""
    kind, options = request.param
    opened = Opener(kind, options, tmp_path_factory.mktemp(kind))
    yield _fill(opened.open())
    opened.close()


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_points(n: int, seed: int = 0, dim: int = DIM) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n, dim)
    points = []
    for i in range(n):
        modality = MODALITIES[i % len(MODALITIES)]
        payload = {
            "study": f"study-{i % 40:02d}",
            "series": f"series-{i % 90:02d}",
            "path": f"/archive/{i // 7}/{i}.dcm",
            "frame": i % 3,
            "modality": modality,
            # a list field, as study cards carry: matches when any element does
            "body_part": ([BODY_PARTS[i % 3], BODY_PARTS[(i // 3) % 3]] if i % 4 == 0
                          else BODY_PARTS[i % 3]),
            "view": None if i % 5 == 0 else ["AP", "PA", "LATERAL"][i % 3],
            "study_day": None if i % 11 == 0 else 20200101 + (i % 30) * 100,
        }
        points.append(Point(point_id("test", i), vectors[i], payload))
    return points


class Reference:
    """Exact search over the points the store should hold."""

    def __init__(self, points: list[Point] = ()):
        self.points = {p.id: p for p in points}

    def search(self, vector: np.ndarray, k: int, flt: PointFilter | None = None):
        kept = [p for p in self.points.values() if flt is None or flt.matches(p.payload)]
        if not kept:
            return [], np.zeros(0)
        scores, rows = exact_search(np.stack([p.vector for p in kept]), vector, k)
        return [kept[r].id for r in rows], scores

    def count(self, flt: PointFilter | None = None) -> int:
        return sum(1 for p in self.points.values() if flt is None or flt.matches(p.payload))


def assert_same_results(hits, reference: Reference, vector, k, flt=None):
    """Same ids in the same order and the same scores; ids may swap only within exact ties."""
    ids, scores = reference.search(vector, k, flt)
    assert len(hits) == len(ids), (len(hits), len(ids))
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-4)
    for position, (hit, expected) in enumerate(zip(hits, ids)):
        if hit.id != expected:
            tied = [ids[j] for j in range(len(ids)) if abs(scores[j] - scores[position]) < 1e-5]
            assert hit.id in tied, f"rank {position}: {hit.id} instead of {expected}"
        assert hit.payload == reference.points[hit.id].payload


FILTERS = [
    PointFilter.build(any_of={"modality": ["CT"]}),
    PointFilter.build(any_of={"modality": ["CR", "US"], "view": ["AP"]}),
    PointFilter.build(any_of={"body_part": ["HEAD"]}),  # list and scalar payloads alike
    PointFilter.build(ranges={"study_day": (20200601, 20201501)}),
    PointFilter.build(ranges={"study_day": (None, 20200301)}),
    PointFilter.build(none_of={"study": [f"study-{i:02d}" for i in range(0, 40, 3)]}),
    PointFilter.build(any_of={"modality": ["MR"]}, none_of={"body_part": ["CHEST"]},
                      ranges={"study_day": (20200501, None)}),
    PointFilter.build(any_of={"study": ["study-07"]}),  # selective: 15 of 600 pass
    PointFilter.build(any_of={"modality": ["PET"]}),  # nothing passes
]


def test_search_matches_exact_search_result_by_result(filled):
    backend, reference = filled
    queries = _unit(np.random.default_rng(99), 12)
    for vector in queries:
        for k in (1, 5, 37):
            assert_same_results(backend.search("images", vector, k), reference, vector, k)
    assert backend.count("images") == 600


@pytest.mark.parametrize("flt", FILTERS, ids=range(len(FILTERS)))
def test_filtered_search_and_count_match_exact_search(filled, flt):
    backend, reference = filled
    for vector in _unit(np.random.default_rng(7), 4):
        for k in (3, 25):
            assert_same_results(backend.search("images", vector, k, flt), reference, vector, k, flt)
    assert backend.count("images", flt) == reference.count(flt)


def test_a_selective_filter_still_returns_every_passing_point(filled):
    backend, reference = filled
    flt = PointFilter.build(any_of={"study": ["study-07"]})
    hits = backend.search("images", _unit(np.random.default_rng(3), 1)[0], 50, flt)
    assert len(hits) == reference.count(flt) == 15


def test_upsert_replaces_and_delete_removes(opener):
    backend, reference = _fill(opener.open())
    points = list(reference.points.values())
    moved = [Point(p.id, -p.vector, {**p.payload, "modality": "PET"}) for p in points[:20]]
    backend.upsert("images", moved)
    reference.points.update({p.id: p for p in moved})
    gone = [p.id for p in points[100:130]] + [point_id("test", "never-stored")]
    backend.delete("images", gone)
    for point_id_ in gone:
        reference.points.pop(point_id_, None)
    backend.persist()
    assert backend.count("images") == reference.count() == 570
    assert backend.count("images", PointFilter.build(any_of={"modality": ["PET"]})) == 20
    for vector in [moved[0].vector, *_unit(np.random.default_rng(5), 5)]:
        assert_same_results(backend.search("images", vector, 10), reference, vector, 10)
        flt = PointFilter.build(any_of={"modality": ["PET", "CT"]})
        assert_same_results(backend.search("images", vector, 10, flt), reference, vector, 10, flt)


def test_a_new_payload_on_the_same_vector_is_searched_and_filtered(opener):
    backend, reference = _fill(opener.open())
    relabelled = [Point(p.id, p.vector, {**p.payload, "modality": "PET", "study_day": 20300101})
                  for p in list(reference.points.values())[:50]]
    backend.upsert("images", relabelled)
    reference.points.update({p.id: p for p in relabelled})
    backend.persist()
    flt = PointFilter.build(any_of={"modality": ["PET"]}, ranges={"study_day": (20300101, None)})
    assert backend.count("images", flt) == 50 and backend.count("images") == 600
    for vector in [relabelled[3].vector, *_unit(np.random.default_rng(4), 3)]:
        assert_same_results(backend.search("images", vector, 7, flt), reference, vector, 7, flt)
        assert_same_results(backend.search("images", vector, 7), reference, vector, 7)


def test_fetch_returns_matching_points_with_vectors(filled):
    backend, reference = filled
    flt = PointFilter.build(any_of={"study": ["study-03", "study-04"]})
    records = backend.fetch("images", flt, 100, with_vectors=True)
    expected = {p.id for p in reference.points.values() if flt.matches(p.payload)}
    assert {r.id for r in records} == expected
    for record in records:
        assert record.payload == reference.points[record.id].payload
        np.testing.assert_allclose(record.vector, reference.points[record.id].vector, atol=1e-6)
    assert len(backend.fetch("images", flt, 4)) == 4


@pytest.mark.parametrize("kind_options", BACKENDS)
def test_everything_persists_across_reopening(kind_options, tmp_path):
    kind, options = kind_options
    opener = Opener(kind, options, tmp_path, on_disk=True)
    backend = opener.open()
    backend.create_collection("images", DIM)
    points = make_points(80)
    backend.upsert("images", points)
    backend.persist()
    backend.delete("images", [points[0].id])
    reference = Reference(points[1:])
    backend.persist()
    opener.close()
    reopened = opener.open(read_only=True)
    assert reopened.count("images") == 79
    for vector in _unit(np.random.default_rng(11), 3):
        assert_same_results(reopened.search("images", vector, 8), reference, vector, 8)
        flt = FILTERS[6]
        assert_same_results(reopened.search("images", vector, 8, flt), reference, vector, 8, flt)
    opener.close()


@pytest.mark.parametrize("kind_options", BACKENDS)
def test_the_first_record_is_kept(kind_options, tmp_path):
    opener = Opener(*kind_options, tmp_path, on_disk=True)
    backend = opener.open()
    assert backend.metadata() is None
    first = backend.initialise({"salt": "aaa", "instance": "one"})
    assert first == {"salt": "aaa", "instance": "one"}
    assert backend.initialise({"salt": "bbb", "instance": "two"}) == first
    opener.close()
    assert opener.open(read_only=True).metadata() == first
    opener.close()


def test_a_missing_collection_holds_nothing(opener):
    backend = opener.open()
    assert backend.search("sentences", np.ones(DIM, dtype=np.float32), 5) == []
    assert backend.count("sentences") == 0
    assert backend.fetch("sentences", PointFilter(), 5) == []
    backend.delete("sentences", [point_id("test", 1)])  # ignored


def test_collections_are_separate(opener):
    backend = opener.open()
    backend.create_collection("images", DIM)
    backend.create_collection("studies", DIM)
    backend.upsert("images", make_points(30, seed=1))
    backend.upsert("studies", make_points(5, seed=2))
    assert (backend.count("images"), backend.count("studies")) == (30, 5)
    hits = backend.search("studies", make_points(5, seed=2)[0].vector, 10)
    assert len(hits) == 5 and hits[0].score == pytest.approx(1.0, abs=1e-5)


APPROXIMATE = [
    pytest.param(("faiss", {"faiss_index": "hnsw"}), id="faiss-hnsw"),
    pytest.param(("faiss", {"faiss_index": "ivfsq", "faiss_params": {"nlist": 16}}),
                 id="faiss-ivfsq"),
    pytest.param(("faiss", {"faiss_index": "ivfpq", "faiss_params": {"nlist": 16, "pq_m": 8}}),
                 id="faiss-ivfpq"),
    pytest.param(("qdrant-edge", {"indexing_threshold": 10, "full_scan_threshold": 10}),
                 id="qdrant-edge-hnsw", marks=needs("qdrant_edge")),
]


@pytest.mark.parametrize("kind_options", APPROXIMATE)
def test_approximate_indexes_recall_and_keep_k_hits_under_filters(kind_options, tmp_path):
    kind, options = kind_options
    opened = Opener(kind, options, tmp_path)
    backend = opened.open()
    try:
        backend.create_collection("images", DIM)
        points = make_points(3000, seed=3)
        backend.upsert("images", points)
        backend.persist()
        reference = Reference(points)
        noise = _unit(np.random.default_rng(8), 40)
        queries = [p.vector + 0.3 * q for p, q in zip(points[:40], noise)]
        found = expected = 0
        for vector in queries:
            ids, _ = reference.search(vector, 10)
            found += len({h.id for h in backend.search("images", vector, 10)} & set(ids))
            expected += len(ids)
        assert found / expected >= 0.95
        selective = PointFilter.build(any_of={"study": ["study-05"]},
                                      ranges={"study_day": (20200101, 20201601)})
        for vector in queries[:5]:
            hits = backend.search("images", vector, 10, selective)
            assert len(hits) == min(10, reference.count(selective))
            assert all(selective.matches(h.payload) for h in hits)
        # deleting from an index that cannot remove ids in place rebuilds it
        backend.delete("images", [p.id for p in points[:1500]])
        backend.persist()
        reference = Reference(points[1500:])
        hits = backend.search("images", points[2000].vector, 5)
        assert hits[0].id == points[2000].id and backend.count("images") == 1500
        assert all(h.id in reference.points for h in hits)
    finally:
        opened.close()
