"""The CLI's shape: every command comes from one table, loaded only when it runs; --help is light."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsearch.cli import COMMANDS, GROUPS, app
from radsearch.lazy_commands import Entry, LazyGroup

runner = CliRunner()
HEAVY = ("torch", "faiss", "numpy", "qdrant_client", "qdrant_edge", "pydicom", "PIL", "streamlit",
         "transformers", "onnxruntime", "open_clip", "nibabel")


def test_help_lists_every_command_without_importing_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from radsearch.cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='radsearch')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    help_text, _, modules = result.stdout.rpartition("MODULES ")
    loaded = {name.split(".")[0] for name in modules.split()}
    assert not loaded & set(HEAVY)
    # Nor any command's module: the listing comes from the table.
    assert not {"radsearch.training", "radsearch.drafting", "radsearch.indexer"} & set(modules.split())
    listed = {line.split()[0] for line in help_text.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {path.split()[0] for path in COMMANDS}


def test_no_command_module_imports_torch_or_a_back_end_at_load() -> None:
    # A command's own --help loads its module: torch, FAISS, Qdrant and Streamlit wait for the run.
    modules = sorted({entry.target.partition(":")[0] for entry in COMMANDS.values()})
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not {"torch", "faiss", "qdrant_client", "qdrant_edge", "streamlit", "transformers",
                "onnxruntime", "open_clip"} & set(result.stdout.split())


@pytest.mark.parametrize("path", list(COMMANDS))
def test_every_table_entry_loads_and_shows_its_help(path: str) -> None:
    result = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "80"},
                           prog_name="radsearch")
    assert result.exit_code == 0, result.output
    assert f"Usage: radsearch {path} " in " ".join(result.output.split())


def test_a_sub_group_lists_its_commands_in_table_order() -> None:
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()]
    assert listed == [path.split()[1] for path in COMMANDS if path.startswith("eval ")]


class _Probe(LazyGroup):
    table = {
        "later": Entry("radsearch_no_such_module:run", "Listed, but its module does not exist."),
        "tools list": Entry("radsearch.cli:models", "The models, under another name."),
    }
    groups = {"tools": "A sub-group made from a path with a space."}


def _probe_app():
    import typer

    probe = typer.Typer(cls=_Probe, rich_markup_mode=None, add_completion=False)

    @probe.callback()
    def _root() -> None:
        """Probe."""

    return probe


def test_a_new_entry_is_listed_before_its_module_is_imported_and_runs_once_it_is() -> None:
    probe = _probe_app()
    listed = runner.invoke(probe, ["--help"], env={"COLUMNS": "100"})
    assert listed.exit_code == 0, listed.output
    assert "later  Listed, but its module does not exist." in listed.output
    assert "tools  A sub-group made from a path with a space." in listed.output
    ran = runner.invoke(probe, ["tools", "list", "--json"])
    assert ran.exit_code == 0, ran.output
    assert any(model["default"] for model in json.loads(ran.stdout))
    failed = runner.invoke(probe, ["later"])
    assert isinstance(failed.exception, ModuleNotFoundError)


def test_an_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["serach", "x"])
    assert result.exit_code == 2
    assert "No such command 'serach'" in result.output


def test_every_command_the_readme_shows_is_in_the_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = set()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            words = line.split()
            if words[:1] == ["radsearch"] and len(words) > 1:
                shown.add(" ".join(words[1:3] if words[1] in GROUPS else words[1:2]))
    assert {"index", "search", "doctor", "train clip", "eval report"} <= shown
    assert shown <= set(COMMANDS), shown - set(COMMANDS)
