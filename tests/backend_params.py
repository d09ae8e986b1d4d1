"""The back ends a test runs against, each skipped with a reason when its package is missing."""

from __future__ import annotations

import importlib.util

import pytest


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed")


FAISS = pytest.param("faiss", id="faiss")
QDRANT_EDGE = pytest.param("qdrant-edge", id="qdrant-edge", marks=needs("qdrant_edge"))
QDRANT_LOCAL = pytest.param("qdrant", id="qdrant-local", marks=needs("qdrant_client"))
ALL_BACKENDS = [FAISS, QDRANT_EDGE, QDRANT_LOCAL]
