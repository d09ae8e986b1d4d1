"""Train the slice pooling: symmetric InfoNCE between pooled volume embeddings and report texts.

Inputs are (slice vectors, positions, text vector) triples from a frozen encoder: the slice
embeddings of one series, their positions (mm along the slice normal, or ``None``) and the
embedding of that series' report. Only the ``SlicePooling`` module (and a temperature) learns, so
the towers and every image embedding already indexed stay valid. The module starts as the mean
(see ``radsearch.encoders.slice_pooling``), which makes the mean the baseline training must beat.

``train_slice_pooling`` runs it all from manifests of volume-report pairs (``radsearch train
slice-pooling``): radclip-mini embeds the slices and reports, the pooling learns on the train rows,
dev rows are scored against the mean, and the result is a radclip-mini weights file with the
trained pooling in it; ``fit_slice_pooling`` is the training step on vectors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radsearch.encoders import Encoder, create_model
from radsearch.encoders.slice_pooling import (
    DEFAULT_MAX_SLICES,
    PREFIX,
    collate,
    mean_pool,
    module_from_tensors,
    module_tensors,
    pool_volumes,
    prepare_volume,
)
from radsearch.encoders.weights import load_weights, save_weights, weights_tensors
from radsearch.reading import parse_ct_windows
from radsearch.training.images import read_volume
from radsearch.training.manifest import ManifestError, Pair, check_groups, read_manifests, select_split
from radsearch.training.metrics import bidirectional_metrics

# (slice vectors (n, dim), positions (n,) in mm or None, report text vector (dim,))
VolumeText = tuple[np.ndarray, np.ndarray | None, np.ndarray]

_MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PoolingRun:
    module: Any  # the trained SlicePooling, in eval mode
    losses: list[float]  # mean training loss of each epoch
    logit_scale: float  # the learned inverse temperature


def fit_slice_pooling(
    examples: Sequence[VolumeText],
    *,
    heads: int = 8,
    layers: int = 1,
    max_slices: int = DEFAULT_MAX_SLICES,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
) -> PoolingRun:
    """Train a fresh ``SlicePooling`` on ``examples``; seeded and deterministic on one device."""
    import torch

    from radsearch.encoders.slice_pooling import SlicePooling

    if len(examples) < 2:
        raise ValueError("contrastive training needs at least two examples")
    dim = np.asarray(examples[0][2]).shape[-1]
    volumes = [prepare_volume(vectors, positions, max_slices) for vectors, positions, _ in examples]
    texts = torch.tensor(np.stack([_unit(text) for _, _, text in examples]), device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = SlicePooling(dim, heads=heads, max_slices=max_slices, layers=layers).to(device)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
    optimiser = torch.optim.AdamW(
        [{"params": module.parameters(), "weight_decay": weight_decay},
         {"params": [log_scale], "weight_decay": 0.0}],
        lr=lr,
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(volumes), generator=generator).tolist()
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        epoch_loss = []
        for batch in batches:
            if len(batch) < 2:  # one pair has no negatives
                continue
            x, pos, mask = collate([volumes[i] for i in batch], device)
            loss = info_nce(module(x, pos, mask), texts[batch], log_scale)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                log_scale.clamp_(max=_MAX_LOGIT_SCALE)
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
    return PoolingRun(module.eval(), losses, float(log_scale.detach().exp()))


def info_nce(pooled: Any, texts: Any, log_scale: Any) -> Any:
    """Symmetric InfoNCE: row i of ``pooled`` and row i of ``texts`` are the positive pair."""
    import torch
    import torch.nn.functional as F

    logits = log_scale.exp() * F.normalize(pooled, dim=-1) @ F.normalize(texts, dim=-1).T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def save_slice_pooling(module: Any, path: Path) -> None:
    """Write the module as ``slice_pooling.*`` tensors into the safetensors file ``path``; other
    tensors of an existing file (a radclip-mini weights file) are kept, old pooling ones replaced."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    kept = {}
    if path.exists():
        kept = {k: v for k, v in load_file(str(path)).items() if not k.startswith(PREFIX)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({**kept, **module_tensors(module)}, str(path))


def load_slice_pooling(path: Path, max_slices: int = DEFAULT_MAX_SLICES) -> Any:
    """The ``SlicePooling`` stored in the safetensors file ``path``."""
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(str(path)).items() if k.startswith(PREFIX)}
    if not tensors:
        raise ValueError(f"{path} holds no {PREFIX}* tensors")
    return module_from_tensors(tensors, max_slices)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def train_slice_pooling(
    manifests: Sequence[Path],
    out: Path,
    *,
    weights: Path | None = None,
    ct_windows: str = "none",
    heads: int = 8,
    layers: int = 1,
    max_slices: int = DEFAULT_MAX_SLICES,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Train radclip-mini's slice pooling on the volume-report pairs of ``manifests``; write ``out``.

    Manifest rows as for ``train clip`` (``image``, ``text``, ``split``, ``group``), each image a
    volume: a NIfTI file, a multi-frame DICOM file or a folder of one series' DICOM files. Train
    rows with two slices or more train the pooling (a single slice pools to itself); dev rows are
    scored volume<->report, trained pooling against the plain mean. ``weights``: the radclip-mini
    weights file whose towers embed the slices and reports (default: the shipped one); ``out`` is
    that file with the trained pooling in place of any it had, ready for ``create_model(
    "radclip-mini", pretrained=out)`` or to ship. ``ct_windows``: render CT as the index to be
    built will (``reading.parse_ct_windows``). Returns the run's summary (what ``--json`` prints).
    """
    began = time.perf_counter()
    pairs = read_manifests(manifests)
    check_groups(pairs)
    encoder = create_model("radclip-mini", device=device,
                           pretrained=None if weights is None else str(weights))
    windows = parse_ct_windows(ct_windows)
    train = _embed_volumes(encoder, select_split(pairs, "train"), windows, log)
    if len(train) < 2:
        raise ManifestError(f"{len(train)} train volumes of 2 slices or more in "
                            f"{', '.join(map(str, manifests))}; contrastive training needs 2")
    dev = _embed_volumes(encoder, select_split(pairs, "dev"), windows, log)
    log(f"{len(train)} train volumes, {len(dev)} dev volumes; training the pooling")
    run = fit_slice_pooling(train, heads=heads, layers=layers, max_slices=max_slices, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, device=device)
    source = load_weights(weights)
    tensors = {name: tensor for name, tensor in weights_tensors(source).items()
               if not name.startswith(PREFIX)}
    path = save_weights({**tensors, **module_tensors(run.module)}, out, metadata={
        "slice_pooling_volumes": str(len(train)), "slice_pooling_epochs": str(epochs),
    }, backbone=source.backbone)
    return {
        "weights": str(path),
        "train_volumes": len(train),
        "dev_volumes": len(dev),
        "losses": [round(loss, 6) for loss in run.losses],
        "logit_scale": run.logit_scale,
        "dev": _dev_scores(run.module, dev) if len(dev) >= 2 else None,
        "seconds": round(time.perf_counter() - began, 1),
    }


def _embed_volumes(encoder: Encoder, pairs: Sequence[Pair], ct_windows, log) -> list[VolumeText]:
    """(slice vectors, positions, report vector) of each pair whose volume has two slices or more."""
    examples = []
    for pair in pairs:
        frames, positions = read_volume(pair.image, encoder.image_size, ct_windows)
        if len(frames) < 2:
            log(f"{pair.image}: one slice, not a volume; skipped")
            continue
        examples.append((encoder.encode_images(frames), positions, pair.text))
    texts = encoder.encode_texts([text for _, _, text in examples]) if examples else []
    return [(vectors, positions, text) for (vectors, positions, _), text in zip(examples, texts)]


def _dev_scores(module: Any, dev: Sequence[VolumeText]) -> dict:
    """Volume<->report retrieval on ``dev``: the trained pooling and the plain mean."""
    texts = np.stack([text for _, _, text in dev])
    return {
        "pooling": bidirectional_metrics(pool_volumes(module, [(v, p) for v, p, _ in dev]), texts),
        "mean": bidirectional_metrics(np.stack([mean_pool(v) for v, _, _ in dev]), texts),
    }
