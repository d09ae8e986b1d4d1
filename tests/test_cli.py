"""The CLI is a thin layer: JSON output keys, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsearch.cli import app
from tests.corpus import build_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shared_data) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("cli") / "studies"
    info = build_corpus(root, shared_data)
    index = root.parent / "index"
    result = runner.invoke(app, ["index", str(root), "--index", str(index), "--model", "hashing-tiny",
                                 "--workers", "0", "--reports", str(info["reports_csv"])])
    assert result.exit_code == 0, result.output
    return root, index, info


def test_index_prints_a_summary_and_one_line_per_failure(indexed):
    root, index, info = indexed
    result = runner.invoke(app, ["index", str(root), "--index", str(index), "--model",
                                 "hashing-tiny", "--workers", "0"])
    assert result.exit_code == 0
    assert "indexed 0," in result.output and "unchanged" in result.output


def test_stats_json_has_the_documented_keys(indexed):
    _, index, _ = indexed
    result = runner.invoke(app, ["stats", "--index", str(index), "--json"])
    data = json.loads(result.output)
    for key in ("studies", "series", "images", "reports", "sentences", "failed"):
        assert isinstance(data[key], int)
    assert data["failed"] == 3


def test_search_json_groups_results_by_study(indexed):
    _, index, info = indexed
    text = info["medpix"][0]["text"]
    result = runner.invoke(app, ["search", text, "--index", str(index), "--in", "reports",
                                 "-k", "2", "--json"])
    data = json.loads(result.output)
    assert len(data["hits"]) == 2
    assert data["hits"][0]["study"].endswith(info["medpix"][0]["image_path"])
    assert {"score", "images", "modalities", "study_date", "sentences"} <= set(data["hits"][0])
    assert data["hits"][0]["score"] >= data["hits"][1]["score"]


def test_similar_and_show_accept_files_and_keys(indexed):
    root, index, info = indexed
    image = root / "medpix" / info["medpix"][1]["image_path"]
    result = runner.invoke(app, ["similar", str(image), "--index", str(index), "--json", "-k", "3"])
    hits = json.loads(result.output)["hits"]
    assert len(hits) == 3
    shown = runner.invoke(app, ["show", hits[0]["study"], "--index", str(index), "--json"])
    assert json.loads(shown.output)["study"] == hits[0]["study"]


def test_models_lists_the_default(indexed):
    data = json.loads(runner.invoke(app, ["models", "--json"]).output)
    assert any(model["default"] and model["name"] == "radclip-mini" for model in data)


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "stats", "--index", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_failure_is_one_line_even_for_a_file_name_with_a_newline(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "bad\nname.dcm").write_bytes(b"\x00" * 10)
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "index", str(folder), "--index", str(tmp_path / "i"),
         "--model", "hashing-tiny", "--workers", "0"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "failed" in line]
    assert lines == [f"failed  {folder}/bad\\nname.dcm: not a DICOM, PNG or JPEG file"]


def test_loading_the_default_model_prints_no_progress_bar():
    image = Path(__file__).resolve().parents[1] / "radsearch/sample_studies/images/head_ct_01.jpg"
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "classify", str(image), "--labels", "CT, MRI", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "radclip-mini"
    assert "Loading weights" not in result.stderr and "it/s" not in result.stderr
