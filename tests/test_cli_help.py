"""Help and titles read right at 80 columns: flags without a type, defaults shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsearch.cli import app

runner = CliRunner()
COMMANDS = [["index"], ["search"], ["similar"], ["show"], ["stats"], ["remove"], ["classify"],
            ["demo"], ["models"], ["ui"], ["eval", "retrieval"], ["eval", "zeroshot"],
            ["train", "clip"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "radsearch")
def test_help_shows_flags_without_a_type(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_help_shows_the_default_index() -> None:
    result = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "80"})
    text = " ".join(result.output.split())
    assert "--index <path> Index directory [default: $RADSEARCH_INDEX or ~/.radsearch/index]" in text
    assert "[default: the index's recorded one, else faiss]" in text


def test_the_classify_title_is_one_line_at_80_columns() -> None:
    image = Path(__file__).resolve().parents[1] / "radsearch/sample_studies/images/head_ct_01.jpg"
    result = runner.invoke(app, ["classify", str(image), "--model", "hashing-tiny", "--label-set",
                                 "chexpert"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "chexpert (independent probabilities) - hashing-tiny"
