"""Drafter names -> drafters, as ``encoders._registry`` does for models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radsearch.drafting.base import Drafter
from radsearch.errors import RadsearchError

DEFAULT_DRAFTER = "retrieval"


@dataclass(frozen=True)
class DrafterInfo:
    name: str
    description: str
    default: bool


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[], Drafter]
    description: str


_ENTRIES: dict[str, _Entry] = {}


def register_drafter(name: str, *, description: str) -> Callable[[Callable[[], Drafter]], Callable[[], Drafter]]:
    """Register ``factory() -> Drafter`` under ``name`` (a decorator)."""

    def add(factory: Callable[[], Drafter]) -> Callable[[], Drafter]:
        if name in _ENTRIES:
            raise ValueError(f"drafter {name!r} is already registered")
        _ENTRIES[name] = _Entry(factory, description)
        return factory

    return add


def _load_builtins() -> None:
    # Importing registers them; done on first use so that the registry module stays light.
    from radsearch.drafting import adapter_entry, baselines, retrieval_drafter  # noqa: F401


def list_drafters() -> list[DrafterInfo]:
    _load_builtins()
    return [DrafterInfo(name, entry.description, name == DEFAULT_DRAFTER)
            for name, entry in sorted(_ENTRIES.items())]


def create_drafter(name: str = DEFAULT_DRAFTER) -> Drafter:
    """A registered drafter by name, or a trained drafter run (``radsearch train drafter --out``) by
    the path of its folder or weights file; a registered name always wins."""
    _load_builtins()
    entry = _ENTRIES.get(name)
    if entry is None and Path(name).exists():
        from radsearch.drafting.adapter_entry import load_trained

        return load_trained(name)
    if entry is None:
        raise RadsearchError(f"unknown drafter {name!r}; available: {', '.join(sorted(_ENTRIES))}")
    return entry.factory()
