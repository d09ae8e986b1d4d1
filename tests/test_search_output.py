"""What search prints: a filter nothing matches names the values the index holds; image results
carry their study's report; the table fits 80 columns without repeating a path; stats counts
studies by modality and body part."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from radsearch import Filters, label_query, search, similar, stats
from radsearch.cli import app
from radsearch.indexer import index_folder

TINY = "hashing-tiny"
REPORT = ("The prostate is enlarged with several calcifications noted within, and no dominant "
          "prostate mass is evident on this axial image through the pelvis at the level of the "
          "bladder base.")


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("output")
    images = root / "studies" / "a_long_folder_name_for_the_images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = [("pelvis_axial_01.png", "CT", "Axial", "Pelvis", "2019-05-01"),
            ("brain_coronal_02.png", "MRI", "Coronal", "Head", "2021-07-09")]
    for name, *_ in rows:
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(images / name)
    manifest = root / "studies" / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["image_path", "text", "modality", "view", "body_part", "study_date"])
        for name, modality, view, body_part, date in rows:
            out.writerow([f"{images.name}/{name}", REPORT, modality, view, body_part, date])
    index = root / "index"
    index_folder(root / "studies", index=index, reports=manifest, workers=0, model=TINY)
    return index


def test_a_filter_value_no_study_has_names_the_values_held(index: Path) -> None:
    results = search("mass", index=index, filters=Filters(view="sagital", modality="MRI"))
    assert results.hits == []
    assert results.unmatched_filters == {"view": ["AXIAL", "CORONAL"]}  # MRI matches a study
    nothing = similar(next(index.parent.glob("studies/*/*.png")), index=index,
                      filters=Filters(body_part="KNEE", date_from="2030-01-01"))
    assert nothing.unmatched_filters == {"body_part": ["HEAD", "PELVIS"],
                                         "study_date": ["2019-05-01", "2021-07-09"]}
    labelled = label_query("mass", min_prob=0.01, index=index, filters=Filters(view="sagital"))
    assert labelled.hits == [] and labelled.unmatched_filters == {"view": ["AXIAL", "CORONAL"]}
    result = CliRunner().invoke(app, ["search", "mass", "--index", str(index), "--view", "sagital"])
    assert result.exit_code == 0
    assert "no matching studies\nno study has that --view; the index holds: AXIAL, CORONAL\n" \
        in result.output


def test_image_results_carry_the_start_of_the_study_report(index: Path) -> None:
    hits = search("mass", index=index, k=2).hits
    assert len(hits) == 2
    for hit in hits:
        assert hit.snippet is not None and REPORT.startswith(hit.snippet.rstrip("…"))
        assert len(hit.snippet) <= 160


def test_the_table_names_each_path_once_and_fits_80_columns(index: Path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(index.parent)
    result = CliRunner().invoke(app, ["search", "mass", "--index", str(index), "-k", "2"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in ("pelvis_axial_01.png", "brain_coronal_02.png"):
        assert sum(name in line for line in lines) == 1  # whole, on one line, once
    assert "The prostate is enlarged" in result.output


def test_stats_counts_studies_by_modality_and_body_part(index: Path) -> None:
    data = stats(index=index)
    assert data["by_modality"] == {"CT": 1, "MR": 1}
    assert data["by_body_part"] == {"HEAD": 1, "PELVIS": 1}
    shown = json.loads(CliRunner().invoke(app, ["stats", "--index", str(index), "--json"]).output)
    assert shown["by_modality"] == data["by_modality"]
    table = CliRunner().invoke(app, ["stats", "--index", str(index)]).output
    assert "modality   CT 1, MR 1 (studies)" in table and "body part  HEAD 1, PELVIS 1" in table
