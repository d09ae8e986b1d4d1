"""NIfTI reading: seconds and peak memory to read a CT-sized volume into model-ready slices.

Writes a synthetic 512x512xN int16 volume (Hounsfield-like values, scl_slope/scl_inter set) as
.nii and .nii.gz in a temporary folder, reads each with ``read_file`` (best of ``--repeat``), and
prints slices/s and the peak traced memory against the raw volume's size.

    python benchmarks/read_nifti.py --slices 200
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np

from radsearch.reading import read_file


def write_volume(folder: Path, slices: int) -> list[Path]:
    rng = np.random.default_rng(0)
    hu = np.full((512, 512, slices), -1000, dtype=np.int16)
    y, x = np.ogrid[:512, :512]
    body = (x - 256) ** 2 / 200**2 + (y - 256) ** 2 / 150**2 < 1
    hu[body] = rng.normal(40, 20, (int(body.sum()), slices)).astype(np.int16)
    header = nib.Nifti1Header()
    header.set_data_shape(hu.shape)
    header.set_data_dtype(np.int16)
    header.set_sform(np.diag([0.7, 0.7, 1.25, 1.0]), code=1)
    header.set_slope_inter(1.0, -1024.0)
    header["vox_offset"] = 352
    content = header.binaryblock + bytes(4) + (hu + 1024).astype("<i2").tobytes(order="F")
    plain, packed = folder / "ct.nii", folder / "ct.nii.gz"
    plain.write_bytes(content)
    packed.write_bytes(gzip.compress(content, compresslevel=6))
    return [plain, packed]


def measure(path: Path, repeat: int) -> tuple[float, int, int]:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = read_file(path, image_size=224, salt="bench")
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    read_file(path, image_size=224, salt="bench")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak, len(result.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raw = 512 * 512 * args.slices * 2
    with tempfile.TemporaryDirectory() as folder:
        for path in write_volume(Path(folder), args.slices):
            seconds, peak, frames = measure(path, args.repeat)
            print(f"{path.name:10} {path.stat().st_size / 2**20:7.1f} MB on disk  "
                  f"{seconds:6.2f} s  {frames / seconds:6.1f} slices/s  "
                  f"peak {peak / 2**20:6.1f} MB (raw volume {raw / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
