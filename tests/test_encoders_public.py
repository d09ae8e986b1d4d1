"""The encoders' public training surface: the weights file format, the tower builders, and
``create_model("radclip-mini", pretrained=file)``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from radsearch.encoders import (
    ModelLoadError,
    UnknownModelError,
    build_image_tower,
    build_text_tower,
    create_model,
    parse_model_name,
)
from radsearch.encoders.weights import (
    IMAGE_PROJECTION,
    LOGIT_SCALE,
    TEXT_PROJECTION,
    WEIGHTS_FILE,
    initial_weights,
    load_weights,
    save_weights,
    weights_tensors,
)


def _stored_dtypes(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return {name: str(handle.get_slice(name).get_dtype()) for name in handle.keys()}


def test_the_shipped_file_saved_again_is_the_same_model(tmp_path: Path) -> None:
    """Reading and writing the format loses nothing: the weights hash (which asks indexes to be
    rebuilt when it changes) stays the shipped model's."""
    shipped = load_weights()
    copy = save_weights(weights_tensors(shipped), tmp_path / "copy.safetensors", backbone=shipped.backbone)
    assert create_model("radclip-mini", pretrained=str(copy)).weights_hash() == create_model().weights_hash()
    assert _stored_dtypes(copy) == _stored_dtypes(WEIGHTS_FILE)
    assert os.stat(copy).st_mode & 0o777 == 0o644


def test_save_weights_stores_float16_but_the_scale_and_refuses_a_malformed_set(tmp_path: Path) -> None:
    tensors = {**weights_tensors(initial_weights()), LOGIT_SCALE: torch.tensor([2.5]),
               "slice_pooling.query": torch.ones(8, 64, dtype=torch.float64)}
    path = save_weights(tensors, tmp_path / "w.safetensors", {"recipe": "projections"})
    stored = _stored_dtypes(path)
    assert stored[IMAGE_PROJECTION] == stored[TEXT_PROJECTION] == "F16"
    assert stored[LOGIT_SCALE] == stored["slice_pooling.query"] == "F32"
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"recipe": "projections", "image_backbone": "efficientnet-lite0"}
    weights = load_weights(path)
    assert weights.logit_scale == 2.5
    np.testing.assert_array_equal(weights.projections[TEXT_PROJECTION],
                                  initial_weights().projections[TEXT_PROJECTION].astype(np.float16))

    before = path.read_bytes()
    malformed = {IMAGE_PROJECTION: tensors[IMAGE_PROJECTION]}
    with pytest.raises(ValueError, match=rf"{path}: text_projection.weight must have shape"):
        save_weights(malformed, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_a_weights_file_folds_into_the_model_name_and_loads_again_when_it_changes(tmp_path: Path) -> None:
    path = save_weights(weights_tensors(initial_weights()), tmp_path / "w.safetensors")
    spec = parse_model_name("radclip-mini", pretrained=str(path))
    assert spec.name == f"radclip-mini@{path}" and parse_model_name(spec.name) == spec
    first = create_model(spec.name)
    assert first is create_model("radclip-mini", pretrained=str(path))
    # Named by its file, so an index built with it reopens it (not the shipped file).
    assert first.name == spec.name and first.weights_hash() != create_model().weights_hash()
    changed = weights_tensors(initial_weights())
    changed[TEXT_PROJECTION] = -changed[TEXT_PROJECTION]
    save_weights(changed, path)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    second = create_model(spec.name)
    assert second is not first and second.weights_hash() != first.weights_hash()


@pytest.mark.parametrize(
    ("name", "pretrained", "error", "message"),
    [
        ("radclip-mini", "absent.safetensors", ModelLoadError, r"radclip-mini@/.*absent.safetensors: no such"),
        ("radclip-mini@/x.safetensors", "/y.safetensors", UnknownModelError, "pretrained= does not apply"),
        ("hashing-tiny", "w.safetensors", UnknownModelError, "hashing-tiny reads no weights file"),
        ("radclip-mini@", None, UnknownModelError, "radclip-mini@ needs a weights file after '@'"),
    ],
)
def test_weights_files_are_refused_in_one_line(name, pretrained, error, message, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as caught:
        create_model(name, pretrained=pretrained)
    assert "\n" not in str(caught.value)


def test_a_file_in_another_format_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=rf"radclip-mini@{path}: "):
        create_model("radclip-mini", pretrained=str(path))


def test_the_tower_builders_are_the_towers_the_encoder_runs() -> None:
    from radsearch.encoders import towers

    shipped = load_weights()
    encoder = create_model()
    rng = np.random.default_rng(0)
    size = towers.image_size(shipped.backbone)
    images = rng.integers(0, 256, size=(2, size, size), dtype=np.uint8)
    tower = build_image_tower("cpu", shipped.image_tower, shipped.backbone)
    mean = torch.tensor(towers.IMAGE_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(towers.IMAGE_STD).view(1, 3, 1, 1) * 255
    rgb = torch.from_numpy(images).unsqueeze(1).expand(-1, 3, -1, -1).float()
    with torch.inference_mode():
        features = tower(((rgb - mean) / std).contiguous(memory_format=torch.channels_last)).numpy()
    assert features.shape == (2, towers.IMAGE_FEATURE_DIM)
    np.testing.assert_allclose(features, encoder.image_features(images), atol=1e-5)

    texts = ["small left pleural effusion", "normal chest"]
    sentences = build_text_tower("cpu", shipped.text_tower).encode(texts, convert_to_numpy=True)
    assert sentences.shape == (2, towers.TEXT_FEATURE_DIM)
    np.testing.assert_allclose(sentences, encoder.text_features(texts), atol=1e-5)
