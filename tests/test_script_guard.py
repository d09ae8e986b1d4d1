"""The README's Python snippet runs as a script with or without `if __name__ == "__main__":`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CALL = ('summary = index_folder({folder!r}, index={index!r}, workers=2, model="hashing-tiny")\n'
        'print(json.dumps({{"indexed": summary.indexed, "warnings": summary.warnings}}))\n')


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    studies = tmp_path / "studies"
    studies.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(studies / f"{i}.png")
    return studies


def _run(script: Path) -> dict:
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_unguarded_script_indexes_in_process(folder: Path, tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text("import json\nfrom radsearch.indexer import index_folder\n"
                      + CALL.format(folder=str(folder), index=str(tmp_path / "index")))
    summary = _run(script)
    assert summary["indexed"] == 3
    assert any("without `if __name__" in warning for warning in summary["warnings"])


def test_a_guarded_script_uses_its_workers(folder: Path, tmp_path: Path) -> None:
    script = tmp_path / "guarded.py"
    body = CALL.format(folder=str(folder), index=str(tmp_path / "index"))
    script.write_text("import json\nfrom radsearch.indexer import index_folder\n\n"
                      "if __name__ == '__main__':\n" + "".join(f"    {line}\n"
                                                                for line in body.splitlines()))
    summary = _run(script)
    assert summary == {"indexed": 3, "warnings": []}
