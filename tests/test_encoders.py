"""The encoder layer: registry, the hashing-tiny test model and the real radclip-mini towers."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radsearch.encoders import DEFAULT_MODEL, Encoder, create_model, list_models, register_model
from radsearch.encoders import _registry
from radsearch.encoders._radclip_weights import (
    IMAGE_PROJECTION,
    TEXT_PROJECTION,
    initial_projections,
)
from radsearch.encoders.hashing_tiny import HashingTiny

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Recorded once: the untrained projections and hashing-tiny must give these bytes on every machine.
PROJECTION_SHA256 = {
    IMAGE_PROJECTION: "4a72bf80e6a78c7ad7c482ac80cd1f5a425ca56d1e05656703cf9b9695be90d3",
    TEXT_PROJECTION: "b8b13e912353b394a2d94fa0c0c2298559d9d664c526802f391facca35432126",
}
TINY_WEIGHTS_HASH = "8bc35883018c461d9516195c2b43b26d341641a3b810bbdb2e928dba69c56ec4"


def _unit_rows(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5))


def radclip_weights_path() -> Path:
    from radsearch.encoders._efficientnet import weights_path

    return weights_path()


# --- registry ---------------------------------------------------------------------------------


def test_list_models_has_both_and_marks_the_default() -> None:
    models = {m.name: m for m in list_models()}
    assert {"radclip-mini", "hashing-tiny"} <= set(models)
    assert DEFAULT_MODEL == "radclip-mini"
    assert [m.name for m in models.values() if m.default] == ["radclip-mini"]
    assert models["radclip-mini"].dim == 512
    assert models["hashing-tiny"].dim == 64
    assert all(m.description for m in models.values())


def test_unknown_model_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'; available: .*hashing-tiny.*radclip-mini"):
        create_model("nope")


def test_instances_are_cached_per_name_and_device() -> None:
    tiny = create_model("hashing-tiny")
    assert create_model("hashing-tiny", device="cpu") is tiny
    assert create_model("hashing-tiny", device="meta") is not tiny


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_ENTRIES", dict(_registry._ENTRIES))
    monkeypatch.setattr(_registry, "_INSTANCES", {})


@pytest.mark.usefixtures("scratch_registry")
def test_register_model_as_decorator_and_call() -> None:
    @register_model("tiny-a", dim=64, description="decorated")
    def make_a(device: str) -> Encoder:
        return HashingTiny()

    register_model("tiny-b", lambda device: HashingTiny(), dim=64, description="called")
    assert isinstance(create_model("tiny-a"), HashingTiny)
    assert isinstance(create_model("tiny-b"), HashingTiny)
    assert make_a("cpu").dim == 64  # the decorator hands the factory back unchanged
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny-a", make_a, dim=64, description="again")


@pytest.mark.usefixtures("scratch_registry")
def test_a_factory_with_the_wrong_dim_is_refused() -> None:
    register_model("liar", lambda device: HashingTiny(), dim=128, description="claims 128")
    with pytest.raises(RuntimeError, match="dim 64, registered 128"):
        create_model("liar")


def test_importing_the_package_loads_no_deep_learning_stack() -> None:
    code = (
        "import sys, radsearch.encoders as e; e.list_models(); "
        "print(sorted(m for m in ('torch', 'timm', 'sentence_transformers') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "[]"


# --- hashing-tiny -----------------------------------------------------------------------------


def _tiny_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)


def test_tiny_shapes_norms_and_description() -> None:
    tiny = create_model("hashing-tiny")
    images = tiny.encode_images(_tiny_images(5, 0))
    texts = tiny.encode_texts(["right lower lobe consolidation", "no acute findings", ""])
    for vectors, n in ((images, 5), (texts, 3)):
        assert vectors.shape == (n, 64) and vectors.dtype == np.float32
        assert _unit_rows(vectors)
    assert tiny.encode_texts([]).shape == (0, 64)
    assert tiny.encode_images(np.zeros((0, 64, 64), np.uint8)).shape == (0, 64)
    description = tiny.describe()
    assert set(description) == {"name", "dim", "weights_hash", "preprocessing"}
    assert description["preprocessing"]["image_size"] == 64
    json.dumps(description)


def test_tiny_is_deterministic_across_instances_and_machines() -> None:
    a, b = HashingTiny(), create_model("hashing-tiny")
    images = _tiny_images(4, 1)
    texts = ["Pleural effusion, left.", "pleural effusion left"]
    np.testing.assert_array_equal(a.encode_images(images), b.encode_images(images))
    np.testing.assert_array_equal(a.encode_texts(texts), b.encode_texts(texts))
    # Case and punctuation do not matter; everything is derived from hashlib, so these are fixed.
    np.testing.assert_array_equal(a.encode_texts(texts)[0], a.encode_texts(texts)[1])
    assert a.weights_hash() == TINY_WEIGHTS_HASH


def test_tiny_similar_inputs_get_similar_vectors() -> None:
    tiny = HashingTiny()
    base = _tiny_images(1, 2)[0]
    rng = np.random.default_rng(3)
    noisy = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
    other = _tiny_images(1, 4)[0]
    v = tiny.encode_images(np.stack([base, base, noisy, other]))
    np.testing.assert_array_equal(v[0], v[1])
    assert v[0] @ v[2] > 0.9 > v[0] @ v[3]

    t = tiny.encode_texts(["left pleural effusion", "small left pleural effusion", "fractured femur"])
    assert t[0] @ t[1] > 0.5 and t[0] @ t[1] > t[0] @ t[2]


def test_tiny_inputs_without_signal_still_give_unit_vectors() -> None:
    tiny = HashingTiny()
    flat = np.stack([np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8)])
    assert _unit_rows(tiny.encode_images(flat))
    assert _unit_rows(tiny.encode_texts(["", "?!"]))


def test_wrong_image_input_is_refused() -> None:
    tiny = HashingTiny()
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 64, 64\)"):
        tiny.encode_images(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode_images(np.zeros((2, 64, 64), np.float32))


# --- radclip-mini -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def radclip():
    return create_model("radclip-mini")


@pytest.fixture(scope="module")
def untrained():
    """The composite before training: pretrained towers as installed, orthogonal projections."""
    return create_model("radclip-mini-untrained")


def test_efficientnet_weights_are_really_loaded(untrained) -> None:
    # The untrained composite: the shipped file may tune the last stage and head (image-tail).
    import torch

    from radsearch.encoders import _efficientnet

    source = torch.load(_efficientnet.weights_path(), map_location="cpu", weights_only=True)
    tower = untrained.image_tower.state_dict()
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_bn1.running_var": "bn2.running_var",
    }
    for source_name, tower_name in pairs.items():
        torch.testing.assert_close(tower[tower_name].cpu(), source[source_name], rtol=0, atol=0)
    assert not any(name.startswith("classifier.") for name in tower)  # num_classes=0: pooled features
    assert not untrained.image_tower.training


def test_state_dict_mapping_refuses_mismatches(untrained) -> None:
    import torch

    from radsearch.encoders._efficientnet import map_state_dict

    source = torch.load(radclip_weights_path(), map_location="cpu", weights_only=True)  # Lite0's
    target = untrained.image_tower.state_dict()  # the Lite0 composite's tower
    assert len(source) == 296 and len(target) == 294
    assert list(map_state_dict(source, target)) == list(target)

    shorter = dict(list(source.items())[1:])
    with pytest.raises(RuntimeError, match="expected 296"):
        map_state_dict(shorter, target)
    items = list(source.items())
    items[1], items[2] = items[2], items[1]  # bn weight <-> bias: same shape, wrong kind
    with pytest.raises(RuntimeError, match="does not map onto"):
        map_state_dict(dict(items), target)


def test_image_tower_classifies_a_natural_photo_with_its_normalisation() -> None:
    """End-to-end check of the mapping, architecture and mean/std with the full ImageNet head."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import timm
    import torch
    from PIL import Image

    from radsearch.encoders import _efficientnet

    model = timm.create_model(_efficientnet.ARCH, pretrained=False).eval()
    source = torch.load(radclip_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(_efficientnet.map_state_dict(source, model.state_dict()))
    photo = Image.fromarray(sklearn_datasets.load_sample_image("flower.jpg"))
    scale = 256 / min(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    left, top = (photo.width - 224) // 2, (photo.height - 224) // 2
    pixels = np.asarray(photo.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    x = (pixels - np.array(_efficientnet.MEAN, np.float32)) / np.array(_efficientnet.STD, np.float32)
    with torch.inference_mode():
        probs = model(torch.from_numpy(x).permute(2, 0, 1)[None]).softmax(-1)[0]
    assert int(probs.argmax()) == 985  # ImageNet "daisy"


def test_radclip_shapes_and_unit_norms(radclip) -> None:
    size = radclip.image_size  # the shipped file's backbone: Lite1, 240 px
    assert size == 240
    images = np.random.default_rng(0).integers(0, 256, (3, size, size), dtype=np.uint8)
    image_vectors = radclip.encode_images(images)
    text_vectors = radclip.encode_texts(["pleural effusion", "normal chest radiograph"])
    assert image_vectors.shape == (3, 512) and image_vectors.dtype == np.float32
    assert text_vectors.shape == (2, 512) and text_vectors.dtype == np.float32
    assert _unit_rows(image_vectors) and _unit_rows(text_vectors)
    assert radclip.encode_texts([]).shape == (0, 512)
    assert radclip.encode_images(np.zeros((0, size, size), np.uint8)).shape == (0, 512)
    with pytest.raises(ValueError, match="240"):
        radclip.encode_images(np.zeros((1, 64, 64), np.uint8))


def test_radclip_description_records_the_preprocessing(radclip) -> None:
    description = radclip.describe()
    json.dumps(description)
    assert description["name"] == "radclip-mini" and description["dim"] == 512
    pre = description["preprocessing"]
    assert pre["image_size"] == 240 and pre["channels"] == 3 and pre["dtype"] == "uint8"
    assert pre["mean"] == [127 / 255] * 3 and pre["std"] == [128 / 255] * 3
    assert pre["resize"] == "longest side, centred zero padding"
    assert len(description["weights_hash"]) == 64


def test_radclip_is_deterministic_across_separately_built_instances(radclip) -> None:
    from radsearch.encoders.radclip_mini import RadClipMini

    other = RadClipMini("cpu")
    assert other is not radclip
    assert other.weights_hash() == radclip.weights_hash()
    size = radclip.image_size
    images = np.random.default_rng(1).integers(0, 256, (2, size, size), dtype=np.uint8)
    texts = ["consolidation in the right lower lobe", "no acute intracranial abnormality"]
    np.testing.assert_allclose(other.encode_images(images), radclip.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(other.encode_texts(texts), radclip.encode_texts(texts), atol=1e-6)


def test_initial_projections_are_fixed_and_orthogonal() -> None:
    first, second = initial_projections(), initial_projections()
    for name, expected in PROJECTION_SHA256.items():
        np.testing.assert_array_equal(first[name], second[name])
        assert hashlib.sha256(first[name].tobytes()).hexdigest() == expected
    text = first[TEXT_PROJECTION].astype(np.float64)  # (512, 384): orthonormal columns, an isometry
    image = first[IMAGE_PROJECTION].astype(np.float64)  # (512, 1280): orthonormal rows
    np.testing.assert_allclose(text.T @ text, np.eye(384), atol=1e-4)
    np.testing.assert_allclose(image @ image.T, np.eye(512), atol=1e-4)


def test_text_tower_semantics_survive_the_projection(untrained) -> None:
    texts = ["pleural effusion", "fluid in the pleural space", "fractured femur"]
    raw = untrained.text_features(texts)
    projected = untrained.encode_texts(texts)
    assert raw.shape == (3, 384)
    assert raw[0] @ raw[1] > raw[0] @ raw[2] + 0.2
    # The text projection is an isometry, so cosines are the same in the shared space.
    np.testing.assert_allclose(projected @ projected.T, raw @ raw.T, atol=1e-4)


def _square(path: Path, size: int) -> np.ndarray:
    """What the reader hands an encoder: longest side resized, centred on black."""
    from PIL import Image

    image = Image.open(path).convert("L")
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    square = Image.new("L", (size, size))
    square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return np.asarray(square)


@pytest.fixture(scope="module")
def vqa_rad_by_region(radclip) -> dict[str, list[np.ndarray]]:
    root = SHARED_DATA / "vqa_rad"
    if not root.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    by_region: dict[str, list[np.ndarray]] = {}
    with open(root / "manifest_per_image.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            images = by_region.setdefault(row["label"], [])
            if len(images) < 5:
                images.append(_square(root / row["image_path"], radclip.image_size))
    return by_region


def test_radclip_near_identical_images_are_closer_than_different_ones(radclip, vqa_rad_by_region) -> None:
    chest, head = vqa_rad_by_region["CHEST"][0], vqa_rad_by_region["HEAD"][0]
    # Slightly repositioned and brighter: what a re-acquisition or another export looks like.
    near = np.clip(np.roll(chest, 2, axis=1).astype(int) + 5, 0, 255).astype(np.uint8)
    v = radclip.encode_images(np.stack([chest, near, head]))
    assert v[0] @ v[1] > 0.9
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_radclip_chest_radiographs_cluster_together(radclip, vqa_rad_by_region) -> None:
    regions = ["CHEST", "HEAD", "ABD"]
    vectors = {r: radclip.encode_images(np.stack(vqa_rad_by_region[r])) for r in regions}
    chest = vectors["CHEST"]
    within = (chest @ chest.T)[np.triu_indices(len(chest), 1)].mean()
    for other in ("HEAD", "ABD"):
        assert within > (chest @ vectors[other].T).mean() + 0.2


def test_a_weights_file_replaces_projections_and_tower_tensors(tmp_path: Path, untrained) -> None:
    import torch
    from safetensors.torch import save_file

    from radsearch.encoders.radclip_mini import RadClipMini

    text_projection = torch.zeros(512, 384)
    text_projection[:384] = torch.eye(384)  # pads the 384-d text embedding with zeros
    path = tmp_path / "radclip-mini.safetensors"
    save_file(
        {
            IMAGE_PROJECTION: torch.from_numpy(initial_projections()[IMAGE_PROJECTION]),
            TEXT_PROJECTION: text_projection,
            "image_tower.bn2.bias": torch.full((1280,), 0.25),
        },
        str(path),
    )
    trained = RadClipMini("cpu", weights_file=path)
    assert trained.weights_hash() != untrained.weights_hash()
    texts = ["pleural effusion", "fractured femur"]
    vectors = trained.encode_texts(texts)
    np.testing.assert_allclose(vectors[:, :384], untrained.text_features(texts), atol=1e-5)
    assert not vectors[:, 384:].any()
    assert torch.equal(trained.image_tower.bn2.bias.cpu(), torch.full((1280,), 0.25))


def test_a_malformed_weights_file_is_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from radsearch.encoders.radclip_mini import RadClipMini

    missing = tmp_path / "missing.safetensors"
    save_file({IMAGE_PROJECTION: torch.zeros(512, 1280)}, str(missing))
    with pytest.raises(ValueError, match="text_projection.weight must have shape"):
        RadClipMini("cpu", weights_file=missing)
    stray = tmp_path / "stray.safetensors"
    projections = {k: torch.from_numpy(v) for k, v in initial_projections().items()}
    save_file({**projections, "decoder.weight": torch.zeros(3)}, str(stray))
    with pytest.raises(ValueError, match="unexpected tensor 'decoder.weight'"):
        RadClipMini("cpu", weights_file=stray)
