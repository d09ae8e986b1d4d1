"""`radsearch train slice-pooling` on a tiny synthetic volume set: a radclip-mini weights file with
the trained pooling comes out, and the encoder pools series with it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nifti_helpers import dicom_series
from typer.testing import CliRunner

from radsearch.cli import app
from radsearch.encoders import create_model
from radsearch.encoders.slice_pooling import mean_pool
from radsearch.encoders.weights import load_weights

REPORTS = ["liver lesion", "pleural effusion", "brain mass", "kidney stone", "bowel obstruction",
           "normal study"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: a second intra-op thread only adds contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _volumes(root: Path) -> Path:
    """Six NIfTI volumes of 3-5 slices (a bright block moving through the slices, placed per
    volume) with one report each, four train and two dev; a real 3-slice DICOM series as a folder;
    and a single-slice volume, which is not a volume to pool."""
    rows = ["image,text,split"]
    for i, report in enumerate(REPORTS):
        slices = 3 + i % 3
        data = np.zeros((32, 32, slices), dtype=np.int16)
        for z in range(slices):
            data[4 + 3 * i : 12 + 3 * i, 4 + 4 * z : 10 + 4 * z, z] = 400 + 50 * z
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.5 + i, 1.0])), root / f"v{i}.nii.gz")
        rows.append(f"v{i}.nii.gz,{report},{'dev' if i >= 4 else 'train'}")
    (root / "series").mkdir()
    dicom_series(root / "series", "axial")
    rows.append("series,small hepatic cyst,train")
    nib.save(nib.Nifti1Image(np.ones((32, 32, 1), dtype=np.int16), np.eye(4)), root / "flat.nii.gz")
    rows.append("flat.nii.gz,one slice only,train")
    (root / "volumes.csv").write_text("\n".join(rows) + "\n")
    return root / "volumes.csv"


def test_train_slice_pooling_writes_weights_the_encoder_pools_with(tmp_path: Path) -> None:
    manifest = _volumes(tmp_path)
    out = tmp_path / "run" / "radclip-mini.safetensors"
    result = CliRunner().invoke(app, [
        "train", "slice-pooling", "--manifest", str(manifest), "--out", str(out), "--heads", "4",
        "--epochs", "3", "--batch-size", "4", "--lr", "0.01", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["weights"] == str(out)
    assert (summary["train_volumes"], summary["dev_volumes"]) == (5, 2)  # the 1-slice row skipped
    assert len(summary["losses"]) == 3 and all(np.isfinite(summary["losses"]))
    assert set(summary["dev"]) == {"pooling", "mean"} and summary["dev"]["mean"]["n"] == 2

    # The shipped towers and projections, with a trained pooling of 4 heads added.
    trained, shipped = load_weights(out), load_weights()
    for name, matrix in shipped.projections.items():
        np.testing.assert_array_equal(trained.projections[name], matrix)
    assert trained.image_tower.keys() == shipped.image_tower.keys()
    assert trained.slice_pooling["query"].shape == (4, 128)
    encoder = create_model("radclip-mini", pretrained=str(out))
    assert encoder.weights_hash() != create_model().weights_hash()
    rng = np.random.default_rng(0)
    slices = rng.normal(size=(6, 512)).astype(np.float32)
    slices /= np.linalg.norm(slices, axis=1, keepdims=True)
    pooled = encoder.pool_slices(slices, np.arange(6) * 2.5)
    assert np.isclose(np.linalg.norm(pooled), 1.0, atol=1e-5)
    assert not np.allclose(pooled, mean_pool(slices), atol=1e-3)  # it learned: not the mean any more

    # Trained again from that file: its pooling is replaced, not added to.
    again = tmp_path / "again.safetensors"
    result = CliRunner().invoke(app, [
        "train", "slice-pooling", "--manifest", str(manifest), "--out", str(again),
        "--weights", str(out), "--heads", "8", "--epochs", "1", "--batch-size", "4",
    ])
    assert result.exit_code == 0, result.output
    assert "dev pooling" in result.stdout and "dev mean" in result.stdout
    assert load_weights(again).slice_pooling["query"].shape == (8, 64)


def test_an_unreadable_volume_is_named_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    manifest = _volumes(tmp_path)
    (tmp_path / "v2.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["train", "slice-pooling", "--manifest", str(manifest),
                                      "--out", str(out)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert message.startswith(str(tmp_path / "v2.nii.gz")) and "\n" not in message
    assert not out.exists()
