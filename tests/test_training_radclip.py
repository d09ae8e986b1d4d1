"""radclip-mini training end to end on the bundled sample images: the exported weights file makes
the encoder reproduce the trained model, and the `train clip` / `eval retrieval` commands work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from radsearch.cli import app
from radsearch.encoders import create_model
from radsearch.encoders.weights import LOGIT_SCALE, load_weights
from radsearch.training.images import read_images
from radsearch.training.manifest import read_manifest
from radsearch.training.radclip import RECIPES, customise, export_weights, prepare
from radsearch.training.train import TrainConfig, embed_pairs, train

SAMPLES = Path(__file__).resolve().parents[1] / "radsearch" / "sample_studies" / "images"


def _write_manifest(root: Path, count: int) -> Path:
    """The first ``count`` sample images with their reports, every third one in dev."""
    (root / "images").mkdir(parents=True)
    lines = ["image,text,split,group"]
    for i, image in enumerate(sorted(SAMPLES.glob("*.jpg"))[:count]):
        shutil.copy(image, root / "images" / image.name)
        text = " ".join(image.with_suffix(".txt").read_text().split()).replace('"', "'")
        lines.append(f'images/{image.name},"{text}",{"dev" if i % 3 == 2 else "train"},{image.stem}')
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def test_exported_tuned_towers_reproduce_the_trained_model(tmp_path):
    manifest = _write_manifest(tmp_path / "data", 6)
    # Both towers partly unlocked: the image tower's last stage and head, the last text layer.
    recipe = customise(RECIPES["text-tail"], text_layers=1, image_blocks=1)
    prepared = prepare(recipe, [manifest], device="cpu", cache_dir=tmp_path / "cache", seed=0)
    # The locked front runs once per view, through the cache: the last stage sees its activations.
    assert prepared.train.image_features.shape == (3, 4, 192, 7, 7)
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, tower_lr=1e-3)
    train(prepared.model, prepared.train, prepared.dev, config, tmp_path / "run")
    weights = export_weights(prepared.model, tmp_path / "radclip-mini.safetensors")

    tensors = load_file(str(weights))
    text = [name for name in tensors if name.startswith("text_tower.")]
    image = [name for name in tensors if name.startswith("image_tower.")]
    # Only what learned is stored: one text layer; the last stage and head, no BatchNorm statistics.
    assert text and all(".layer.5." in name for name in text)
    assert image and all(name.split(".")[1] in ("blocks", "conv_head", "bn2") for name in image)
    assert all("blocks.6." in name for name in image if ".blocks." in name)
    assert not any("running_" in name for name in image)
    assert load_weights(weights).logit_scale == pytest.approx(float(prepared.model.logit_scale.detach()))

    encoder = create_model("radclip-mini", pretrained=str(weights))
    dev = prepared.dev["pairs"]
    images, texts = embed_pairs(prepared.model, dev, config)
    # float16 storage: agreement to about 1e-3 in cosine.
    frames = read_images([p.image for p in read_manifest(manifest) if p.split == "dev"], 224)
    assert np.abs(encoder.encode_images(frames) - images).max() < 5e-3
    assert np.abs(encoder.encode_texts(list(dev.texts)) - texts).max() < 5e-3


def test_train_and_eval_commands(tmp_path):
    manifest = _write_manifest(tmp_path / "data", 12)  # 8 train, 4 dev
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "clip", "--manifest", str(manifest), "--out", str(out), "--epochs", "2",
        "--batch-size", "4", "--views", "1", "--cache", str(tmp_path / "cache"), "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["recipe"] == "projections" and summary["train_pairs"] == 8
    assert summary["dev"]["pairs"]["n"] == 4
    weights = Path(summary["weights"])
    assert weights == out / "radclip-mini.safetensors" and LOGIT_SCALE in load_file(str(weights))

    result = runner.invoke(app, [
        "eval", "retrieval", "--manifest", str(manifest), "--split", "dev",
        "--weights", str(weights), "--json",
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 4
    for direction in ("image_to_text", "text_to_image"):
        assert set(metrics[direction]) == {"R@1", "R@5", "R@10", "median_rank"}
        assert metrics[direction]["R@5"] == 1.0  # 4 candidates

    result = runner.invoke(app, ["eval", "retrieval", "--manifest", str(manifest), "--split", "test"])
    assert result.exit_code != 0 and "no rows with split 'test'" in str(result.exception)
    result = runner.invoke(app, ["train", "clip", "--manifest", str(manifest), "--out",
                                    str(tmp_path / "x"), "--recipe", "nope"])
    assert result.exit_code != 0 and "unknown recipe" in str(result.exception)
    result = runner.invoke(app, ["train", "clip", "--manifest", str(manifest), "--out",
                                    str(tmp_path / "x"), "--backbone", "resnet50"])
    assert result.exit_code != 0 and "unknown backbone 'resnet50'; available: efficientnet-lite0" \
        in str(result.exception)


def test_the_shipped_model_retrieves_far_above_chance(shared_data, tmp_path):
    """A guard on the shipped weights, on medpix2 dev (test is for the model card only)."""
    from radsearch.encoders.weights import WEIGHTS_FILE
    from radsearch.training.build_manifests import build_manifests
    from radsearch.training.evaluate import evaluate_retrieval
    from radsearch.training.manifest import read_manifest, select_split

    assert WEIGHTS_FILE.is_file()
    pairs = select_split(read_manifest(build_manifests(shared_data, tmp_path)["medpix2"]), "dev")[:40]
    metrics = evaluate_retrieval(create_model(), pairs)
    # Chance on 40 pairs: R@10 = 0.25, median rank 20.5. Measured: R@10 0.70 / 0.75, median 6.25 / 6.5.
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[direction]["R@10"] >= 0.5
        assert metrics[direction]["median_rank"] <= 10


def test_a_larger_backbone_trains_at_its_size_and_its_file_runs_on_it(tmp_path):
    """Lite1's image tail trained from its 240 px trunk cache; the exported file records Lite1,
    so the encoder runs it on Lite1 at 240 px and reproduces the trained model."""
    manifest = _write_manifest(tmp_path / "data", 6)
    recipe = customise(RECIPES["image-tail"], views=1, backbone="efficientnet-lite1")
    prepared = prepare(recipe, [manifest], device="cpu", cache_dir=tmp_path / "cache", seed=0)
    assert prepared.train.image_features.shape == (1, 4, 192, 8, 8)  # 240 px / 32 - rounded up
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, tower_lr=1e-3)
    train(prepared.model, prepared.train, prepared.dev, config, tmp_path / "run")
    weights = export_weights(prepared.model, tmp_path / "w.safetensors", backbone=recipe.backbone)
    assert load_weights(weights).backbone == "efficientnet-lite1"

    encoder = create_model("radclip-mini", pretrained=str(weights))
    assert encoder.image_size == 240
    images, _ = embed_pairs(prepared.model, prepared.dev["pairs"], config)
    frames = read_images([p.image for p in read_manifest(manifest) if p.split == "dev"], 240)
    assert np.abs(encoder.encode_images(frames) - images).max() < 5e-3
