"""index_source: a folder's options refused for a PACS and a PACS's for a folder, before any work."""

from __future__ import annotations

import pytest

from radsearch.errors import RadsearchError
from radsearch.indexer.sources import index_source


@pytest.mark.parametrize("option", [{"reports": "reports.csv"}, {"group_by": "case"},
                                    {"shard": "1/2"}])
def test_folder_options_are_refused_for_a_pacs(option, tmp_path) -> None:
    with pytest.raises(RadsearchError, match="are for folders, not a PACS"):
        index_source("dimse://PACS@127.0.0.1:1", index=tmp_path / "index", **option)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("option", [{"since": "2020-01-01"}, {"modality": "CT"},
                                    {"studies": ["1.2.3"]}])
def test_pacs_options_are_refused_for_a_folder(option, tmp_path) -> None:
    with pytest.raises(RadsearchError, match="select studies of a PACS"):
        index_source(tmp_path, index=tmp_path / "index", **option)
    assert not (tmp_path / "index").exists()


def test_a_folder_is_indexed_with_its_own_options(tmp_path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    from PIL import Image

    Image.new("L", (32, 32), 128).save(folder / "a.png")
    (folder / "reports.csv").write_text("image_path,text\na.png,normal chest\n")
    summary = index_source(folder, reports=folder / "reports.csv", index=tmp_path / "index",
                           model="hashing-tiny", workers=0)
    assert summary.indexed >= 1 and summary.reports == 1
