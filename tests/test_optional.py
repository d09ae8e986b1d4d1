"""Optional parts: one availability check, one message shape, and `radsearch doctor`."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from typer.testing import CliRunner

from radsearch.cli import app
from radsearch.errors import RadsearchError
from radsearch.optional import FEATURES, MissingDependency, feature, require

runner = CliRunner()
SHAPE = re.compile(r"^.+ needs [\w.-]+( and [\w.-]+)?: pip install 'radsearch\[\w+\]'( \(.+\))?$")


def _missing(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Report ``modules`` as not installed (they may well be)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in modules else real(name, *args))


@pytest.mark.parametrize("name", list(FEATURES))
def test_every_feature_says_what_is_missing_in_one_shape(name, monkeypatch) -> None:
    wanted = FEATURES[name]
    _missing(monkeypatch, *(package.module for package in wanted.packages))
    assert not wanted.is_available()
    assert wanted.missing() == [package.name for package in wanted.packages]
    assert SHAPE.match(wanted.message()), wanted.message()
    assert f"pip install 'radsearch[{wanted.extra}]'" in wanted.message()
    with pytest.raises(MissingDependency) as raised:
        require(name)
    assert isinstance(raised.value, RadsearchError) and str(raised.value) == wanted.message()


def test_the_message_names_only_the_missing_packages(monkeypatch) -> None:
    _missing(monkeypatch, "onnx")
    onnx = feature("onnx")
    assert onnx.missing() == ["onnx"]
    assert onnx.message() == "the ONNX text runtime needs onnx: pip install 'radsearch[onnx]'"
    _missing(monkeypatch, "onnx", "onnxruntime")
    assert onnx.message() == ("the ONNX text runtime needs onnxruntime and onnx: "
                              "pip install 'radsearch[onnx]'")


def test_faiss_names_the_gpu_extra_too(monkeypatch) -> None:
    _missing(monkeypatch, "faiss")
    assert feature("faiss").message() == ("the faiss back end needs faiss-cpu: pip install "
                                          "'radsearch[cpu]' (or 'radsearch[gpu]' on a CUDA machine)")


def test_an_installed_feature_raises_nothing(monkeypatch) -> None:
    # Every module found: what is checked is find_spec's answer, not the machine's packages.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())
    for wanted in FEATURES.values():
        assert wanted.is_available() and wanted.missing() == []
        wanted.require()


def test_a_missing_pacs_package_stops_a_pacs_source_in_that_shape(monkeypatch) -> None:
    from radsearch.indexer.dimse import DimseSource

    _missing(monkeypatch, "pynetdicom")
    with pytest.raises(RadsearchError, match=r"^a DIMSE source needs pynetdicom: pip install "
                                             r"'radsearch\[pacs\]'$"):
        DimseSource("dimse://ORTHANC@localhost:4242")


def test_models_says_how_to_get_open_clip_models_when_it_is_missing(monkeypatch) -> None:
    _missing(monkeypatch, "open_clip")
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert ("an open_clip: or hf-hub: model needs open_clip_torch: pip install 'radsearch[clip]'"
            in result.output)


def test_doctor_lists_a_missing_extra_with_what_it_would_enable(monkeypatch, tmp_path) -> None:
    _missing(monkeypatch, "streamlit")
    result = runner.invoke(app, ["doctor", "--index", str(tmp_path / "none"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    statuses = {status["name"]: status for status in data["features"]}
    assert set(statuses) == set(FEATURES)
    ui = statuses["ui"]
    assert ui["available"] is False and ui["packages"] == {"streamlit": None}
    assert ui["install"] == "the explorer needs streamlit: pip install 'radsearch[ui]'"
    assert ui["enables"].startswith("radsearch ui")
    assert data["index"] == {"path": str(tmp_path / "none"), "exists": False, "backend": None,
                             "model": None, "dim": None, "studies": None, "error": None}
    assert data["core"]["typer"]  # a version string for each package every install has

    text = runner.invoke(app, ["doctor", "--index", str(tmp_path / "none")]).output
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("missing    ui"))
    assert lines[at].endswith("the explorer needs streamlit: pip install 'radsearch[ui]'")
    assert lines[at + 1].strip().startswith("would enable radsearch ui")
    assert f"index      {tmp_path / 'none'}: none yet" in text


def test_doctor_describes_an_index_from_its_catalog(tmp_path) -> None:
    from pathlib import Path

    from radsearch.indexer import index_folder

    samples = Path(__file__).resolve().parents[1] / "radsearch/sample_studies"
    index_folder(samples, index=tmp_path / "index", model="hashing-tiny", workers=0)
    data = json.loads(runner.invoke(app, ["doctor", "--index", str(tmp_path / "index"),
                                          "--json"]).stdout)
    assert data["index"]["exists"] and data["index"]["model"] == "hashing-tiny"
    assert data["index"]["backend"] == "faiss" and data["index"]["studies"] > 0
    text = runner.invoke(app, ["doctor", "--index", str(tmp_path / "index")]).output
    assert re.search(r"index      .+: \d+ studies, faiss back end, model hashing-tiny \(\d+-d\)", text)


def test_doctor_reports_a_damaged_index_instead_of_failing(tmp_path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    (index / "catalog.sqlite").write_bytes(b"not a database" * 100)
    result = runner.invoke(app, ["doctor", "--index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)["index"]
    assert status["exists"] and status["error"] and status["model"] is None
