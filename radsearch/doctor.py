"""`radsearch doctor`: what is installed, what each missing extra would enable, and the index.

Nothing heavy is imported to find this out: packages are looked up with ``find_spec`` and their
versions read from their metadata, and the index is described from its catalog.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radsearch.errors import RadsearchError
from radsearch.optional import FEATURES, Feature


@dataclass
class FeatureStatus:
    name: str
    extra: str
    available: bool
    packages: dict[str, str | None]  # pip name -> installed version (None: not installed)
    enables: str
    install: str | None  # the one-line message with the pip command, when something is missing


@dataclass
class IndexStatus:
    path: str
    exists: bool
    backend: str | None = None
    model: str | None = None
    dim: int | None = None
    studies: int | None = None
    error: str | None = None  # why it could not be read


@dataclass
class Diagnosis:
    radsearch: str
    python: str
    platform: str
    core: dict[str, str | None]  # the packages every install has, with their versions
    features: list[FeatureStatus] = field(default_factory=list)
    index: IndexStatus | None = None
    java: str | None = None  # METEOR in `radsearch eval report` runs on Java

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose(index: Path | None = None) -> Diagnosis:
    """The installation and the index (``index``, else the default one), as `radsearch doctor`
    prints them."""
    return Diagnosis(
        radsearch=_version("radsearch") or "not installed (run from a source tree)",
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        core={name: _version(name) for name in _core_requirements()},
        features=[feature_status(feature) for feature in FEATURES.values()],
        index=index_status(index),
        java=shutil.which("java"),
    )


def feature_status(feature: Feature) -> FeatureStatus:
    available = feature.is_available()
    return FeatureStatus(
        name=feature.name, extra=feature.extra, available=available,
        packages={package.name: package.version() if package.installed() else None
                  for package in feature.packages},
        enables=feature.enables, install=None if available else feature.message())


def index_status(index: Path | None = None) -> IndexStatus:
    from radsearch.index_handle import resolve_index_path
    from radsearch.storage.store import CATALOG_FILE

    path = resolve_index_path(index)
    if not (path / CATALOG_FILE).exists():
        return IndexStatus(str(path), exists=False)
    from radsearch.studies import stats

    try:
        data = stats(index=path)
    except (RadsearchError, sqlite3.DatabaseError, OSError) as error:  # doctor reports, not fails
        return IndexStatus(str(path), exists=True, error=str(error))
    return IndexStatus(str(path), exists=True, backend=data["backend"], model=data["model"]["name"],
                       dim=data["model"]["dim"], studies=data["studies"])


def _core_requirements() -> list[str]:
    """The distribution's unconditional requirements, by name."""
    try:
        requirements = importlib.metadata.requires("radsearch") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = [re.match(r"[A-Za-z0-9._-]+", requirement) for requirement in requirements
             if "extra ==" not in requirement]
    return [name.group(0) for name in names if name]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
