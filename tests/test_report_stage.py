"""CSV reports find their studies under a symlinked folder too."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from radsearch.indexer import index_folder


def test_csv_reports_match_images_under_a_symlinked_folder(tmp_path: Path) -> None:
    # The CSV's paths resolve to the real files; the indexed paths go through the link.
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    for name, value in (("a", 40), ("b", 200)):
        Image.fromarray(np.full((32, 32), value, dtype=np.uint8)).save(real / "images" / f"{name}.png")
    csv = real / "reports.csv"
    csv.write_text("image_path,text\nimages/a.png,Left lower lobe nodule.\n"
                   "images/b.png,No acute findings.\n", encoding="utf-8")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(real, target_is_directory=True)

    summary = index_folder(root, index=tmp_path / "index", reports=csv, model="hashing-tiny",
                           workers=0)

    assert summary.reports == 2 and summary.warnings == []
    with sqlite3.connect(tmp_path / "index" / "catalog.sqlite") as conn:
        rows = conn.execute(
            "SELECT studies.key, reports.text FROM reports JOIN studies ON studies.id = reports.study_id"
        ).fetchall()
    assert sorted(rows) == [
        (f"file:{root / 'linked/images/a.png'}", "Left lower lobe nodule."),
        (f"file:{root / 'linked/images/b.png'}", "No acute findings."),
    ]
