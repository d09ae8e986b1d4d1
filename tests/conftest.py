"""Test isolation: a temporary home, no index from the environment, no model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports huggingface_hub: a hub lookup would otherwise retry for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One derived-data cache (the exported text graph) and one folder of index hash keys for
    the whole run, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RADSEARCH_CACHE", str(cache))
        # Hash keys of indexes made by module-wide fixtures must outlive each test's own HOME.
        patch.setenv("RADSEARCH_KEY_DIR", str(tmp_path_factory.mktemp("keys")))
        patch.delenv("RADSEARCH_KEY", raising=False)
        patch.delenv("RADSEARCH_KEY_FILE", raising=False)
        patch.delenv("RADSEARCH_TEXT_RUNTIME", raising=False)
        yield cache


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RADSEARCH_INDEX", raising=False)
    # No PACS link template or cache of the user's: a link would query a PACS, a cache fill it.
    for variable in ("RADSEARCH_PACS_LINK", "RADSEARCH_PACS_CACHE", "RADSEARCH_PACS_CACHE_MB",
                     "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA
