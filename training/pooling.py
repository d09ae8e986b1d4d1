"""Train the slice pooling: symmetric InfoNCE between pooled volume embeddings and report texts.

Inputs are (slice vectors, positions, text vector) triples from a frozen encoder: the slice
embeddings of one series, their positions (mm along the slice normal, or ``None``) and the
embedding of that series' report. Only the ``SlicePooling`` module (and a temperature) learns, so
the towers and every image embedding already indexed stay valid. The module starts as the mean
(see ``radsearch.encoders.slice_pooling``), which makes the mean the baseline training must beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radsearch.encoders.slice_pooling import (
    DEFAULT_MAX_SLICES,
    PREFIX,
    collate,
    module_from_tensors,
    module_tensors,
    prepare_volume,
)

# (slice vectors (n, dim), positions (n,) in mm or None, report text vector (dim,))
VolumeText = tuple[np.ndarray, np.ndarray | None, np.ndarray]

_MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PoolingRun:
    module: Any  # the trained SlicePooling, in eval mode
    losses: list[float]  # mean training loss of each epoch
    logit_scale: float  # the learned inverse temperature


def train_slice_pooling(
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
