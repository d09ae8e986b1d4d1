"""radclip-mini's image backbones: EfficientNet-Lite0 (default), Lite1 (shipped) and Lite2 from their pip
packages, mapped onto timm, and weights files that record which one they were trained on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from radsearch.encoders import ModelLoadError, create_model
from radsearch.encoders import _efficientnet
from radsearch.encoders.radclip_mini import RadClipMini
from radsearch.encoders.towers import IMAGE_BACKBONES, image_size
from radsearch.encoders.weights import (
    BACKBONE_KEY,
    WEIGHTS_FILE,
    initial_weights,
    load_weights,
    save_weights,
    weights_tensors,
)

LARGER = ["efficientnet-lite1", "efficientnet-lite2"]


def _require(name: str) -> _efficientnet.Backbone:
    chosen = _efficientnet.backbone(name)
    if importlib.util.find_spec(chosen.distribution.replace("-", "_")) is None:
        pytest.skip(f"{chosen.distribution} is not installed (pip install 'radsearch[backbones]')")
    return chosen


def test_the_backbones_and_their_native_sizes() -> None:
    assert IMAGE_BACKBONES == ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
    assert [image_size(name) for name in IMAGE_BACKBONES] == [224, 240, 260]
    with pytest.raises(ValueError, match="unknown image backbone 'lite9'; available: efficientnet-lite0"):
        image_size("lite9")


@pytest.mark.parametrize("name", LARGER)
def test_every_tensor_maps_in_order_with_its_shape_and_kind(name: str) -> None:
    import timm

    chosen = _require(name)
    source = torch.load(chosen.weights_path(), map_location="cpu", weights_only=True)
    pooled = timm.create_model(chosen.arch, pretrained=False, num_classes=0).state_dict()
    assert len(source) == chosen.source_tensors == len(pooled) + 2  # + the classifier
    mapped = _efficientnet.map_state_dict(source, pooled, chosen)
    assert list(mapped) == list(pooled)
    assert all(mapped[name].shape == pooled[name].shape for name in pooled)
    torch.testing.assert_close(mapped["conv_stem.weight"], source["_conv_stem.weight"], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=f"expected {chosen.source_tensors} {name} tensors"):
        _efficientnet.map_state_dict(dict(list(source.items())[1:]), pooled, chosen)


@pytest.mark.parametrize("name", LARGER)
def test_the_mapped_backbone_recognises_a_photo_at_its_native_size(name: str) -> None:
    """End to end: mapping, architecture and normalisation, with the full ImageNet head on the
    palace photo scikit-learn ships (its flower photo is "daisy" for Lite0, but a close call
    with "honeycomb" for these two, whose crops of it are dominated by the flower's centre)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import timm
    from PIL import Image

    chosen = _require(name)
    model = timm.create_model(chosen.arch, pretrained=False).eval()
    source = torch.load(chosen.weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(_efficientnet.map_state_dict(source, model.state_dict(), chosen))
    size = chosen.image_size
    photo = Image.fromarray(sklearn_datasets.load_sample_image("china.jpg"))
    scale = size / 0.875 / min(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    left, top = (photo.width - size) // 2, (photo.height - size) // 2
    pixels = np.asarray(photo.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    x = (pixels - np.array(_efficientnet.MEAN, np.float32)) / np.array(_efficientnet.STD, np.float32)
    with torch.inference_mode():
        probs = model(torch.from_numpy(x).permute(2, 0, 1)[None]).softmax(-1)[0]
    assert int(probs.argmax()) == 698 and float(probs[698]) > 0.3  # ImageNet "palace"


def _stored_backbone(path: Path) -> str | None:
    with safe_open(str(path), "pt") as handle:
        return (handle.metadata() or {}).get(BACKBONE_KEY)


def test_a_weights_file_records_its_backbone_and_is_refused_by_another(tmp_path: Path) -> None:
    tensors = weights_tensors(initial_weights())
    lite1 = save_weights(tensors, tmp_path / "lite1.safetensors", {"recipe": "x"},
                         backbone="efficientnet-lite1")
    assert _stored_backbone(lite1) == "efficientnet-lite1"
    assert load_weights(lite1).backbone == "efficientnet-lite1"
    with pytest.raises(ValueError, match="lite1.safetensors was trained on efficientnet-lite1, "
                                         "not efficientnet-lite0"):
        load_weights(lite1, "efficientnet-lite0")
    with pytest.raises(ValueError, match="was trained on efficientnet-lite1, not efficientnet-lite2"):
        RadClipMini(weights_file=lite1, backbone="efficientnet-lite2")

    lite0 = save_weights(tensors, tmp_path / "lite0.safetensors")
    assert _stored_backbone(lite0) == "efficientnet-lite0"
    with pytest.raises(ValueError, match="trained on efficientnet-lite0, not efficientnet-lite1"):
        load_weights(lite0, "efficientnet-lite1")
    # A file without the key (those shipped before it existed) is Lite0's; the shipped one is Lite1's.
    with safe_open(str(lite0), "pt") as handle:
        save_file({k: handle.get_tensor(k) for k in handle.keys()}, str(tmp_path / "bare.safetensors"))
    assert _stored_backbone(tmp_path / "bare.safetensors") is None
    assert load_weights(tmp_path / "bare.safetensors").backbone == "efficientnet-lite0"
    assert load_weights().backbone == "efficientnet-lite1"

    with pytest.raises(ValueError, match=r"image backbone 'resnet50' is not one of efficientnet-lite0"):
        save_weights(tensors, tmp_path / "other.safetensors", backbone="resnet50")
    assert not (tmp_path / "other.safetensors").exists()


def test_the_model_runs_a_file_on_the_backbone_it_records(tmp_path: Path) -> None:
    _require("efficientnet-lite1")
    tensors = weights_tensors(initial_weights())
    lite0 = create_model("radclip-mini", pretrained=str(save_weights(tensors, tmp_path / "a.safetensors")))
    path = save_weights(tensors, tmp_path / "b.safetensors", backbone="efficientnet-lite1")
    lite1 = create_model("radclip-mini", pretrained=str(path))
    assert (lite0.image_size, lite1.image_size) == (224, 240)
    assert lite1.describe()["preprocessing"]["image_size"] == 240
    # Same tensors, another tower: another model, so indexes built with one ask to be rebuilt.
    assert lite1.weights_hash() != lite0.weights_hash()
    images = np.random.default_rng(0).integers(0, 256, (2, 240, 240), dtype=np.uint8)
    vectors = lite1.encode_images(images)
    assert vectors.shape == (2, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="240"):
        lite1.encode_images(np.zeros((1, 224, 224), np.uint8))


def test_a_file_naming_an_unknown_backbone_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    tensors = {name: t.to(torch.float16) for name, t in weights_tensors(initial_weights()).items()}
    save_file(tensors, str(path), metadata={BACKBONE_KEY: "efficientnet-lite9"})
    with pytest.raises(ModelLoadError, match="image backbone 'efficientnet-lite9' is not one of") as caught:
        create_model("radclip-mini", pretrained=str(path))
    assert "\n" not in str(caught.value)


def test_a_checkpoint_keeps_its_backbone_and_refuses_a_config_naming_another(tmp_path: Path) -> None:
    import json

    from radsearch.encoders._checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint

    _require("efficientnet-lite1")
    path = save_weights(weights_tensors(initial_weights()), tmp_path / "w.safetensors",
                        backbone="efficientnet-lite1")
    folder = save_checkpoint(create_model("radclip-mini", pretrained=str(path)), tmp_path / "ckpt",
                             card="A Lite1 test checkpoint.")
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["params"] == {"image_tower": "tf_efficientnet_lite1", "image_size": 240}
    assert load_checkpoint(folder).backbone.name == "efficientnet-lite1"

    config["params"]["image_tower"] = "tf_efficientnet_lite0"
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trained on efficientnet-lite1, not efficientnet-lite0"):
        load_checkpoint(folder)


def test_an_index_built_with_a_weights_file_reopens_with_that_file(tmp_path: Path) -> None:
    """The index records the model by name and reopens it by that name: a radclip-mini run on
    another weights file is named by the file, so search, similar and draft load the same model."""
    from PIL import Image

    from radsearch.index_handle import open_index
    from radsearch.indexer import index_folder

    path = save_weights(weights_tensors(initial_weights()), tmp_path / "run.safetensors")
    named = create_model(f"radclip-mini@{path}")
    assert named.describe()["name"] == f"radclip-mini@{path.resolve()}"
    assert create_model(named.describe()["name"]).weights_hash() == named.weights_hash()
    assert create_model("radclip-mini").describe()["name"] == "radclip-mini"
    assert create_model("radclip-mini", pretrained=str(WEIGHTS_FILE)).describe()["name"] == "radclip-mini"

    studies = tmp_path / "studies"
    studies.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32), 60 * i + 40, np.uint8)).save(studies / f"{i}.png")
    index_folder(studies, index=tmp_path / "index", model=f"radclip-mini@{path}", workers=0)
    with open_index(tmp_path / "index") as index:
        assert index.encoder.weights_hash() == named.weights_hash() != create_model("radclip-mini").weights_hash()
        assert len(index.search("a chest radiograph", k=2).hits) == 2
