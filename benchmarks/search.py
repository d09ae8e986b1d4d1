"""Search benchmark: radsearch's back ends against exact search and raw FAISS, 100k to 1M vectors.

    python benchmarks/search.py [--sizes 100000 1000000] [--dim 512] [--queries 500]
                                [--backends raw-faiss faiss-points-store radsearch-faiss
                                            qdrant-edge qdrant-local]
                                [--device cpu|cuda] [--work /tmp/radsearch-bench] [--out FILE.json]

Data (not pure Gaussians): an archive's hierarchy - 24 body-part/modality groups, 40 findings each,
studies around a finding, 1-3 series per study, 1 slice (radiograph) or 5-30 similar slices
(CT/MR/PET) per series - in a 384-d latent space with a decaying spectrum, a shared mean direction
and full-rank noise, L2-normalised, cluster sizes Zipf-distributed; fitted to the statistics of
radclip-mini's real embeddings of medpix2 (see CALIBRATION). Queries stand for text: one study's
centre plus noise (near its images, on none of them), moved along one fixed direction the images
do not use - CLIP's modality gap. Ground truth is exact inner-product top-10.

For each back end and size: build time (empty -> persisted and searchable), memory per vector
(resident-set growth of a fresh process that opens the store and runs the queries) and disk per
vector (every file of the store; for ``radsearch-faiss`` the whole index folder: catalog, vector
file, FAISS codes), then the smallest search effort whose recall@10 >= 0.95 and, at it, QPS and
p50/p99 latency of one query at a time. ``radsearch-faiss`` is a radsearch index as `radsearch index`
writes it (catalog rows for files, studies, series and images, each vector once in the vector file,
the faiss back end searching the catalog: payloads included in every hit); ``faiss-points-store`` is
the layout before the vector file (FaissBackend: points, payloads and a second copy of each vector
in points.sqlite, IVF-SQ8 with a refine index holding a third; the catalog then held a fourth as a
blob); ``raw-faiss`` is the index radsearch chooses at that size (IVF-SQ8 with exact re-ranking
from 50k vectors; see radsearch/storage/backends/faiss_index.py), with the same parameters and
training sample, built and searched by FAISS on its own; raw FAISS flat would take 4 x dim + 8 bytes
a vector. Effort is nprobe for IVF, efSearch for HNSW, hnsw_ef for Qdrant. To measure radsearch's
own cost, the faiss-points-store run also searches its index file with FAISS directly, query by
query in turn, at the same effort: the ratio of the two QPS; the radsearch-faiss run searches the
points store (when it was built in the same run) in turn with itself: after vs before.
qdrant-client's local mode is brute force in Python: it is run at 100k only. The radsearch-faiss run
also times end-to-end text queries: text encoding (radclip-mini, its text tower on ONNX Runtime
when installed and on torch, in turn), search, grouping by study.
Each back end runs in its own processes (build, then search), so memory figures are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

K = 10
TARGET_RECALL = 0.95
EFFORTS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
           6144, 8192)
BACKENDS = ("raw-faiss", "faiss-points-store", "radsearch-faiss", "qdrant-edge", "qdrant-local")
LOCAL_MODE_LIMIT = 200_000  # qdrant-client's local mode is brute force in Python
# Fitted so that, at medpix2's 2,050 images, the data matches radclip-mini's real embeddings of
# them (principal components for 50/80/90/95 % of variance: 20/106/203/293 vs 21/102/191/280;
# median text->image score of the top 1/10/100: .125/.088/.072 vs .112/.087/.058; image->image
# top-100 and median: .628/.479 vs .634/.474). Pure Gaussians or a small latent space give the
# search engine either no structure or an unrealistically easy one.
CALIBRATION = {"latent": 384, "decay": 0.3, "mean": 1.0, "group": 0.5, "finding": 0.6,
               "study": 0.8, "series": 0.5, "slice": 0.3, "query": 0.5, "gap": 5.0, "noise": 0.4}
MODALITIES = ("CR", "DX", "CT", "MR", "US", "PT")
BODY_PARTS = ("CHEST", "HEAD", "ABDOMEN", "PELVIS", "SPINE", "KNEE", "SHOULDER", "BREAST")
TEXTS = ("right lower lobe consolidation", "left pleural effusion", "pneumothorax",
         "subdural hematoma", "liver metastases", "renal calculus", "pulmonary embolism",
         "fracture of the distal radius", "cardiomegaly", "small bowel obstruction")


# -- data -------------------------------------------------------------------------------------
def generate(n: int, dim: int, queries: int, seed: int = 0) -> dict:
    """Vectors, per-vector study/series ids and group, and text-like queries (see module doc)."""
    rng = np.random.default_rng(seed)
    p = CALIBRATION
    latent, groups, findings = p["latent"], 24, 40
    axes = np.linalg.qr(rng.normal(size=(dim, latent + 2)))[0].T.astype(np.float32)
    mean_axis, gap_axis, basis = axes[0], axes[1], axes[2:]
    # A decaying spectrum over the latent axes, as real embeddings have (not isotropic noise).
    spectrum = np.arange(1, latent + 1) ** -p["decay"]
    spectrum /= np.sqrt((spectrum**2).mean()) * np.sqrt(latent)

    def embed(lat: np.ndarray) -> np.ndarray:
        return (lat * spectrum) @ basis + rng.normal(size=(len(lat), dim)) * p["noise"] / np.sqrt(dim)

    group_centres = rng.normal(size=(groups, latent)) * p["group"]
    finding_centres = group_centres[:, None, :] + rng.normal(size=(groups, findings, latent)) * p["finding"]
    finding_weights = rng.zipf(1.6, size=groups * findings).astype(np.float64)
    finding_weights /= finding_weights.sum()
    vectors = np.empty((n, dim), dtype=np.float32)
    study_of = np.empty(n, dtype=np.int32)
    series_of = np.empty(n, dtype=np.int32)
    group_of = np.empty(n, dtype=np.int16)
    study_centres = []
    filled = study = series = 0
    while filled < n:
        finding = rng.choice(groups * findings, p=finding_weights)
        group = finding // findings
        centre = finding_centres[group, finding % findings] + rng.normal(size=latent) * p["study"]
        study_centres.append(centre)
        volumetric = MODALITIES[group % len(MODALITIES)] in ("CT", "MR", "PT")
        for _ in range(rng.integers(1, 4)):
            slices = int(rng.integers(5, 31)) if volumetric else 1
            slices = min(slices, n - filled)
            base = centre + rng.normal(size=latent) * p["series"]
            lat = base + rng.normal(size=(slices, latent)) * p["slice"]
            vectors[filled : filled + slices] = p["mean"] * mean_axis + embed(lat)
            study_of[filled : filled + slices] = study
            series_of[filled : filled + slices] = series
            group_of[filled : filled + slices] = group
            filled += slices
            series += 1
            if filled >= n:
                break
        study += 1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # A text query describes one study's findings, loosely, and sits apart from every image along
    # one direction the images do not use (CLIP's modality gap: scores of ~0.1, ranking kept).
    targets = np.asarray(study_centres)[rng.integers(0, len(study_centres), size=queries)]
    q = embed(targets + rng.normal(size=(queries, latent)) * p["query"])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q = q + p["gap"] * gap_axis
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return {"vectors": vectors, "study": study_of, "series": series_of, "group": group_of,
            "queries": q.astype(np.float32)}


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), 200_000):
        index.reset()
        index.add(vectors[start : start + 200_000])
        scores, ids = index.search(queries, k)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids + start], axis=1)
        order = np.argsort(-scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, order, axis=1)
        best_ids = np.take_along_axis(ids, order, axis=1)
    return best_ids


def prepare(work: Path, n: int, dim: int, queries: int) -> Path:
    folder = work / f"data-{n}-{dim}"
    if (folder / "truth.npy").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    data = generate(n, dim, queries)
    for name, array in data.items():
        np.save(folder / f"{name}.npy", array)
    np.save(folder / "truth.npy", exact_top_k(data["vectors"], data["queries"], K))
    return folder


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows of a saved matrix, read from the file: pages of a mapped file would count as RSS."""
    header = np.load(path, mmap_mode="r")  # maps, touches nothing: gives shape and data offset
    width, itemsize = header.shape[1], header.dtype.itemsize
    return np.fromfile(path, dtype=header.dtype, count=(stop - start) * width,
                       offset=header.offset + start * width * itemsize).reshape(-1, width)


def payload(i: int, data: dict) -> dict:
    group = int(data["group"][i])
    day = 20150101 + int(data["study"][i]) % 3000
    return {"study": f"st{data['study'][i]:07d}", "series": f"se{data['series'][i]:08d}",
            "path": f"/archive/{data['study'][i]:07d}/{data['series'][i]:08d}/{i:09d}.dcm",
            "frame": 0, "modality": MODALITIES[group % len(MODALITIES)],
            "body_part": BODY_PARTS[group % len(BODY_PARTS)], "view": None,
            "study_date": f"{day // 10000}-{day // 100 % 100:02d}-{day % 100:02d}",
            "study_day": day}


# -- workers (each in its own process) --------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def faiss_choice(n: int, dim: int, device: str):
    """The FAISS index radsearch chooses for ``n`` vectors: raw FAISS is built the same way."""
    from radsearch.storage.backends.faiss_index import choose_index

    return choose_index(n, dim, device=device)


def efforts(kind: str, params: dict) -> list[int]:
    """Search efforts tried, cheapest first: efSearch (HNSW), nprobe (IVF) or hnsw_ef (Qdrant)."""
    if kind in ("ivfsq", "ivfpq"):
        nlist = params["nlist"]
        return sorted({max(1, nlist // d) for d in (64, 32, 16, 12, 8, 6, 5, 4, 3, 2, 1)})
    return list(EFFORTS)


def effort_param(kind: str) -> str:
    return "nprobe" if kind in ("ivfsq", "ivfpq") else "ef_search"


def open_store(kind: str, store: Path, device: str, effort: int | None, read_only: bool,
               faiss_kind: str = "flat"):
    from radsearch.storage.backends.edge_backend import QdrantEdgeBackend
    from radsearch.storage.backends.faiss_backend import FaissBackend

    params = {effort_param(faiss_kind): effort} if effort else {}
    if kind == "radsearch-faiss":
        return IndexBackend(store, {"faiss_params": params, "device": device})
    if kind == "faiss-points-store":
        return FaissBackend(store, read_only=read_only,
                            options={"faiss_params": params, "device": device})
    backend = QdrantEdgeBackend(store, vector_name="bench", read_only=read_only)
    if effort:
        backend.hnsw_ef = effort
    return backend


class IndexBackend:
    """The faiss back end of a radsearch index folder, opened as a reader opens it, with search
    options of its own (the effort)."""

    def __init__(self, index: Path, options: dict):
        from radsearch.storage.backends.catalog_backend import CatalogBackend
        from radsearch.storage.store import Store

        self.store = Store.open_for_reading(index)
        self.backend = CatalogBackend(self.store.conn, index / "faiss", self.store.dim,
                                      options=options)

    def search(self, *args, **kwargs):
        return self.backend.search(*args, **kwargs)

    def close(self) -> None:
        self.backend.close()
        self.store.close()


def build_index(folder: Path, index: Path, n: int, device: str) -> None:
    """A radsearch index of the data as `radsearch index` writes one (catalog rows for files,
    studies, series and images, a vector per image and per study), then its back end's catch-up."""
    from radsearch.indexer import writer
    from radsearch.storage import catalog
    from radsearch.storage.store import Store

    meta = {name: np.load(folder / f"{name}.npy") for name in ("study", "series", "group")}
    dim = int(np.load(folder / "queries.npy").shape[1])
    describe = {"name": "synthetic", "weights_hash": "0" * 64, "dim": dim, "preprocessing": {}}
    with Store.open_for_writing(index, describe) as store:
        conn = store.conn
        series_ids: dict[int, int] = {}
        study_ids: dict[int, int] = {}
        sums: dict[int, np.ndarray] = {}
        for start in range(0, n, 20_000):
            rows = read_rows(folder / "vectors.npy", start, min(n, start + 20_000))
            with catalog.transaction(conn):
                for j, vector in enumerate(rows):
                    i = start + j
                    point = payload(i, meta)
                    study = int(meta["study"][i])
                    if study not in study_ids:
                        study_ids[study] = writer.put_study(conn, point["study"],
                                                            study_date=point["study_date"])
                    series = int(meta["series"][i])
                    if series not in series_ids:
                        series_ids[series] = writer.put_series(
                            conn, point["series"], study_ids[study],
                            {"modality": point["modality"], "body_part": point["body_part"]})
                    file_id = conn.execute(
                        "INSERT INTO files(path, dir, size, mtime_ns, sha256, kind, status, "
                        "indexed_at) VALUES (?, ?, 0, 0, ?, 'dicom', 'indexed', 0)",
                        (point["path"], point["path"].rsplit("/", 1)[0], f"{i:064x}")).lastrowid
                    image = conn.execute(
                        "INSERT INTO images(file_id, series_id, study_id, frame, modality, "
                        "body_part, study_date) VALUES (?, ?, ?, 0, ?, ?, ?)",
                        (file_id, series_ids[series], study_ids[study], point["modality"],
                         point["body_part"], point["study_date"])).lastrowid
                    writer.put_vector(conn, "images", image, vector)
                    sums[study] = sums.get(study, 0) + vector
        with catalog.transaction(conn):
            for study, total in sums.items():
                writer.put_vector(conn, "studies", study_ids[study], total / np.linalg.norm(total))
            conn.execute("UPDATE series SET dirty = 0")
            conn.execute("UPDATE studies SET dirty = 0")
        store.sync_backend()


def build(kind: str, folder: Path, store: Path, device: str) -> dict:
    """Empty -> persisted and searchable; returns seconds."""
    import faiss

    from radsearch.storage.backends import Point

    n = len(np.load(folder / "study.npy", mmap_mode="r"))
    meta = {name: np.load(folder / f"{name}.npy") for name in ("study", "series", "group")}
    started = time.perf_counter()
    if kind == "raw-faiss":
        index = raw_index(folder, n, device)
        for start in range(0, n, 100_000):
            index.add(read_rows(folder / "vectors.npy", start, min(n, start + 100_000)))
        store.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(store / "index.faiss"))
        return {"build_s": time.perf_counter() - started}
    if kind == "radsearch-faiss":
        build_index(folder, store, n, device)
        return {"build_s": time.perf_counter() - started}
    backend = open_store(kind, store, device, None, read_only=False)
    dim = int(np.load(folder / "queries.npy").shape[1])
    backend.create_collection("images", dim)
    backend.create_collection("studies", dim)
    sums: dict[int, np.ndarray] = {}
    for start in range(0, n, 20_000):
        rows = read_rows(folder / "vectors.npy", start, min(n, start + 20_000))
        backend.upsert("images", [Point(_pid(start + j), rows[j], payload(start + j, meta))
                                  for j in range(len(rows))])
        for j, study in enumerate(meta["study"][start : start + len(rows)]):
            sums[int(study)] = sums.get(int(study), 0) + rows[j]
    studies = [Point(_pid(10**10 + s), v / np.linalg.norm(v), {"study": f"st{s:07d}", "modality": []})
               for s, v in sums.items()]
    for start in range(0, len(studies), 20_000):
        backend.upsert("studies", studies[start : start + 20_000])
    backend.persist()
    backend.close()
    return {"build_s": time.perf_counter() - started}


def raw_index(folder: Path, n: int, device: str):
    """An empty (trained) FAISS index of radsearch's choice for ``n`` vectors, without radsearch."""
    import faiss

    from radsearch.storage.backends.faiss_index import training_sample

    dim = int(np.load(folder / "queries.npy").shape[1])
    choice = faiss_choice(n, dim, device)
    params = choice.params
    if choice.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if choice.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    codes = "SQ8" if choice.kind == "ivfsq" else f"PQ{params['pq_m']}x8"
    index = faiss.index_factory(dim, f"IVF{params['nlist']},{codes},RFlat", faiss.METRIC_INNER_PRODUCT)
    if choice.kind == "ivfpq":
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    rows = np.sort(training_sample(np.arange(n), params["nlist"]))
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    return index


def set_effort(index, kind: str, effort: int, params: dict) -> None:
    """Set the search effort on a FAISS index read from a file (IDMap-wrapped or not)."""
    import faiss

    space = faiss.ParameterSpace()
    if kind == "hnsw":
        space.set_index_parameter(index, "efSearch", effort)
    elif kind in ("ivfsq", "ivfpq"):
        space.set_index_parameter(index, "nprobe", effort)
        space.set_index_parameter(index, "k_factor_rf", float(params["k_factor"]))


def _pid(i: int) -> str:
    import uuid

    return str(uuid.UUID(int=i + 1))


def measure(kind: str, folder: Path, store: Path, device: str, start_effort: int,
            n_queries: int, e2e_queries: int) -> dict:
    """Memory of the opened store, then the smallest effort reaching the recall target, then
    QPS and latency at it (one query at a time)."""
    import faiss

    queries = np.load(folder / "queries.npy")[:n_queries]
    truth = np.load(folder / "truth.npy")[:n_queries]
    n = len(np.load(folder / "study.npy", mmap_mode="r"))
    choice = faiss_choice(n, queries.shape[1], device)
    before = rss_bytes()
    if kind == "raw-faiss":
        index = faiss.read_index(str(store / "index.faiss"))
        if device == "cuda":
            raise SystemExit("raw-faiss is measured on the CPU")

        def search(vector, effort):
            set_effort(index, choice.kind, effort, choice.params)
            return index.search(vector[None, :], K)[1][0]
    elif kind == "qdrant-local":
        raise AssertionError("qdrant-local is measured by local_mode()")
    else:
        opened = {}

        def search(vector, effort):
            if kind == "qdrant-edge" and opened:  # hnsw_ef is a per-query parameter
                next(iter(opened.values())).hnsw_ef = effort
            elif effort not in opened:  # ef_search is read when the FAISS index is loaded
                for other in opened.values():
                    other.close()
                opened.clear()
                opened[effort] = open_store(kind, store, device, effort, read_only=True,
                                            faiss_kind=choice.kind)
            hits = next(iter(opened.values())).search("images", vector, K)
            return [int(h.payload["path"].rsplit("/", 1)[1][:-4]) for h in hits]

    for vector in queries[:20]:
        search(vector, start_effort)
    memory = rss_bytes() - before
    result = {"memory_bytes_per_vector": memory / n, "disk_bytes_per_vector": disk_bytes(store) / n}
    tried = efforts("hnsw" if kind == "qdrant-edge" else choice.kind, choice.params)
    for effort in [e for e in tried if e >= start_effort] or tried[-1:]:
        recall = _recall([search(q, effort) for q in queries], truth)
        if recall >= TARGET_RECALL:
            break
    other, other_name = None, None
    if kind == "faiss-points-store":
        # The same index file searched by FAISS directly, query by query in turn with radsearch,
        # so that the ratio is radsearch's own cost, not another graph's or another minute's load.
        raw = faiss.read_index(str(store / "images.faiss"),
                               faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        set_effort(raw, choice.kind, effort, choice.params)
        other, other_name = (lambda vector: raw.search(vector[None, :], K)), "same_index_raw_faiss"
    before = store.parent / store.name.replace("radsearch-faiss", "faiss-points-store")
    if kind == "radsearch-faiss" and before.exists():
        # The layout before the vector file, in turn query by query: after vs before.
        points_store = open_store("faiss-points-store", before, device, effort, read_only=True,
                                  faiss_kind=choice.kind)
        other = lambda vector: points_store.search("images", vector, K)  # noqa: E731
        other_name = "points_store_in_turn"
    latencies, raw_latencies = [], []
    for number, vector in enumerate(queries):
        # Each goes first every other query: the second finds the graph's pages warm.
        order = ("radsearch", "raw") if number % 2 else ("raw", "radsearch")
        for who in order if other is not None else ("radsearch",):
            started = time.perf_counter()
            if who == "raw":
                other(vector)
            else:
                search(vector, effort)
            (raw_latencies if who == "raw" else latencies).append(time.perf_counter() - started)
    result.update(_timing(latencies), effort=effort, recall=recall,
                  effort_name="hnsw_ef" if kind == "qdrant-edge" else
                  {"hnsw": "efSearch", "ivfsq": "nprobe", "ivfpq": "nprobe"}.get(choice.kind, ""))
    if kind != "qdrant-edge":
        result["faiss_index"] = choice.to_dict()
    if raw_latencies:
        result[other_name] = _timing(raw_latencies)
        ratio = "qps_vs_raw_faiss" if other_name == "same_index_raw_faiss" else "qps_vs_points_store"
        result[ratio] = result["qps"] / result[other_name]["qps"]
    if kind == "radsearch-faiss" and e2e_queries:
        result["e2e"] = end_to_end(store, device, effort, e2e_queries, choice.kind)
    return result


def _recall(found: list, truth: np.ndarray) -> float:
    return float(np.mean([len(set(map(int, f)) & set(t.tolist())) / K for f, t in zip(found, truth)]))


def _timing(latencies: list[float]) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"qps": len(ms) / (ms.sum() / 1000), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def end_to_end(store: Path, device: str, effort: int, count: int, faiss_kind: str) -> list[dict]:
    """A text query as `radsearch search` answers it: encode, search, group by study; once per text
    runtime (ONNX Runtime when installed, and torch), the two taking turns query by query."""
    from radsearch.storage.backends import PointFilter
    from radsearch.encoders import _text_runtime
    from radsearch.encoders.radclip_mini import RadClipMini
    from radsearch.retrieval import image_search

    runtimes = (["onnx"] if _text_runtime.onnx_installed() else []) + ["torch"]
    encoders = {runtime: RadClipMini(text_runtime=runtime) for runtime in runtimes}
    opened = open_store("radsearch-faiss", store, device, effort, read_only=True,
                        faiss_kind=faiss_kind)
    backend = opened.backend
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(count + 5)]
    for encoder in encoders.values():
        for text in texts[:5]:  # warm-up: the runtime's first calls
            image_search(backend, encoder.encode_texts([text])[0], K, PointFilter())
    encode = {runtime: [] for runtime in runtimes}
    total = {runtime: [] for runtime in runtimes}
    for number, text in enumerate(texts[5:]):
        for runtime in runtimes[::-1] if number % 2 else runtimes:
            started = time.perf_counter()
            vector = encoders[runtime].encode_texts([text])[0]
            encoded = time.perf_counter()
            image_search(backend, vector, K, PointFilter())
            total[runtime].append(time.perf_counter() - started)
            encode[runtime].append(encoded - started)
    opened.close()
    return [{**_timing(total[r]), "encode_p50_ms": float(np.percentile(encode[r], 50) * 1000),
             "text_runtime": r} for r in runtimes]


def local_mode(folder: Path, n_queries: int) -> dict:
    """qdrant-client's local mode (in memory): build and search in one process."""
    from radsearch.storage.backends import Point
    from radsearch.storage.backends.qdrant_backend import QdrantBackend

    queries = np.load(folder / "queries.npy")[:n_queries]
    truth = np.load(folder / "truth.npy")[:n_queries]
    meta = {name: np.load(folder / f"{name}.npy") for name in ("study", "series", "group")}
    n = len(meta["study"])
    before = rss_bytes()
    started = time.perf_counter()
    backend = QdrantBackend(":memory:", vector_name="bench", options={"batch_size": 5000})
    backend.create_collection("images", queries.shape[1])
    for start in range(0, n, 20_000):
        rows = read_rows(folder / "vectors.npy", start, min(n, start + 20_000))
        backend.upsert("images", [Point(_pid(start + j), rows[j], payload(start + j, meta))
                                  for j in range(len(rows))])
    build_s = time.perf_counter() - started
    memory = rss_bytes() - before
    found, latencies = [], []
    for vector in queries:
        started = time.perf_counter()
        hits = backend.search("images", vector, K)
        latencies.append(time.perf_counter() - started)
        found.append([int(h.payload["path"].rsplit("/", 1)[1][:-4]) for h in hits])
    return {"build_s": build_s, "memory_bytes_per_vector": memory / n,
            "disk_bytes_per_vector": 0.0, "effort": "exact", "recall": _recall(found, truth),
            **_timing(latencies)}


# -- driver -----------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> None:
    folder, store = Path(args.folder), Path(args.store)
    if args.threads and args.worker == "measure":  # builds use every core
        import faiss
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.worker == "build":
        result = build(args.kind, folder, store, args.device)
    elif args.kind == "qdrant-local":
        result = local_mode(folder, args.queries)
    else:
        result = measure(args.kind, folder, store, args.device, args.effort, args.queries,
                         args.e2e_queries)
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args: argparse.Namespace, worker: str, kind: str, folder: Path, store: Path,
           effort: int) -> dict:
    command = [sys.executable, __file__, "--worker", worker, "--kind", kind, "--folder",
               str(folder), "--store", str(store), "--device", args.device, "--effort", str(effort),
               "--queries", str(args.queries), "--e2e-queries", str(args.e2e_queries),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--e2e-queries", type=int, default=200)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="FAISS device for radsearch-faiss (cuda: exact search on the GPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per query for FAISS and the text encoder (0: all); one "
                             "query at a time gains little from more, and on a shared machine "
                             "idle-spinning threads cost 5-20x")
    parser.add_argument("--work", type=Path, default=Path("/tmp/radsearch-bench"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--worker", choices=("build", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--effort", type=int, default=EFFORTS[0], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    results = []
    for n in args.sizes:
        started = time.perf_counter()
        folder = prepare(args.work, n, args.dim, args.queries)
        print(f"# {n:,} x {args.dim}: data and exact top-{K} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        raw_effort = EFFORTS[0]
        for kind in args.backends:
            row = {"backend": kind, "vectors": n, "dim": args.dim, "device": args.device}
            if kind == "qdrant-local" and n > LOCAL_MODE_LIMIT:
                results.append({**row, "skipped": "local mode is brute force in Python"})
                continue
            store = args.work / f"store-{kind}-{n}"
            shutil.rmtree(store, ignore_errors=True)
            if kind != "qdrant-local":
                row.update(_spawn(args, "build", kind, folder, store, 0))
            start_effort = raw_effort if "faiss" in kind and kind != "raw-faiss" else EFFORTS[0]
            if "error" not in row:
                row.update(_spawn(args, "measure", kind, folder, store, start_effort))
            if kind == "raw-faiss" and "effort" in row:
                raw_effort = row["effort"]
            if kind != "faiss-points-store":  # kept for radsearch-faiss to search in turn
                shutil.rmtree(store, ignore_errors=True)
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        shutil.rmtree(args.work / f"store-faiss-points-store-{n}", ignore_errors=True)
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps({"machine": _machine(), "results": results}, indent=2) + "\n")


def _machine() -> dict:
    import faiss

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "faiss": faiss.__version__, "gpus": faiss.get_num_gpus()}


def markdown(results: list[dict]) -> str:
    lines = ["| back end | vectors | build s | RAM B/vector | disk B/vector | effort | recall@10 "
             "| QPS | p50 ms | p99 ms | QPS vs FAISS on the same index |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = f"{r['backend']} ({r['device']})" if r.get("device") == "cuda" else r["backend"]
        if "skipped" in r or "error" in r:
            lines.append(f"| {name} | {r['vectors']:,} | {r.get('skipped') or r.get('error')} "
                         "| | | | | | | | |")
            continue
        ratio = r.get("qps_vs_raw_faiss")
        lines.append(
            f"| {name} | {r['vectors']:,} | {r['build_s']:.0f} | {r['memory_bytes_per_vector']:,.0f} "
            f"| {r['disk_bytes_per_vector']:,.0f} | {r.get('effort_name', '')} {r['effort']} | {r['recall']:.3f} "
            f"| {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {'' if ratio is None else f'{ratio:.2f}x'} |")
    same = [r for r in results if "same_index_raw_faiss" in r]
    if same:
        lines += ["", "| same index file, queries in turn | vectors | effort | raw FAISS QPS "
                  "| radsearch QPS | ratio (goal >= 0.9) |", "|---|---|---|---|---|---|"]
        lines += [f"| faiss-points-store vs faiss.read_index | {r['vectors']:,} | {r['effort']} "
                  f"| {r['same_index_raw_faiss']['qps']:,.0f} | {r['qps']:,.0f} "
                  f"| {r['qps_vs_raw_faiss']:.2f}x |" for r in same]
    disk = [r for r in results if r.get("backend") in ("radsearch-faiss", "faiss-points-store")
            and "disk_bytes_per_vector" in r]
    if disk:
        lines += ["", "| on disk | vectors | B/vector | x raw FAISS flat (4 x dim + 8 B) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['backend']} | {r['vectors']:,} | {r['disk_bytes_per_vector']:,.0f} "
                  f"| {r['disk_bytes_per_vector'] / (4 * r['dim'] + 8):.2f}x |" for r in disk]
    turns = [r for r in results if "points_store_in_turn" in r]
    if turns:
        lines += ["", "| queries in turn, same effort | vectors | points store (before) p50 ms "
                  "| index (after) p50 ms | QPS after / before |", "|---|---|---|---|---|"]
        lines += [f"| radsearch-faiss vs faiss-points-store | {r['vectors']:,} "
                  f"| {r['points_store_in_turn']['p50_ms']:.2f} | {r['p50_ms']:.2f} "
                  f"| {r['qps_vs_points_store']:.2f}x |" for r in turns]
    e2e = [r for r in results if "e2e" in r]
    if e2e:
        lines += ["", "| end-to-end text query (encode + search + group) | text tower on | vectors "
                  "| p50 ms | p99 ms | of which encoding p50 ms |", "|---|---|---|---|---|---|"]
        lines += [f"| radsearch-faiss, radclip-mini | {e['text_runtime']} | {r['vectors']:,} "
                  f"| {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e['encode_p50_ms']:.1f} |"
                  for r in e2e for e in r["e2e"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
