"""Ingest throughput: `radsearch index` images/s on a real corpus, with two ratios from the same run.

    python benchmarks/ingest.py [--corpus ../shared/data/medpix2] [--limit 400] [--model radclip-mini]

1. forward-only: the encoder alone on the same images, already decoded and in memory (the ceiling);
2. naive: one process, read a file then embed it, file after file (the floor);
3. radsearch: `index_folder` into a fresh index (decode workers overlapped with batched embedding,
   catalog and FAISS writes included).
Printed: images/s of each, radsearch / forward-only (goal >= 0.8) and radsearch / naive (goal >= 2),
and where the radsearch run's time went, stage by stage (IndexSummary.stages).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from radsearch.encoders import DEFAULT_MODEL, create_model  # noqa: E402
from radsearch.indexer import default_workers, index_folder  # noqa: E402
from radsearch.indexer.discover import discover  # noqa: E402
from radsearch.indexer.runner import STAGE_ITEMS  # noqa: E402
from radsearch.reading import ReadError, SkipFile, read_file  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medpix2"


def _readable(path: Path, image_size: int) -> bool:
    try:
        return bool(read_file(path, image_size=image_size, salt="bench").frames)
    except (ReadError, SkipFile):
        return False


def _corpus(source: Path, limit: int, workdir: Path, image_size: int) -> tuple[Path, list[Path]]:
    """The first `limit` image files of `source` that decode, linked into one folder."""
    candidates = (Path(f.path) for f in discover(source) if f.is_image)
    files = [path for path in candidates if _readable(path, image_size)][:limit]
    folder = workdir / "corpus"
    folder.mkdir()
    for number, path in enumerate(files):
        (folder / f"{number:06d}_{path.name}").symlink_to(path)
    return folder, files


def forward_only(encoder, files: list[Path], batch_size: int) -> tuple[int, float]:
    frames = [f.pixels for path in files
              for f in read_file(path, image_size=encoder.image_size, salt="bench").frames]
    stacked = np.stack(frames)
    encoder.encode_images(stacked[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(stacked), batch_size):
        encoder.encode_images(stacked[start : start + batch_size])
    return len(stacked), time.perf_counter() - started


def naive(encoder, files: list[Path]) -> tuple[int, float]:
    images = 0
    started = time.perf_counter()
    for path in files:
        frames = read_file(path, image_size=encoder.image_size, salt="bench").frames
        encoder.encode_images(np.stack([f.pixels for f in frames]))
        images += len(frames)
    return images, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found: {args.corpus} (see ../shared/data/README.md)")

    encoder = create_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder, files = _corpus(args.corpus, args.limit, Path(tmp), encoder.image_size)
        n_forward, t_forward = forward_only(encoder, files, args.batch_size)
        n_naive, t_naive = naive(encoder, files)
        summary = index_folder(folder, index=Path(tmp) / "index", model=args.model,
                               workers=args.workers, batch_size=args.batch_size)
    rates = {
        "forward_only": n_forward / t_forward,
        "naive": n_naive / t_naive,
        "radsearch": summary.images / summary.seconds,
    }
    figures = {
        "corpus": str(args.corpus), "files": len(files), "images": summary.images,
        "model": args.model, "workers": args.workers, "cpus": os.cpu_count(),
        "images_per_s": rates,
        "ratio_vs_forward_only": rates["radsearch"] / rates["forward_only"],
        "ratio_vs_naive": rates["radsearch"] / rates["naive"],
        "stages": summary.stages,
    }
    print(f"corpus {args.corpus} - {len(files)} files, {summary.images} images, model {args.model}, "
          f"{args.workers} decode worker(s), {os.cpu_count()} CPUs")
    print("| path | images/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"radsearch / forward-only = {figures['ratio_vs_forward_only']:.2f} (goal >= 0.8)")
    print(f"radsearch / naive        = {figures['ratio_vs_naive']:.2f} (goal >= 2)")
    print(f"\nradsearch's run, {summary.seconds:.1f} s, by stage (wall time in the main process; "
          "reads overlap embedding, so read is the wait for decoded files):")
    print("| stage | s | share | items |\n|---|---|---|---|")
    for name, times in summary.stages.items():
        print(f"| {name} | {times['seconds']:.2f} | {times['seconds'] / summary.seconds:.0%} | "
              f"{times['items']} {STAGE_ITEMS.get(name, '')} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
