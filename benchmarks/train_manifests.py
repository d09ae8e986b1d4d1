"""Write radclip-mini's training manifests from the project's shared data (see docs/models/radclip-mini.md).

    python benchmarks/train_manifests.py [--data ../shared/data] [--out /tmp/radsearch-manifests]

Prints the rows per source and split. The manifests hold paths into the data folder, not the data.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from radsearch.training.build_manifests import build_manifests
from radsearch.training.manifest import check_groups, read_manifests

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/radsearch-manifests"))
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}", file=sys.stderr)
        return 1
    written = build_manifests(args.data, args.out)
    pairs = read_manifests(written.values())
    check_groups(pairs)
    counts = Counter((p.source, p.split) for p in pairs)
    for name, path in written.items():
        splits = ", ".join(f"{split} {n}" for (source, split), n in sorted(counts.items()) if source == name)
        print(f"{path}: {splits}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
