"""Images per second of an encoder at batch 32 on this machine (printed, not asserted).

    python benchmarks/encoder_throughput.py [--model radclip-mini] [--device cpu] [--batches 10]

Inputs are random uint8 squares: the towers' cost does not depend on pixel content. The first
batch (model load, kernel warm-up) is timed separately and left out of the rate; the median batch
rate is the one to quote on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from radsearch.encoders import create_model

BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="radclip-mini")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, default=10, help="timed batches after the warm-up one")
    args = parser.parse_args()

    encoder = create_model(args.model, device=args.device)
    size = encoder.image_size
    images = np.random.default_rng(0).integers(0, 256, (BATCH, size, size), dtype=np.uint8)

    start = time.perf_counter()
    encoder.encode_images(images)
    warm_up = time.perf_counter() - start

    seconds = []
    for _ in range(args.batches):
        start = time.perf_counter()
        encoder.encode_images(images)
        seconds.append(time.perf_counter() - start)

    import torch  # only to report the thread count the run actually used

    print(f"model {encoder.name} ({encoder.dim}-d, {size}x{size}) on {args.device}")
    print(f"machine {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"first batch of {BATCH} (load + warm-up): {warm_up:.2f} s")
    total = sum(seconds)
    print(f"{args.batches} x {BATCH} images: {total:.2f} s = {args.batches * BATCH / total:.1f} images/s "
          f"(median batch {BATCH / float(np.median(seconds)):.1f} images/s)")


if __name__ == "__main__":
    main()
