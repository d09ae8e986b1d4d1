"""Training recipes for radclip-mini: which parts learn, from which data, and the shipped-file export.

Training starts from the untrained composite (the offline pretrained towers and radclip-mini's
seeded initial projections), never from a shipped file, so every recipe is reproducible from the
packages alone. A locked tower runs once per input through the feature cache; a tower that learns
runs every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radsearch.encoders.towers import DEFAULT_BACKBONE, image_size
from radsearch.encoders.weights import (
    IMAGE_PROJECTION,
    IMAGE_TOWER_PREFIX,
    LOGIT_SCALE,
    TEXT_PROJECTION,
    TEXT_TOWER_PREFIX,
    initial_projections,
    save_weights,
)
from radsearch.training.augment import Augmentation
from radsearch.training.captions import caption_variants, positive_groups
from radsearch.training.data import PairData
from radsearch.training.features import FeatureCache, image_features, text_features
from radsearch.training.images import read_images
from radsearch.training.manifest import Pair, check_groups, read_manifests, select_split
from radsearch.training.model import ClipModel
from radsearch.training.towers import ImageTower, TextTower, build_image_tower, build_text_tower
from radsearch.training.train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """What learns. ``image_blocks`` / ``text_layers``: None locks the tower, 0 trains all of it,
    k > 0 trains its last k stages / transformer layers. ``views``: cached image views per training
    image when the image tower is locked (view 0 as read, the rest augmented). ``backbone``: the
    image tower (``radsearch.encoders.towers.IMAGE_BACKBONES``), run at its native size."""

    description: str
    image_blocks: int | None = None
    text_layers: int | None = None
    views: int = 3
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    tower_lr: float = 3e-5
    multi_positive: bool = False  # one case's near-identical captions are not negatives
    case_texts: bool = False  # the case's texts (manifest ``case_texts``) as extra positive texts
    caption_variants: bool = False  # rewordings of multi-sentence captions as extra positive texts
    backbone: str = DEFAULT_BACKBONE

    def config(self, **overrides) -> TrainConfig:
        fields = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, tower_lr=self.tower_lr,
                      multi_positive=self.multi_positive)
        return TrainConfig(**{**fields, **overrides})


RECIPES: dict[str, Recipe] = {
    "projections": Recipe("both towers locked (LiT-style); projections and temperature learn"),
    "text-tail": Recipe(
        "image tower locked; the last 2 text transformer layers, projections and temperature learn",
        text_layers=2, epochs=10, batch_size=128,
    ),
    "image-tail": Recipe(
        "text tower locked; the image tower's last stage and head, projections and temperature "
        "learn (the stages before it run once per view, through the feature cache)",
        image_blocks=1, epochs=10, batch_size=128, tower_lr=1e-4,
    ),
}
# The same recipes with the text side used better: multi-positive loss, case texts, rewordings.
_MORE_TEXT = dict(multi_positive=True, case_texts=True, caption_variants=True)
RECIPES.update({
    f"{name}+text": replace(recipe, description=recipe.description + "; multi-positive loss, case "
                            "texts and caption rewordings as extra positive texts", **_MORE_TEXT)
    for name, recipe in list(RECIPES.items())
})


@dataclass
class Prepared:
    model: ClipModel
    train: PairData
    dev: dict[str, PairData]  # by manifest name


def customise(recipe: Recipe, *, lock_image: bool | None = None, lock_text: bool | None = None,
              image_blocks: int | None = None, text_layers: int | None = None,
              views: int | None = None, multi_positive: bool | None = None,
              case_texts: bool | None = None, caption_variants: bool | None = None,
              backbone: str | None = None) -> Recipe:
    """A recipe with command-line choices applied (None keeps the recipe's own)."""
    changes: dict = {}
    if image_blocks is not None:
        changes["image_blocks"] = image_blocks
    if text_layers is not None:
        changes["text_layers"] = text_layers
    # Unlocking a tower the recipe locks trains all of it, unless a depth was given.
    if lock_image is not None:
        unlocked = changes.get("image_blocks", recipe.image_blocks or 0)
        changes["image_blocks"] = None if lock_image else unlocked
    if lock_text is not None:
        unlocked = changes.get("text_layers", recipe.text_layers or 0)
        changes["text_layers"] = None if lock_text else unlocked
    for name, value in (("views", views), ("multi_positive", multi_positive),
                        ("case_texts", case_texts), ("caption_variants", caption_variants),
                        ("backbone", backbone)):
        if value is not None:
            changes[name] = value
    return replace(recipe, **changes)


def prepare(
    recipe: Recipe,
    manifests: Sequence[Path],
    *,
    device: str,
    cache_dir: Path | None,
    seed: int,
    log: Callable[[str], None] = lambda message: None,
) -> Prepared:
    """The model at its starting point and the train / dev pairs of ``manifests`` (dev by manifest),
    with locked towers' features read from or added to the cache at ``cache_dir``."""
    pairs = read_manifests(manifests)
    check_groups(pairs)
    train_pairs = select_split(pairs, "train")
    dev_pairs: dict[str, list[Pair]] = {}
    for pair in select_split(pairs, "dev"):
        dev_pairs.setdefault(pair.source, []).append(pair)
    log(f"{len(train_pairs)} training pairs; dev: "
        + (", ".join(f"{name} {len(p)}" for name, p in dev_pairs.items()) or "none"))

    cache = FeatureCache(cache_dir)
    size = image_size(recipe.backbone)  # before any work: an unknown backbone is refused here
    image_tower = build_image_tower(device, recipe.image_blocks, recipe.backbone).eval()
    text_tower = build_text_tower(device, recipe.text_layers).eval()

    # The image tower's front stays locked in every recipe but a fully unlocked one: its output
    # (before the last stage, or before the stages that learn) is cached per view; a locked tail
    # then runs once over the cache, a learning one every step.
    trunk = None if recipe.image_blocks == 0 else image_tower.trunk(recipe.image_blocks or 1)

    def images(pairs: list[Pair], views: int) -> dict:
        paths = [p.image for p in pairs]
        if trunk is None:
            return {"frames": read_images(paths, size), "augmentation": Augmentation()}
        activations = image_features(
            trunk, paths, image_size=size, views=views,
            augmentation=Augmentation(), seed=seed, cache=cache, log=log)
        if recipe.image_blocks is not None:
            return {"image_features": activations}
        return {"image_features": _run_locked(image_tower, activations, device)}

    def texts(pairs: list[Pair], training: bool) -> dict:
        strings = [p.text for p in pairs]
        out: dict = {"texts": strings}
        if training and (recipe.case_texts or recipe.caption_variants):
            out["options"] = [
                (caption_variants(p.text) if recipe.caption_variants else [])
                + (list(p.case_texts) if recipe.case_texts else [])
                for p in pairs
            ]
        if training and recipe.multi_positive:
            out["positive_groups"] = positive_groups(pairs)
        if recipe.text_layers is not None:
            return out
        out["text_features"] = text_features(text_tower, strings, cache=cache)
        if "options" in out:
            flat = [t for options in out["options"] for t in options]
            vectors = text_features(text_tower, flat, cache=cache) if flat else np.zeros((0, 1))
            offsets = np.cumsum([0] + [len(o) for o in out["options"]])
            out["option_features"] = [vectors[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        return out

    train = PairData(**images(train_pairs, recipe.views), **texts(train_pairs, True))
    dev = {name: PairData(**images(p, 1), **texts(p, False)) for name, p in dev_pairs.items()}
    projections = initial_projections()
    model = ClipModel(
        nn.Identity() if recipe.image_blocks is None else image_tower,
        nn.Identity() if recipe.text_layers is None else text_tower,
        torch.from_numpy(projections[IMAGE_PROJECTION]),
        torch.from_numpy(projections[TEXT_PROJECTION]),
    )
    return Prepared(model, train, dev)


def _run_locked(tower: ImageTower, activations: np.ndarray, device: str) -> np.ndarray:
    """The locked tail of ``tower`` over cached trunk activations ``(views, N, ...)``."""
    out = np.empty(activations.shape[:2] + (tower.net.num_features,), dtype=np.float32)
    with torch.inference_mode():
        for view in range(activations.shape[0]):
            for start in range(0, activations.shape[1], 256):
                batch = torch.from_numpy(activations[view, start : start + 256]).to(device)
                out[view, start : start + len(batch)] = tower(batch).cpu().numpy()
    return out


def export_weights(
    model: ClipModel, path: Path, metadata: dict[str, str] | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> Path:
    """Write the radclip-mini weights file (``radsearch.encoders.weights``): projections, logit
    scale, and only the tower tensors that differ from the offline pretrained ones; the file
    records ``backbone``, the image tower they were trained on."""
    tensors = {
        IMAGE_PROJECTION: model.image_projection.weight,
        TEXT_PROJECTION: model.text_projection.weight,
    }
    if isinstance(model.image_encoder, ImageTower):
        tower = model.image_encoder
        tensors.update(_changed(tower.net.state_dict(), tower.pretrained, IMAGE_TOWER_PREFIX))
    if isinstance(model.text_encoder, TextTower):
        tower = model.text_encoder
        tensors.update(_changed(tower.model.state_dict(), tower.pretrained, TEXT_TOWER_PREFIX))
    tensors[LOGIT_SCALE] = model.logit_scale
    return save_weights(tensors, path, metadata, backbone=backbone)


def _changed(state: dict, reference: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {
        prefix + name: tensor
        for name, tensor in state.items()
        if not torch.equal(tensor.cpu(), reference[name])
    }

