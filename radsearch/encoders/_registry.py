"""Name -> factory registry of encoders, with one cached instance per (name, device)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from radsearch.encoders.base import Encoder
from radsearch.errors import RadsearchError

DEFAULT_MODEL = "radclip-mini"

Factory = Callable[[str], Encoder]


class UnknownModelError(RadsearchError, ValueError):
    """No model of that name (a ValueError too, for callers that catch that)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dim: int
    description: str
    default: bool


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    dim: int
    description: str


_ENTRIES: dict[str, _Entry] = {}
_INSTANCES: dict[tuple[str, str], Encoder] = {}
_LOCK = threading.Lock()


def register_model(
    name: str, factory: Factory | None = None, *, dim: int, description: str
) -> Callable[[Factory], Factory] | Factory:
    """Register ``factory(device) -> Encoder`` under ``name``; usable as a decorator."""

    def add(factory: Factory) -> Factory:
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} is already registered")
        _ENTRIES[name] = _Entry(factory, dim, description)
        return factory

    return add if factory is None else add(factory)


def list_models() -> list[ModelInfo]:
    return [
        ModelInfo(name, entry.dim, entry.description, name == DEFAULT_MODEL)
        for name, entry in sorted(_ENTRIES.items())
    ]


def create_model(name: str = DEFAULT_MODEL, *, device: str = "cpu") -> Encoder:
    """The encoder ``name`` on ``device``; built once per process and reused."""
    entry = _ENTRIES.get(name)
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(sorted(_ENTRIES))}")
    key = (name, device)
    # One lock for all builds: two threads asking at once must not load a model twice.
    with _LOCK:
        if key not in _INSTANCES:
            encoder = entry.factory(device)
            if encoder.dim != entry.dim:
                raise RuntimeError(f"model {name!r} built with dim {encoder.dim}, registered {entry.dim}")
            _INSTANCES[key] = encoder
        return _INSTANCES[key]
