"""How lists name studies (radsearch.study_refs.display_name), and that `show` takes the name back."""

from __future__ import annotations

from pathlib import Path

import pytest

import radsearch
from radsearch.indexer import index_folder
from radsearch.study_refs import display_name, display_path

SAMPLES = Path(__file__).resolve().parents[1] / "radsearch/sample_studies"


def test_folder_and_file_studies_are_named_by_their_path(tmp_path) -> None:
    inside = tmp_path / "studies" / "a.png"
    assert display_name(f"file:{inside}", cwd=tmp_path) == "studies/a.png"
    assert display_name(f"dir:{tmp_path / 'studies'}", cwd=tmp_path) == "studies"
    assert display_name("file:/elsewhere/b.png", cwd=tmp_path) == "/elsewhere/b.png"
    assert display_path("dicomweb://host/studies/1", cwd=tmp_path) == "dicomweb://host/studies/1"


def test_hashed_keys_are_shortened_to_a_prefix() -> None:
    assert display_name("0123456789abcdef0123") == "0123456789ab"
    assert display_name("group:0123456789abcdef0123") == "group:0123456789ab"


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("names") / "index"
    summary = index_folder(SAMPLES, index=index, model="hashing-tiny", workers=0)
    assert summary.failed == 0
    return index


def test_show_finds_every_listed_study_by_its_shown_name(sample_index) -> None:
    hits = radsearch.search("chest", index=sample_index, k=100, target="images").hits
    assert len({hit.study.partition(":")[0] for hit in hits}) >= 2  # hashed and path keys both
    for hit in hits:
        shown = display_name(hit.study)
        assert len(shown) < len(hit.study) or hit.study.startswith(("file:", "dir:"))
        assert radsearch.show(shown, index=sample_index).study == hit.study
