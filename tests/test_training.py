"""Contrastive training on a tiny CLIP-like pair: the loss drops, resume equals an unbroken run,
augmentation keeps radiology geometry, manifests resolve paths and read DICOM rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from radsearch.training.augment import Augmentation
from radsearch.training.data import PairData
from radsearch.training.images import read_image
from radsearch.training.manifest import ManifestError, check_groups, read_manifest, select_split
from radsearch.training.model import ClipModel, contrastive_loss
from radsearch.training.train import TrainConfig, TrainingError, train


class TinyImageEncoder(nn.Module):
    """uint8 (N, 16, 16) -> 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 7 * 7, 8)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(pixels.float().unsqueeze(1) / 255)).flatten(1))


class TinyTextEncoder(nn.Module):
    """Texts -> 6 features from hashed characters, with dropout (so resume must seed it)."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(64, 6)
        self.dropout = nn.Dropout(0.2)

    def forward(self, texts) -> torch.Tensor:
        ids = [torch.tensor([ord(c) % 64 for c in text]) for text in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.dropout(self.bag(torch.cat(ids), offsets))


def _tiny_data(n: int, seed: int) -> PairData:
    """Images whose brightest quadrant is named by their caption: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, 16, 16), dtype=np.uint8)
    words = ["upper left", "upper right", "lower left", "lower right"]
    texts = []
    for i in range(n):
        q = int(rng.integers(4))
        r, c = divmod(q, 2)
        frames[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 150
        texts.append(f"bright {words[q]} case {i % 5}")
    return PairData(texts=texts, frames=frames, augmentation=Augmentation(rotate_degrees=5))


def _tiny_model() -> ClipModel:
    torch.manual_seed(0)  # the encoders' own init
    generator = torch.Generator().manual_seed(0)
    return ClipModel(
        TinyImageEncoder(), TinyTextEncoder(),
        torch.randn(5, 8, generator=generator) * 0.3, torch.randn(5, 6, generator=generator) * 0.3,
    )


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


CONFIG = TrainConfig(epochs=3, batch_size=16, lr=1e-2, tower_lr=1e-2, seed=7)


def test_training_lowers_the_loss_and_keeps_the_best_dev_epoch(tmp_path):
    model = _tiny_model()
    config = TrainConfig(epochs=8, batch_size=16, lr=2e-2, tower_lr=2e-2, seed=1)
    result = train(model, _tiny_data(64, 0), {"dev": _tiny_data(24, 1)}, config, tmp_path)
    losses = [r.train_loss for r in result.history[1:]]
    assert losses[-1] < 0.8 * losses[0]
    assert result.history[0].epoch == 0 and result.history[0].train_loss is None
    best = max(result.history, key=lambda r: r.dev_score)
    assert (result.best_epoch, result.best_score) == (best.epoch, best.dev_score)
    assert result.best_score > result.history[0].dev_score
    assert {"checkpoint.pt", "best.pt", "history.json"} <= {p.name for p in tmp_path.iterdir()}
    dev = result.history[-1].dev["dev"]
    assert dev["n"] == 24 and set(dev["image_to_text"]) == {"R@1", "R@5", "R@10", "median_rank"}


def test_resume_gives_the_same_weights_as_an_unbroken_run(tmp_path):
    train_data, dev = _tiny_data(48, 0), {"dev": _tiny_data(16, 1)}
    unbroken = _tiny_model()
    train(unbroken, train_data, dev, CONFIG, tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_after_first(record) -> None:
        if record.epoch == 1:
            raise Stop

    interrupted = _tiny_model()
    with pytest.raises(Stop):
        train(interrupted, train_data, dev, CONFIG, tmp_path / "b", on_epoch=stop_after_first)
    resumed = _tiny_model()  # a fresh process: weights come from the checkpoint only
    result = train(resumed, train_data, dev, CONFIG, tmp_path / "b", resume=True)
    assert [r.epoch for r in result.history] == [0, 1, 2, 3]
    a, b = _params(unbroken), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_configuration_and_a_used_folder(tmp_path):
    train_data, dev = _tiny_data(32, 0), {"dev": _tiny_data(8, 1)}
    train(_tiny_model(), train_data, dev, CONFIG, tmp_path)
    with pytest.raises(TrainingError, match="another configuration"):
        train(_tiny_model(), train_data, dev, TrainConfig(epochs=5, seed=7), tmp_path, resume=True)
    with pytest.raises(TrainingError, match="exists"):
        train(_tiny_model(), train_data, dev, CONFIG, tmp_path)
    with pytest.raises(TrainingError, match="dev"):
        train(_tiny_model(), train_data, {}, CONFIG, tmp_path / "new")


def test_contrastive_loss_is_symmetric_infonce():
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.5, 0.9], [0.1, 1.0]]), dim=1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    expected = (-logits.log_softmax(1).diag().mean() - logits.log_softmax(0).diag().mean()) / 2
    assert torch.allclose(contrastive_loss(images, texts, scale), expected)
    # Matched pairs score better than the same embeddings paired at random.
    assert contrastive_loss(images, texts, scale) < contrastive_loss(images, texts[[1, 2, 0]], scale)


def test_augmentation_is_seeded_small_and_never_flips():
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 64, 64), dtype=np.uint8)
    frames[:, 16:48, 4:20] = 200 + rng.integers(0, 40, size=(4, 32, 16), dtype=np.uint8)  # left-sided
    augment = Augmentation()
    first = augment(frames, torch.Generator().manual_seed(3))
    again = augment(frames, torch.Generator().manual_seed(3))
    other = augment(frames, torch.Generator().manual_seed(4))
    assert first.dtype == np.uint8 and first.shape == frames.shape
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    for image in first:  # the bright structure stays on the left
        columns = image.astype(float).sum(axis=0)
        assert columns[:32].sum() > 3 * columns[32:].sum()


def test_manifest_resolves_relative_paths_reads_dicom_and_checks_groups(tmp_path):
    from pydicom.data import get_testdata_file

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), images / "ct.dcm")
    shared_png = Path(__file__).resolve().parents[1] / "radsearch" / "sample_studies" / "images"
    shutil.copy(shared_png / "chest_xray_01.jpg", images / "cxr.jpg")
    manifest = tmp_path / "data" / "pairs.csv"
    manifest.write_text(
        "image_path,text,split,case,extra\n"
        "images/ct.dcm,Axial CT slice.,TRAIN,c1,x\n"
        "images/cxr.jpg,Right pleural effusion.,,c2,y\n"
        f"{images / 'cxr.jpg'},Same image by absolute path.,dev,c3,z\n"
    )
    pairs = read_manifest(manifest)
    assert [p.image for p in pairs] == [images / "ct.dcm", images / "cxr.jpg", images / "cxr.jpg"]
    assert [p.split for p in pairs] == ["train", "train", "dev"]
    assert [p.group for p in pairs] == ["c1", "c2", "c3"] and {p.source for p in pairs} == {"pairs"}
    assert len(select_split(pairs, "dev")) == 1
    check_groups(pairs)
    ct = read_image(pairs[0].image, 32)
    assert ct.dtype == np.uint8 and ct.shape == (32, 32) and ct.max() > 0

    leaky = tmp_path / "leaky.csv"
    leaky.write_text("image,text,split,group\na.png,one,train,g\nb.png,two,test,g\n")
    with pytest.raises(ManifestError, match="'g' is in both"):
        check_groups(read_manifest(leaky))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,caption\na.png,one\n")
    with pytest.raises(ManifestError, match="needs an 'image'"):
        read_manifest(bad)
    empty_text = tmp_path / "empty.csv"
    empty_text.write_text("image,text\na.png,\n")
    with pytest.raises(ManifestError, match="row 2"):
        read_manifest(empty_text)
    with pytest.raises(ManifestError, match="not a DICOM, PNG or JPEG"):
        read_image(manifest, 32)


def test_feature_cache_computes_each_key_once_and_reads_it_back(tmp_path):
    from radsearch.training.features import FeatureCache

    calls = []

    def compute(indices):
        calls.append(list(indices))
        return np.array([[float(i), 1.0] for i in indices])

    cache = FeatureCache(tmp_path)
    first = cache.get_many(["a", "b", "a", "c"], compute, chunk=2)
    assert calls == [[0, 1], [3]]  # "a" once, in chunks of two
    assert np.array_equal(first[0], first[2]) and first.dtype == np.float32
    again = FeatureCache(tmp_path).get_many(["c", "a", "d"], compute)
    assert calls[-1] == [2] and np.array_equal(again[:2], first[[3, 0]])
    assert len(list(tmp_path.rglob("*.npy"))) == 4


def test_shared_data_manifests_follow_the_rules_for_honest_numbers(shared_data, tmp_path):
    import csv
    from collections import Counter

    from radsearch.training.build_manifests import build_manifests

    written = build_manifests(shared_data, tmp_path / "manifests")
    pairs = {name: read_manifest(path) for name, path in written.items()}
    for rows in pairs.values():
        check_groups(rows)  # no case or patient on two sides
        assert all(p.image.is_file() for p in rows[:20])  # paths relative to the manifest's folder
    medpix = Counter(p.split for p in pairs["medpix2"])
    assert medpix["test"] == 200 and medpix["dev"] == 197  # the published split, complete
    assert 0 < medpix["train"] < 1653  # placeholder captions left out of train only
    # Case texts (findings, diagnosis, history) are extra training texts: never on dev or test rows.
    assert all(p.case_texts for p in pairs["medpix2"] if p.split == "train")
    assert not any(p.case_texts for p in pairs["medpix2"] if p.split != "train")
    assert {p.split for p in pairs["vqa_rad"]} == {"train"}
    with open(shared_data / "vqa_rad" / "manifest_per_image.csv", newline="") as handle:
        held_out = {(shared_data / "vqa_rad" / r["image_path"]).resolve()
                    for r in csv.DictReader(handle) if r["medpix_split"] in ("dev", "test")}
    assert held_out and not held_out & {p.image for p in pairs["vqa_rad"]}
    assert all(p.text.split(".")[0].endswith(("chest", "abdomen", "head")) for p in pairs["vqa_rad"])
    covid = Counter(p.split for p in pairs["covid_cxr"])
    assert set(covid) == {"train", "dev"} and 0.1 < covid["dev"] / sum(covid.values()) < 0.4
    # Stable: the same split on every build.
    again = build_manifests(shared_data, tmp_path / "again")
    assert [p.split for p in read_manifest(again["covid_cxr"])] == [p.split for p in pairs["covid_cxr"]]


def test_mixed_precision_bf16_on_cpu_and_fp16_refused_without_cuda(tmp_path):
    config = TrainConfig(epochs=1, batch_size=16, seed=1, precision="bf16")
    result = train(_tiny_model(), _tiny_data(32, 0), {"dev": _tiny_data(8, 1)}, config, tmp_path / "bf16")
    assert np.isfinite(result.history[-1].train_loss)
    with pytest.raises(TrainingError, match="CUDA"):
        train(_tiny_model(), _tiny_data(32, 0), {"dev": _tiny_data(8, 1)},
              TrainConfig(epochs=1, precision="fp16"), tmp_path / "fp16")
