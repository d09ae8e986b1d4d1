"""What an index run says about its root: a missing one is refused before anything is opened, an
empty one says nothing was found, and files that are neither images nor reports are counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder

TINY = "hashing-tiny"


def test_a_missing_root_is_an_error_and_nothing_is_recorded(tmp_path: Path) -> None:
    index = tmp_path / "index"
    with pytest.raises(RadsearchError, match="studeis: no such file or folder"):
        index_folder(tmp_path / "studeis", index=index, workers=0, model=TINY)
    assert not index.exists()


def test_the_cli_exits_non_zero_on_a_missing_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "index", str(tmp_path / "studeis"), "--index",
         str(tmp_path / "index"), "--model", TINY, "--workers", "0"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'studeis'}: no such file or folder (nothing was " \
                            "indexed)\n"
    assert not (tmp_path / "index").exists()


def test_an_empty_folder_says_nothing_was_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    summary = index_folder(tmp_path / "empty", index=tmp_path / "index", workers=0, model=TINY)
    assert summary.indexed == summary.failed == 0
    assert summary.warnings == [f"{tmp_path / 'empty'}: nothing to index was found there (no "
                                "DICOM, PNG, JPEG or report file)"]


def test_files_neither_images_nor_reports_are_counted_by_kind(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    root.mkdir()
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(root / "a.png")
    for name in ("dwi.bval", "dwi.bvec", "notes.txt", "archive.tar.gz", "Makefile"):
        (root / name).write_text("0 1000 1000\n")
    summary = index_folder(root, index=tmp_path / "index", workers=0, model=TINY)
    assert summary.indexed == 1
    assert summary.skipped_kinds == {".bval": 1, ".bvec": 1, ".txt": 1, ".tar.gz": 1,
                                     "no extension": 1}
    assert summary.skipped == 0  # what the catalog records as skipped: they are not recorded
    assert not summary.warnings
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "index", str(root), "--index", str(tmp_path / "i2"),
         "--model", TINY, "--workers", "0"], capture_output=True, text=True)
    assert "skipped 0 + 5 neither images nor reports (1 .bval, 1 .bvec, 1 .tar.gz, 1 .txt, " \
           "1 no extension)" in result.stdout
