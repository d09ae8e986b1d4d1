"""One FAISS index, chosen by collection size: exact below ~50k vectors, IVF with 8-bit scalar
quantization and exact re-ranking above (HNSW and IVF-PQ on request); on the GPU when faiss-gpu
sees one.

Why IVF-SQ8 by default: text queries sit apart from the image vectors they search (CLIP's modality
gap), and a graph walked from such a query needs a very deep search: on benchmarks/search.py's data
(fitted to radclip-mini's real embeddings) HNSW M=32 reached recall@10 0.927 at efSearch 8192 on
1M vectors (15 QPS), where IVF4096-SQ8 with re-ranking reached 0.973 at nprobe 683 (78 QPS); PQ
codes are too coarse for the near-ties at the top of such a ranking (0.80 at nprobe 1024).

Given ``vectors_of`` (full-precision vectors by id, e.g. the catalog's vector file), an index holds
no full-precision copy of its own: IVF and HNSW keep only their 8-bit (or PQ) codes and re-rank their
candidates with ``vectors_of``; a flat index is filled in memory and never saved. Without it, the
codes are re-ranked by a refine index that stores every vector a second time (``RFlat``).

External ids are int64 (``IndexIDMap2``). Exact (``flat``) indexes remove ids in place; HNSW and
the IVF kinds cannot, so their owner rebuilds them after deletions. Filtered searches return min(k,
passing) hits: a selective filter is answered exactly over the passing vectors (reconstructed
from the index), a broad one by searching deeper and dropping what fails - the equivalent of
Qdrant's ACORN for a graph that FAISS cannot filter while walking.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radsearch.storage.backends.base import exact_search
from radsearch.errors import RadsearchError
from radsearch.optional import require

require("faiss")  # faiss comes from an extra: faiss-cpu or faiss-gpu, never both
import faiss  # noqa: E402

KINDS = ("flat", "ivfsq", "hnsw", "ivfpq")
TRAINED_KINDS = ("ivfsq", "ivfpq")  # built from a sample of their vectors: k-means (and codebooks)
SEARCH_PARAMS = ("ef_search", "nprobe", "k_factor")  # change results, not the index: no rebuild
EXACT_LIMIT = 50_000  # below this many vectors, exact search is fast enough and costs no recall
GPU_EXACT_LIMIT = 5_000_000  # on a GPU, brute force stays the better choice much longer
MMAP_BYTES = 256 << 20  # readers memory-map index files at least this large
_FILTER_EXACT_LIMIT = 20_000  # a filter passing at most this many vectors is answered exactly
_RECONSTRUCT_CHUNK = 65_536
_HNSW_K_FACTOR = 4  # candidates per hit an HNSW graph over 8-bit codes re-ranks


@dataclass(frozen=True)
class IndexChoice:
    """Index kind and parameters, recorded with the index so later runs and readers agree."""

    kind: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> IndexChoice:
        return cls(data["kind"], dict(data.get("params", {})))


def training_sample(ids: np.ndarray, nlist: int) -> np.ndarray:
    """The ids an IVF index is trained on: the 39 per list k-means asks for, and the 256 x 39 that PQ
    codebooks need (a fixed seed, so a rebuild trains the same way)."""
    size = min(len(ids), max(40 * nlist, 256 * 39))
    return np.random.default_rng(0).choice(ids, size=size, replace=False)


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when faiss-gpu sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise RadsearchError(f"unknown device {device!r}: use auto, cpu or cuda")
    gpus = gpu_count()
    if device == "cuda" and gpus == 0:
        raise RadsearchError(
            "--device cuda: FAISS sees no GPU (install 'radsearch[gpu]' on a CUDA machine)")
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return device


def choose_index(n: int, dim: int, kind: str = "auto", *, device: str = "cpu",
                 overrides: dict | None = None) -> IndexChoice:
    """The index for ``n`` vectors. ``kind`` (else $RADSEARCH_FAISS_INDEX) forces one of KINDS;
    ``overrides``, then $RADSEARCH_FAISS_PARAMS (``key=value,...``), replace parameters."""
    if kind == "auto":
        kind = os.environ.get("RADSEARCH_FAISS_INDEX", "auto") or "auto"
    if kind == "auto":
        limit = GPU_EXACT_LIMIT if device == "cuda" else EXACT_LIMIT
        kind = "flat" if n < limit else "ivfsq"
    if kind not in KINDS:
        raise RadsearchError(f"unknown FAISS index kind {kind!r}: use auto, {', '.join(KINDS)}")
    if kind == "flat":
        params: dict = {}
    elif kind == "hnsw":
        params = {"m": 32, "ef_construction": 80, "ef_search": 128}
    else:
        nlist = int(min(65536, max(64, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))
        # A sixth of the lists: recall@10 0.97 at 100k and at 1M on the benchmark's data.
        params = {"nlist": nlist, "nprobe": max(1, nlist // 6), "k_factor": 8}
        if kind == "ivfpq":
            params["pq_m"] = next(m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0)
    params.update(overrides or {})
    params.update(env_params())
    return IndexChoice(kind, {key: params[key] for key in params})


def env_params() -> dict:
    """Parameters from $RADSEARCH_FAISS_PARAMS, e.g. ``ef_search=128,m=48``."""
    text = os.environ.get("RADSEARCH_FAISS_PARAMS", "").strip()
    params = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            params[key.strip()] = int(value)
        except ValueError:
            raise RadsearchError(f"RADSEARCH_FAISS_PARAMS: {item!r} is not key=integer") from None
    return params


class FaissIndex:
    """An ``IndexIDMap2`` over the chosen index. Not thread-safe; one per collection."""

    def __init__(self, dim: int, choice: IndexChoice, index: faiss.Index | None = None,
                 device: str = "cpu", search_params: dict | None = None,
                 vectors_of: Callable[[np.ndarray], np.ndarray] | None = None):
        self.dim = dim
        self.choice = choice
        self.device = device
        self.vectors_of = vectors_of  # None: the index keeps the full vectors itself
        # Search-time parameters may differ from the recorded ones without rebuilding.
        merged = {**choice.params, **(search_params or {})}
        self.search_params = {key: value for key, value in merged.items() if key in SEARCH_PARAMS}
        self.index = index if index is not None else self._empty()
        self.mapped = False  # memory-mapped indexes are read-only: FAISS aborts on adding to them
        self._gpu_index = None
        self._apply_search_params()

    # -- building -----------------------------------------------------------------------------
    def _empty(self) -> faiss.Index:
        params = self.choice.params
        refine = "" if self.external else ",RFlat"
        if self.choice.kind == "flat":
            spec = "IDMap2,Flat"
        elif self.choice.kind == "hnsw":
            spec = f"IDMap2,HNSW{params['m']}_SQ8" if self.external else f"IDMap2,HNSW{params['m']},Flat"
        elif self.choice.kind == "ivfsq":
            spec = f"IDMap2,IVF{params['nlist']},SQ8{refine}"
        else:
            spec = f"IDMap2,IVF{params['nlist']},PQ{params['pq_m']}x8{refine}"
        index = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
        if self.choice.kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efConstruction = int(params["ef_construction"])
        elif self.choice.kind == "ivfpq":
            # Polysemous codes (on by default) cost 10x the training time and are not searched.
            faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
        return index

    @property
    def external(self) -> bool:
        """Codes here, full vectors elsewhere (``vectors_of``): re-ranked by this class."""
        return self.vectors_of is not None and self.choice.kind != "flat"

    def train(self, vectors: np.ndarray) -> None:
        """Train an IVF index on a sample of its vectors (see ``training_sample``)."""
        self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def removable(self) -> bool:
        return self.choice.kind == "flat"

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if not self.trained:
            raise RadsearchError("a FAISS index of codes (IVF, or HNSW's SQ8) must be trained before adding to it")
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids in place (flat indexes only: the owner rebuilds the others)."""
        if not len(ids):
            return
        if not self.removable:
            raise RadsearchError(f"a FAISS {self.choice.kind} index cannot remove ids; rebuild it")
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        if self.vectors_of is not None:
            return self.vectors_of(np.asarray(ids, dtype=np.int64))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(ids), _RECONSTRUCT_CHUNK):
            chunk = np.ascontiguousarray(ids[start : start + _RECONSTRUCT_CHUNK], dtype=np.int64)
            out[start : start + len(chunk)] = self.index.reconstruct_batch(chunk)
        return out

    def _apply_search_params(self) -> None:
        params = self.search_params
        space = faiss.ParameterSpace()
        if self.choice.kind == "hnsw":
            space.set_index_parameter(self.index, "efSearch", int(params["ef_search"]))
        elif self.choice.kind in TRAINED_KINDS:
            space.set_index_parameter(self.index, "nprobe", int(params["nprobe"]))
            if not self.external:
                space.set_index_parameter(self.index, "k_factor_rf", float(params["k_factor"]))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            faiss.write_index(self.index, str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk or a kill leaves no half-written leftover
            raise

    @classmethod
    def load(cls, path: Path, dim: int, choice: IndexChoice, *, mmap: bool = False,
             device: str = "cpu", search_params: dict | None = None,
             vectors_of: Callable[[np.ndarray], np.ndarray] | None = None) -> FaissIndex | None:
        """The index saved at ``path``, or None when it is missing, unreadable or of another shape.
        ``mmap`` maps the vectors from the file instead of reading them (read-only use)."""
        if not path.exists():
            return None
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            return None  # an unreadable cache is rebuilt by its owner
        if index.d != dim or _kind_of(index) != choice.kind:
            return None
        if _refined(index) == (vectors_of is not None):
            return None  # codes saved for the other way of re-ranking
        loaded = cls(dim, choice, index, device, search_params, vectors_of)
        loaded.mapped = mmap
        return loaded

    # -- search -------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query among ``allowed`` ids (None: all) minus ``excluded``."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        if allowed is not None and excluded is not None and len(excluded):
            allowed = np.setdiff1d(allowed, excluded)
            excluded = None
        total = self.size if allowed is None else len(allowed)
        k = min(k, total)
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        if allowed is None and (excluded is None or not len(excluded)):
            scores, ids = self._unfiltered(query, k)
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        if self.choice.kind == "flat":
            return self._search_flat(query, k, allowed, excluded)
        if allowed is not None and len(allowed) <= max(_FILTER_EXACT_LIMIT, self.size // 50):
            return self._exact_among(query[0], k, allowed)
        return self._search_deeper(query, k, allowed, excluded)

    def _search_flat(self, query, k, allowed, excluded):
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        else:
            selector = faiss.IDSelectorNot(
                faiss.IDSelectorBatch(np.ascontiguousarray(excluded, dtype=np.int64)))
        scores, ids = self.index.search(query, k, params=faiss.SearchParameters(sel=selector))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _unfiltered(self, query: np.ndarray, k: int):
        if self.device == "cuda" and self.choice.kind == "flat":
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, self.index)
            return self._gpu_index.search(query, k)
        return self._ranked(query, k)

    def _ranked(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The index's top k, its codes' candidates re-ranked exactly when ``external``."""
        if not self.external:
            return self.index.search(query, k, params=self._depth(k))
        fetch = min(self.size, k * int(self.search_params.get("k_factor", _HNSW_K_FACTOR)))
        _, found = self.index.search(query, fetch, params=self._depth(fetch))
        found = found[0][found[0] >= 0]
        scores = self.vectors_of(found) @ query[0] if len(found) else np.zeros(0, np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        out_scores = np.full((1, k), -np.inf, dtype=np.float32)
        out_ids = np.full((1, k), -1, dtype=np.int64)
        out_scores[0, : len(order)], out_ids[0, : len(order)] = scores[order], found[order]
        return out_scores, out_ids

    def _depth(self, k: int):
        """Search parameters deep enough for k hits: HNSW finds at most efSearch neighbours (Qdrant's
        hnsw_ef too), and IVF only what its nprobe lists hold. A deep search (a label query's
        thousands of hits) has its answer spread over many lists, far beyond the nearest ones:
        probe 16x the lists that k hits would fill on average (recall 0.95 -> 1.0 at 100k)."""
        if self.choice.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(int(self.search_params["ef_search"]), k))
        if self.choice.kind not in TRAINED_KINDS:
            return None
        nlist, nprobe = int(self.choice.params["nlist"]), int(self.search_params["nprobe"])
        needed = math.ceil(16 * k * nlist / max(self.size, 1))
        if needed <= nprobe:
            return None
        lists = faiss.SearchParametersIVF(nprobe=min(nlist, needed))
        if self.external:
            return lists
        params = faiss.IndexRefineSearchParameters(
            k_factor=float(self.search_params["k_factor"]), base_index_params=lists)
        params.lists = lists  # the wrapper does not own it: keep it alive while searching
        return params

    def _exact_among(self, vector: np.ndarray, k: int, allowed: np.ndarray):
        vectors = self.reconstruct(allowed)
        scores, rows = exact_search(vectors, vector, k)
        return scores, np.asarray(allowed, dtype=np.int64)[rows]

    def _search_deeper(self, query, k, allowed, excluded):
        """Search past the filtered-out neighbours: fetch more until k pass, else go exact."""
        passing = self.size if allowed is None else len(allowed)
        blocked = 0 if excluded is None else len(excluded)
        fetch = k + blocked if allowed is None else int(k * self.size / max(passing, 1) * 2) + k
        allowed_sorted = None if allowed is None else np.sort(allowed)
        blocked_sorted = None if excluded is None else np.sort(excluded)
        while True:
            fetch = min(fetch, self.size)
            scores, ids = self._ranked(query, fetch)
            scores, ids = scores[0], ids[0]
            keep = ids >= 0
            if allowed_sorted is not None:
                keep &= _contains(allowed_sorted, ids)
            if blocked_sorted is not None:
                keep &= ~_contains(blocked_sorted, ids)
            if keep.sum() >= k:
                return scores[keep][:k], ids[keep][:k]
            if fetch >= self.size:
                break
            fetch *= 4
        # The approximate graph could not reach k passing neighbours: answer exactly.
        if allowed is None:
            allowed = self.ids()
            if blocked_sorted is not None:
                allowed = allowed[~_contains(blocked_sorted, allowed)]
        return self._exact_among(query[0], k, allowed)


def _contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    positions = np.searchsorted(sorted_ids, ids).clip(0, len(sorted_ids) - 1)
    return sorted_ids[positions] == ids


def _kind_of(index: faiss.Index) -> str | None:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFScalarQuantizer):
        return "ivfsq"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return None


def _refined(index: faiss.Index) -> bool:
    """True when the saved index re-ranks with full vectors of its own (RFlat, or HNSW over Flat)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine):
        return True
    if isinstance(inner, faiss.IndexHNSW):
        return isinstance(faiss.downcast_index(inner.storage), faiss.IndexFlat)
    return isinstance(inner, faiss.IndexFlat)
