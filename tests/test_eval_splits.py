"""A manifest without a split column is evaluated whole, by every `radsearch eval`; one with
splits is evaluated on the split asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from radsearch.cli import app

runner = CliRunner()


def _manifest(folder: Path, with_split: bool) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image_path,text,modality" + (",split" if with_split else "")]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
        modality = "CT" if i % 2 else "MRI"
        lines.append(f"{i}.png,{modality} image number {i}.,{modality}" + (",train" if with_split else ""))
    manifest = folder / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_a_manifest_without_splits_is_evaluated_whole_by_every_eval(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data", with_split=False)
    result = runner.invoke(app, ["eval", "retrieval", "--manifest", str(manifest), "--split",
                                 "test", "--model", "hashing-tiny", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 6
    result = runner.invoke(app, ["eval", "zeroshot", "--manifest", str(manifest), "--label-column",
                                 "modality", "--split", "test", "--model", "hashing-tiny", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 6


def test_a_manifest_with_splits_still_needs_rows_of_the_split(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "data", with_split=True)
    result = runner.invoke(app, ["eval", "retrieval", "--manifest", str(manifest), "--split",
                                 "test", "--model", "hashing-tiny"])
    assert result.exit_code != 0 and "no rows with split 'test'" in str(result.exception)
