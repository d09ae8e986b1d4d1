"""Label-query benchmark: `radsearch search --label` over 100k stored study vectors.

    python benchmarks/label_query.py [--studies 100000] [--index-kinds auto flat]
                                     [--backends faiss qdrant-edge] [--repeat 20]
                                     [--threads N] [--work /tmp/radsearch-label-bench] [--keep]

Builds one index per back end (and FAISS index kind: ``auto`` is what radsearch picks at this
size, IVF-SQ8 with re-ranking from 50,000 vectors; ``flat`` is exact) whose ``studies`` collection holds synthetic
study vectors, written into the catalog as the indexer writes it and synced by the store (the image indexer would take hours), then
times label queries with the default model's text encoder (radclip-mini):

- search: ``query_backend`` on an open index with the prompts embedded (what a long-lived process
  pays per query); end to end: ``label_query()`` - open the index, embed the prompts, search;
- hits, and the candidates the threshold search scored exactly; recall against brute force
  (classifying every stored vector, ``ZeroShotClassifier.probabilities``).

Data: 11 modality/body-part groups with an archive's shares (chest radiographs 30 %, ...), 40
clusters each, around a shared mean direction, L2-normalised; each group pulled towards its
modality's text embedding by a gain set so that the median study's probability of its own modality
(softmax over the modality set) is 0.7; pleural effusion present in 12 % of chest studies (5 % of
all), its position along the finding's direction drawn around the 0.8-probability point. So the
queries have realistic answers: thousands of hits, a tail of false positives, borderline cases.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from radsearch.indexer import writer  # noqa: E402
from radsearch.indexer.discover import FoundFile  # noqa: E402
from radsearch.storage import catalog  # noqa: E402
from radsearch.storage.backends import BackendSpec  # noqa: E402
from radsearch.encoders import DEFAULT_MODEL, create_model  # noqa: E402
from radsearch.encoders.base import l2_normalise  # noqa: E402
from radsearch.filters import Filters  # noqa: E402
from radsearch.label_search import (  # noqa: E402
    label_classifier,
    label_query,
    query_backend,
    resolve_label,
)
from radsearch.storage.store import Store  # noqa: E402

# (modality, body part, share of studies, label in the modality set)
GROUPS = (
    ("CR", "CHEST", 0.30, "X-ray"), ("DX", "KNEE", 0.07, "X-ray"), ("DX", "SPINE", 0.05, "X-ray"),
    ("CT", "CHEST", 0.10, "CT"), ("CT", "HEAD", 0.08, "CT"), ("CT", "ABDOMEN", 0.10, "CT"),
    ("MR", "HEAD", 0.10, "MRI"), ("MR", "SPINE", 0.06, "MRI"), ("MR", "KNEE", 0.04, "MRI"),
    ("US", "ABDOMEN", 0.06, "ultrasound"), ("MG", "BREAST", 0.04, "mammography"),
)
CLUSTERS = 40
EFFUSION_IN_CHEST = 0.12
BATCH = 10_000
QUERIES = (  # (label, options, min_prob, filters, how the CLI says it)
    ("pleural effusion", {}, 0.7, Filters(), '--label "pleural effusion" --min-prob 0.7'),
    ("pleural effusion", {}, 0.7, Filters(modality="CR"),
     '--label "pleural effusion" --min-prob 0.7 --modality CR'),
    ("pleural effusion", {}, 0.7, Filters(body_part="CHEST", date_from="2022-01-01"),
     '--label "pleural effusion" --min-prob 0.7 --body-part CHEST --date-from 2022-01-01'),
    ("CT", {"label_set": "modality"}, 0.7, Filters(),
     "--label CT --label-set modality --min-prob 0.7"),
    ("CT", {"label_set": "modality"}, 0.9, Filters(),
     "--label CT --label-set modality --min-prob 0.9"),
    ("CT", {"label_set": "modality"}, 0.7, Filters(body_part="HEAD"),
     "--label CT --label-set modality --min-prob 0.7 --body-part HEAD"),
)


# -- data -------------------------------------------------------------------------------------
def make_studies(n: int, encoder, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Unit study vectors and their cards (see the module doc)."""
    rng = np.random.default_rng(seed)
    dim = encoder.dim
    shares = np.array([share for _, _, share, _ in GROUPS])
    group = rng.choice(len(GROUPS), size=n, p=shares / shares.sum())
    cluster = rng.integers(0, CLUSTERS, size=n)
    mean = _unit(rng.normal(size=dim))
    group_centres = l2_normalise(rng.normal(size=(len(GROUPS), dim)))
    cluster_centres = l2_normalise(rng.normal(size=(len(GROUPS), CLUSTERS, dim)))
    base = (1.0 * mean + 0.8 * group_centres[group] + 0.6 * cluster_centres[group, cluster]
            + 0.8 * l2_normalise(rng.normal(size=(n, dim))))
    modality = label_classifier(encoder, resolve_label("CT", label_set="modality"))
    labels = modality.label_set.labels
    texts = modality.positive - modality.positive.mean(axis=0)
    own = np.array([labels.index(GROUPS[g][3]) for g in range(len(GROUPS))])[group]
    gain = _modality_gain(modality, base, texts[own], own)
    vectors = l2_normalise(base + gain * texts[own])

    effusion = label_classifier(encoder, resolve_label("pleural effusion"))
    direction = effusion.finding_direction("Pleural Effusion")
    unit = _unit(direction)
    chest = np.array([GROUPS[g][1] == "CHEST" for g in group])
    positive = chest & (rng.random(n) < EFFUSION_IN_CHEST)
    at_80 = math.log(0.8 / 0.2) / (effusion.scale * float(np.linalg.norm(direction)))
    target = rng.normal(at_80, 0.5 * at_80, size=int(positive.sum()))
    rows = vectors[positive]
    along = rows @ unit
    # Move each positive study's position along the direction to its target, keep the rest.
    rest = rows - along[:, None] * unit
    rest *= (np.sqrt(np.clip(1 - target**2, 0, 1)) / np.linalg.norm(rest, axis=1))[:, None]
    vectors[positive] = rest + target[:, None] * unit
    vectors = l2_normalise(vectors)

    days = rng.integers(0, 10 * 365, size=n)
    cards = []
    for i in range(n):
        modality_code, body_part, _, _ = GROUPS[group[i]]
        date = str(np.datetime64("2015-01-01") + int(days[i]))
        cards.append({
            "study": hashlib.sha256(f"study {i}".encode()).hexdigest()[:32],  # a salted-hash look
            "study_date": date, "study_day": int(date.replace("-", "")), "description": None,
            "modality": [modality_code], "body_part": [body_part], "view": [],
            "preview": [{"path": f"/archive/{i:06d}/IM0001", "frame": 0,
                         "modality": modality_code, "view": None}],
        })
    return vectors, cards


def _modality_gain(classifier, base: np.ndarray, pull: np.ndarray, own: np.ndarray) -> float:
    """The gain that puts the median study's probability of its own modality at 0.7."""
    sample = slice(0, 5000)
    low, high = 0.0, 20.0
    for _ in range(30):
        gain = (low + high) / 2
        vectors = l2_normalise(base[sample] + gain * pull[sample])
        probabilities = classifier.probabilities(vectors)
        median = np.median(probabilities[np.arange(len(vectors)), own[sample]])
        low, high = (gain, high) if median < 0.7 else (low, gain)
    return (low + high) / 2


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def build(path: Path, kind: str, index_kind: str, encoder, vectors, cards) -> float:
    """A fresh index at ``path`` holding the study vectors, written as `radsearch index` writes one
    (catalog rows for each study, its series, file and image, its study vector), then brought into
    the back end by the store's own catch-up; seconds taken."""
    shutil.rmtree(path, ignore_errors=True)
    options = {"faiss_index": index_kind} if kind == "faiss" else {}
    started = time.perf_counter()
    with Store.open_for_writing(path, encoder.describe(), BackendSpec(kind, None, options)) as store:
        conn = store.conn
        for start in range(0, len(cards), BATCH):
            with catalog.transaction(conn):
                for card, vector in zip(cards[start : start + BATCH], vectors[start : start + BATCH]):
                    _put_study(conn, card, vector)
        with catalog.transaction(conn):
            conn.execute("UPDATE series SET dirty = 0")
            conn.execute("UPDATE studies SET dirty = 0")
        store.sync_backend(("studies",))
    return time.perf_counter() - started


def _put_study(conn, card: dict, vector: np.ndarray) -> None:
    study = writer.put_study(conn, card["study"], study_date=card["study_date"])
    modality, body_part = card["modality"][0], card["body_part"][0]
    series = writer.put_series(conn, f"{card['study']}/1", study,
                               {"modality": modality, "body_part": body_part})
    path = card["preview"][0]["path"]
    file_id = writer.put_file(conn, FoundFile(path, path.rsplit("/", 1)[0], 0, 0, "dicom"),
                              status="indexed", sha256=hashlib.sha256(path.encode()).hexdigest())
    conn.execute(
        "INSERT INTO images(file_id, series_id, study_id, frame, modality, body_part, study_date) "
        "VALUES (?, ?, ?, 0, ?, ?, ?)", (file_id, series, study, modality, body_part, card["study_date"]))
    writer.put_vector(conn, "studies", study, vector)


# -- timing -----------------------------------------------------------------------------------
def brute_force(encoder, label, options, min_prob, filters, vectors, cards) -> set[str]:
    choice = resolve_label(label, **options)
    classifier = label_classifier(encoder, choice)
    probabilities = classifier.probabilities(vectors)[:, classifier.label_set.labels.index(
        choice.label)]
    point_filter = filters.point_filter()
    return {cards[i]["study"] for i in np.flatnonzero(probabilities >= min_prob)
            if point_filter.matches(cards[i])}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def time_queries(path: Path, encoder, repeat: int, vectors, cards) -> list[dict]:
    rows = []
    with Store.open_for_reading(path) as store:
        for label, options, min_prob, filters, cli in QUERIES:
            choice = resolve_label(label, **options)
            classifier = label_classifier(encoder, choice)
            point_filter = filters.point_filter()
            run = lambda: query_backend(store.backend, classifier, choice.label,  # noqa: E731
                                        min_prob=min_prob, point_filter=point_filter)
            hits, candidates = run()  # warm: index loaded, pages cached
            search = []
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                search.append(time.perf_counter() - started)
            expected = brute_force(encoder, label, options, min_prob, filters, vectors, cards)
            found = {hit.study for hit in hits}
            rows.append({"cli": cli, "hits": len(hits), "candidates": candidates,
                         "expected": len(expected),
                         "recall": len(found & expected) / len(expected) if expected else 1.0,
                         "search_p50": percentile(search, 50), "search_p99": percentile(search, 99),
                         "label": label, "options": options, "min_prob": min_prob,
                         "filters": filters})
    for row in rows:  # end to end: each call opens the index and embeds the prompts again
        total = []
        for _ in range(max(3, repeat // 4)):
            started = time.perf_counter()
            label_query(row["label"], min_prob=row["min_prob"], filters=row["filters"],
                        index=path, **row["options"])
            total.append(time.perf_counter() - started)
        row["total_p50"] = percentile(total, 50)
        row["total_p99"] = percentile(total, 99)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--backends", nargs="+", default=["faiss"],
                        choices=["faiss", "qdrant-edge"])
    parser.add_argument("--index-kinds", nargs="+", default=["auto", "flat"],
                        choices=["auto", "flat", "hnsw", "ivfpq"], help="FAISS index kinds")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="FAISS (OpenMP) and torch threads [default: theirs, all cores]; on a "
                        "busy shared machine 1 keeps threads from spinning against each other")
    parser.add_argument("--work", type=Path, default=Path("/tmp/radsearch-label-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the indexes (for the CLI)")
    args = parser.parse_args()
    if args.threads:
        import faiss
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)

    encoder = create_model(DEFAULT_MODEL)
    started = time.perf_counter()
    vectors, cards = make_studies(args.studies, encoder)
    seconds = time.perf_counter() - started
    print(f"{args.studies} study vectors ({encoder.dim}-d) in {seconds:.1f} s", flush=True)
    runs = [(kind, index_kind) for kind in args.backends
            for index_kind in (args.index_kinds if kind == "faiss" else ["hnsw"])]
    table = []
    for kind, index_kind in runs:
        path = args.work / f"{kind}-{index_kind}"
        seconds = build(path, kind, index_kind, encoder, vectors, cards)
        name = kind if kind != "faiss" else f"faiss {index_kind}"
        print(f"{name}: built in {seconds:.0f} s -> {path}", flush=True)
        for row in time_queries(path, encoder, args.repeat, vectors, cards):
            table.append((name, row))
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)

    print(f"\n{args.studies:,} studies, {encoder.dim}-d, {DEFAULT_MODEL}; "
          f"{args.repeat} runs per query\n")
    print("| back end | query (`radsearch search ...`) | hits | candidates | recall | "
          "search p50 / p99 ms | end to end p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, row in table:
        print(f"| {name} | `{row['cli']}` | {row['hits']:,} | {row['candidates']:,} | "
              f"{row['recall']:.3f} | {row['search_p50']:.0f} / {row['search_p99']:.0f} | "
              f"{row['total_p50']:.0f} / {row['total_p99']:.0f} |")
    print("\nsearch: index open, prompts embedded; end to end: label_query() - open the index, "
          "embed the prompts, search.\nrecall: against classifying every stored vector.")
    print("\n$ " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    if args.keep:
        print(f"CLI: radsearch search {QUERIES[0][4]} --index {args.work}/faiss-auto")


if __name__ == "__main__":
    main()
