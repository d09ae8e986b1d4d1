"""Features of locked towers, computed once and cached on disk.

With a tower locked, its output for an image (or an augmented view of it) never changes, so a
recipe that trains only what sits above it runs in seconds from the cache instead of re-running the
tower every epoch. Each vector is one ``.npy`` file named by a hash of the tower's weights and the
input (file content, view number and seed): a changed tower, file or seed never reads a stale entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radsearch.training.augment import Augmentation
from radsearch.training.images import read_image

_BATCH = 32


def module_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes, bytes): what makes its outputs."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FeatureCache:
    """Vectors on disk under ``root`` (or in memory only when ``root`` is None)."""

    def __init__(self, root: Path | None) -> None:
        self.root = None if root is None else Path(root)
        self._memory: dict[str, np.ndarray] = {}

    def get_many(
        self, keys: Sequence[str], compute: Callable[[list[int]], np.ndarray], chunk: int = 256
    ) -> np.ndarray:
        """Stacked vectors for ``keys``; ``compute(indices)`` fills the missing ones, ``chunk`` at a
        time, each chunk stored before the next starts (an interrupted run keeps what it did).
        A key repeated (the same caption or file twice) is computed once: every copy gets the
        same bytes, now and when read back later."""
        found: dict[str, np.ndarray] = {}
        missing: dict[str, int] = {}  # key -> first index holding it
        for i, key in enumerate(keys):
            if key in found or key in missing:
                continue
            vector = self._load(key)
            if vector is None:
                missing[key] = i
            else:
                found[key] = vector
        todo = list(missing.items())
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for (key, _), vector in zip(part, compute([i for _, i in part])):
                self._store(key, vector)
                found[key] = np.asarray(vector, dtype=np.float32)
        return np.stack([found[key] for key in keys]).astype(np.float32)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _load(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            return self._memory[key]
        if self.root is not None and self._path(key).exists():
            return np.load(self._path(key))
        return None

    def _store(self, key: str, vector: np.ndarray) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        self._memory[key] = vector
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npy")
        np.save(partial, vector)
        partial.replace(path)  # atomic: an interrupted run never leaves half a vector


def image_features(
    tower: nn.Module,
    paths: Sequence[Path],
    *,
    image_size: int,
    views: int,
    augmentation: Augmentation,
    seed: int,
    cache: FeatureCache,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """float32 ``(views, N, D)``: view 0 is the image as read, views 1.. are augmented copies.

    Each augmented view draws from its own generator, seeded by the file, the view and ``seed``:
    the same image always gets the same views, whatever else is in the batch.
    """
    tower_key = module_digest(tower)
    digests = [file_digest(path) for path in paths]
    device = next(tower.parameters()).device
    out = []
    for view in range(views):
        keys = [
            hashlib.sha256(f"image {tower_key} {d} size={image_size} view={view} "
                           f"seed={seed} {augmentation}".encode()).hexdigest()
            for d in digests
        ]

        def compute(indices: list[int], view: int = view) -> np.ndarray:
            log(f"image features, view {view}: running {len(indices)} images through the tower")
            vectors = []
            for start in range(0, len(indices), _BATCH):
                batch = [indices[j] for j in range(start, min(start + _BATCH, len(indices)))]
                frames = np.stack([read_image(paths[i], image_size) for i in batch])
                if view:
                    frames = np.stack([
                        augmentation(frames[j : j + 1], _view_generator(digests[i], view, seed))[0]
                        for j, i in enumerate(batch)
                    ])
                with torch.inference_mode():
                    vectors.append(tower(torch.from_numpy(frames).to(device)).cpu().numpy())
            return np.concatenate(vectors)

        out.append(cache.get_many(keys, compute))
    return np.stack(out)


def text_features(
    tower: nn.Module, texts: Sequence[str], *, cache: FeatureCache, batch_size: int = 64
) -> np.ndarray:
    """float32 ``(N, D)`` for a locked text tower."""
    tower_key = module_digest(tower)
    keys = [hashlib.sha256(f"text {tower_key} {t}".encode()).hexdigest() for t in texts]

    def compute(indices: list[int]) -> np.ndarray:
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(indices), batch_size):
                batch = [texts[i] for i in indices[start : start + batch_size]]
                vectors.append(tower(batch).cpu().numpy())
        return np.concatenate(vectors)

    return cache.get_many(keys, compute)


def _view_generator(digest: str, view: int, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(digest[:15], 16) + 7919 * view + seed) % 2**63)
