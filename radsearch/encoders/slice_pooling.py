"""RadCLIP-style slice pooling: one volume embedding from the embeddings of a series' slices.

``V = readout(MHSA(I + PE(P)))``: slice vectors ``I`` plus a positional encoding of each slice's
position ``P`` (mm along the slice normal), one pre-norm self-attention block, then multi-head
attention pooling with a learned query per head.

- **Relative positions.** ``P`` is centred at the middle of the volume and scaled by its half extent
  (to [-1, 1]) before the Fourier features, so the encoding says where a slice lies *within* the
  volume, never where the patient lay on the table. Unknown positions: the slice order stands in.
- **A set function.** Nothing encodes the order in which slices arrive: attention is permutation
  equivariant, the readout invariant. ``prepare_volume`` also puts slices in a canonical order (by
  position, ties by content) so that the pooled vector is bit-identical for any input order.
- **Starts as the mean.** The PE projection, each residual branch's output projection and the
  readout queries are zero-initialised: untrained, the module returns the mean of its slice vectors
  exactly (to float rounding), so shipping it untrained changes nothing and training moves away
  from a sane baseline.

torch is imported lazily: ``SlicePooling`` is built on first access (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PREFIX = "slice_pooling."  # key prefix of the module's tensors in a safetensors file
DEFAULT_MAX_SLICES = 64


def mean_pool(vectors: np.ndarray) -> np.ndarray:
    """Mean of unit rows, renormalised (float64 sums, so the row order does not change the bits)."""
    vectors = _check_vectors(vectors)
    mean = vectors.mean(axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    # Rows that cancel out have no mean direction: the first row stands in.
    return (mean / norm).astype(np.float32) if norm > 0 else vectors[0].copy()


def prepare_volume(
    vectors: np.ndarray, positions: np.ndarray | None, max_slices: int = DEFAULT_MAX_SLICES
) -> tuple[np.ndarray, np.ndarray]:
    """Slices in canonical order with float64 positions, evenly sampled down to ``max_slices``.

    Known positions: sorted by position, ties broken by the vectors' values, so the result depends
    only on the set of (vector, position) pairs. Unknown (``None`` or any non-finite): the given
    order is the slice order, and ``0..n-1`` serve as positions.
    """
    vectors = _check_vectors(vectors)
    n = len(vectors)
    if positions is not None:
        positions = np.asarray(positions, dtype=np.float64).reshape(-1)
        if len(positions) != n:
            raise ValueError(f"{n} slice vectors but {len(positions)} positions")
    if positions is None or not np.all(np.isfinite(positions)):
        positions = np.arange(n, dtype=np.float64)
    else:
        order = np.argsort(positions, kind="stable")
        if np.any(np.diff(positions[order]) == 0):
            # Ties: order them by content too (lexsort's last key is the primary one).
            order = np.lexsort((*vectors.T[::-1], positions))
        vectors, positions = vectors[order], positions[order]
    if n > max_slices:
        # Spacing >= 1 after rounding, so the picks are distinct and include both ends.
        keep = np.round(np.linspace(0, n - 1, max_slices)).astype(np.int64)
        vectors, positions = vectors[keep], positions[keep]
    return vectors, positions


def pool_volumes(
    module: Any, volumes: Sequence[tuple[np.ndarray, np.ndarray | None]]
) -> np.ndarray:
    """Pool many series in one batched no-grad pass: float32 ``(len(volumes), dim)``, unit rows.

    ``module`` is a ``SlicePooling``; a single-slice series is its own slice vector (renormalised),
    so 2D images keep their image embedding as their series embedding.
    """
    import torch

    out = np.zeros((len(volumes), module.dim), dtype=np.float32)
    prepared, rows = [], []
    for row, (vectors, positions) in enumerate(volumes):
        vectors, positions = prepare_volume(vectors, positions, module.max_slices)
        if vectors.shape[1] != module.dim:
            raise ValueError(
                f"slice vectors have dim {vectors.shape[1]}, the pooling expects {module.dim}"
            )
        if len(vectors) == 1:
            out[row] = mean_pool(vectors)
        else:
            prepared.append((vectors, positions))
            rows.append(row)
    if prepared:
        device = next(module.parameters()).device
        x, pos, mask = collate(prepared, device)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            pooled = module(x, pos, mask).double().cpu().numpy()
        module.train(was_training)
        for row, vector, (vectors, _) in zip(rows, pooled, prepared):
            norm = float(np.linalg.norm(vector))
            out[row] = (vector / norm).astype(np.float32) if norm > 0 else mean_pool(vectors)
    return out


def pool_volume(
    slice_vectors: np.ndarray, positions: np.ndarray | None, module: Any = None
) -> np.ndarray:
    """One series' volume embedding, float32 ``(dim,)``, unit length, deterministic.

    ``module``: a ``SlicePooling``; ``None`` pools by the plain mean of all slices, which is what
    an untrained module computes (up to its sampling of series longer than ``max_slices``).
    """
    if module is None:
        return mean_pool(slice_vectors)
    return pool_volumes(module, [(slice_vectors, positions)])[0]


def collate(
    volumes: Sequence[tuple[np.ndarray, np.ndarray]], device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prepared volumes -> padded float32 ``(B, L, dim)``, float64 ``(B, L)`` positions, bool mask."""
    import torch

    length = max(len(vectors) for vectors, _ in volumes)
    dim = volumes[0][0].shape[1]
    x = np.zeros((len(volumes), length, dim), dtype=np.float32)
    pos = np.zeros((len(volumes), length), dtype=np.float64)
    mask = np.zeros((len(volumes), length), dtype=bool)
    for row, (vectors, positions) in enumerate(volumes):
        x[row, : len(vectors)] = vectors
        pos[row, : len(vectors)] = positions
        mask[row, : len(vectors)] = True
    x_t, pos_t, mask_t = (torch.from_numpy(array).to(device) for array in (x, pos, mask))
    return x_t, pos_t, mask_t


def module_tensors(module: Any) -> dict[str, torch.Tensor]:
    """The module's weights as ``slice_pooling.*`` float32 tensors, ready for safetensors."""
    return {
        PREFIX + name: tensor.detach().float().cpu().contiguous()
        for name, tensor in module.state_dict().items()
    }


def module_from_tensors(
    tensors: Mapping[str, torch.Tensor], max_slices: int = DEFAULT_MAX_SLICES
) -> Any:
    """A ``SlicePooling`` from its state dict (keys with or without the ``slice_pooling.`` prefix);
    the architecture (dim, heads, layers, frequencies, hidden size) is read off the shapes."""
    state = {name.removeprefix(PREFIX): tensor for name, tensor in tensors.items()}
    try:
        dim, features = state["pe.weight"].shape
        heads = state["query"].shape[0]
        layers = len({name.split(".")[1] for name in state if name.startswith("blocks.")})
        hidden = state["blocks.0.mlp.0.weight"].shape[0] if layers else 2 * dim
    except KeyError as missing:
        raise ValueError(f"slice pooling weights lack tensor {missing}") from None
    module = _slice_pooling_class()(
        dim, heads=heads, max_slices=max_slices, layers=layers, frequencies=features // 2,
        hidden=hidden,
    )
    module.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    return module.eval()


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"expected slice vectors of shape (n >= 1, dim); got {vectors.shape}")
    return vectors


def __getattr__(name: str) -> Any:
    if name == "SlicePooling":
        return _slice_pooling_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def _slice_pooling_class() -> type:
    import torch
    from torch import nn

    class _Block(nn.Module):
        """Pre-norm self-attention + MLP; both residual branches end in a zero projection."""

        def __init__(self, dim: int, heads: int, hidden: int) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for layer in (self.attn.out_proj, self.mlp[2]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

        def forward(self, h: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
            a = self.norm1(h)
            h = h + self.attn(a, a, a, key_padding_mask=padding, need_weights=False)[0]
            return h + self.mlp(self.norm2(h))

    class SlicePooling(nn.Module):
        """Slice vectors ``(B, L, dim)`` + positions ``(B, L)`` (+ validity mask) -> ``(B, dim)``.

        The output is not normalised (``pool_volumes`` and the training loss do that). See the
        module doc for the design; ``max_slices`` is an inference setting, not a weight.
        """

        def __init__(
            self,
            dim: int,
            heads: int = 8,
            max_slices: int = DEFAULT_MAX_SLICES,
            *,
            layers: int = 1,
            frequencies: int = 8,
            hidden: int | None = None,
        ) -> None:
            super().__init__()
            if dim % heads:
                raise ValueError(f"dim {dim} is not divisible by heads {heads}")
            if max_slices < 2:
                raise ValueError("max_slices must be at least 2")
            self.dim, self.heads, self.max_slices = dim, heads, max_slices
            # Angles (pi/2)*k*p for p in [-1, 1]: the lowest is monotonic over the volume.
            self.register_buffer(
                "angles", (math.pi / 2) * torch.arange(1, frequencies + 1, dtype=torch.float64),
                persistent=False,
            )
            self.pe = nn.Linear(2 * frequencies, dim)
            self.blocks = nn.ModuleList(
                _Block(dim, heads, hidden or 2 * dim) for _ in range(layers)
            )
            self.readout_norm = nn.LayerNorm(dim)
            self.readout_key = nn.Linear(dim, dim)
            self.query = nn.Parameter(torch.zeros(heads, dim // heads))
            nn.init.zeros_(self.pe.weight)
            nn.init.zeros_(self.pe.bias)

        def relative_positions(self, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Positions mapped to [-1, 1] per volume (centre 0); a flat volume maps to 0."""
            p = positions.to(torch.float64)
            lo = torch.where(mask, p, math.inf).amin(dim=1, keepdim=True)
            hi = torch.where(mask, p, -math.inf).amax(dim=1, keepdim=True)
            half = (hi - lo) / 2
            rel = (p - (lo + hi) / 2) / torch.where(half > 0, half, 1.0)
            return torch.where(mask, rel, 0.0)

        def forward(
            self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            angles = self.relative_positions(positions, mask).unsqueeze(-1) * self.angles
            features = torch.cat([angles.sin(), angles.cos()], dim=-1).to(x.dtype)
            h = x + self.pe(features)
            padding = ~mask
            for block in self.blocks:
                h = block(h, padding)
            batch, length, _ = h.shape
            head_dim = self.dim // self.heads
            keys = self.readout_key(self.readout_norm(h)).view(batch, length, self.heads, head_dim)
            scores = torch.einsum("blhd,hd->bhl", keys, self.query) / math.sqrt(head_dim)
            weights = scores.masked_fill(padding.unsqueeze(1), -math.inf).softmax(dim=-1)
            values = h.view(batch, length, self.heads, head_dim)
            return torch.einsum("bhl,blhd->bhd", weights, values).reshape(batch, self.dim)

    SlicePooling.__module__ = __name__
    SlicePooling.__qualname__ = "SlicePooling"
    return SlicePooling
