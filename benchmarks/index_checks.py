"""What the damage and drift checks cost, by index size.

    python benchmarks/index_checks.py [--points 20000 100000] [--dim 512]

For each size, builds a synthetic index (catalog with that many image vectors in its vector file,
the faiss back end caught up) in a temporary folder and times, best of 3 (files in the page cache):
the reader's check on opening (record, sync generation and point counts, no full read), the
writer's check on opening (SQLite quick_check over the catalog and the store, then the same
comparison), and `radsearch check` (check_index) as a whole.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from radsearch.storage import catalog
from radsearch.health import check_index, out_of_step
from radsearch.indexer import writer
from radsearch.storage.store import CATALOG_FILE, Store


def build(index: Path, points: int, dim: int) -> None:
    describe = {"name": "synthetic", "weights_hash": "0" * 64, "dim": dim, "preprocessing": {}}
    rng = np.random.default_rng(0)
    with Store.open_for_writing(index, describe) as store:
        conn = store.conn
        with catalog.transaction(conn):
            study = writer.put_study(conn, "study")
            conn.execute("INSERT INTO series(key, study_id) VALUES ('series', ?)", (study,))
            for start in range(0, points, 10_000):
                count = min(10_000, points - start)
                vectors = rng.standard_normal((count, dim)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                for number, vector in enumerate(vectors, start=start):
                    file_id = conn.execute(
                        "INSERT INTO files(path, dir, size, mtime_ns, kind, status, indexed_at) "
                        "VALUES (?, '/', 0, 0, 'png', 'indexed', 0)", (f"/{number}.png",)).lastrowid
                    image = conn.execute(
                        "INSERT INTO images(file_id, series_id, study_id, frame) VALUES (?, 1, ?, 0)",
                        (file_id, study)).lastrowid
                    writer.put_vector(conn, "images", image, vector)
        store.sync_backend(("images",))


def best_of(runs: int, job) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        job()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    print(f"{'points':>8} {'catalog MB':>10} {'vectors MB':>10} {'reader s':>9} {'writer s':>9} "
          f"{'check s':>8}")
    for points in args.points:
        with tempfile.TemporaryDirectory() as folder:
            index = Path(folder) / "index"
            build(index, points, args.dim)
            with Store.open_for_reading(index) as store:
                reader = best_of(3, lambda: out_of_step(store.conn, store.spec, index))

                def writer_check() -> None:
                    catalog.quick_check(store.conn)
                    out_of_step(store.conn, store.spec, index, thorough=True)

                writer_seconds = best_of(3, writer_check)
            check = best_of(3, lambda: check_index(index))
            size = (index / CATALOG_FILE).stat().st_size / 2**20
            vectors_size = sum(p.stat().st_size for p in index.glob("vectors*.f32")) / 2**20
            print(f"{points:>8} {size:>10.0f} {vectors_size:>10.0f} {reader:>9.3f} "
                  f"{writer_seconds:>9.3f} {check:>8.3f}")


if __name__ == "__main__":
    main()
