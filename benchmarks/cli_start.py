"""How long `radsearch --help` and `radsearch doctor` take to start, against bare Python and Typer.

    python benchmarks/cli_start.py [--runs 9]

Each command runs in a fresh interpreter (as a shell runs it); the median wall time is printed with
its ratio to `python -c "import typer"` measured in the same run (the floor any Typer CLI pays),
and the heavy modules each one loaded (none is the goal for --help).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "faiss", "numpy", "pydicom", "PIL", "qdrant_client", "streamlit", "transformers")
PROBE = (
    "import sys\n"
    "from radsearch.cli import app\n"
    "try:\n"
    "    app({args!r}, prog_name='radsearch')\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('\\nLOADED', len(sys.modules), *sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))\n"
)


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def loaded(args: list[str]) -> str:
    code = PROBE.format(args=args, heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.rsplit("LOADED ", 1)[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    floor = median_seconds([sys.executable, "-c", "import typer"], runs)
    print(f"python -c 'import typer'   {floor * 1000:6.0f} ms  (reference)")
    for args in (["--help"], ["train", "--help"], ["doctor", "--json"]):
        seconds = median_seconds([sys.executable, "-m", "radsearch", *args], runs)
        modules, *heavy = loaded(args).split()
        print(f"radsearch {' '.join(args):16} {seconds * 1000:6.0f} ms  x{seconds / floor:.2f}  "
              f"{modules} modules, heavy: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
