"""The package's lazily exported names stay the functions and classes they name, whatever is imported."""

from __future__ import annotations

import json
import subprocess
import sys

# In a fresh interpreter: this process has already imported (and cached) much of the package.
_CHECK = r"""
import importlib, json, pkgutil, types
import radsearch

first = {name: getattr(radsearch, name) for name in radsearch._EXPORTS}  # first use of each
for info in pkgutil.walk_packages(radsearch.__path__, "radsearch."):
    # Scripts, not modules to import: the Streamlit app and `python -m` entry points.
    if info.name != "radsearch.ui.app" and not info.name.endswith("__main__"):
        importlib.import_module(info.name)
wrong = {}
for name, module in radsearch._EXPORTS.items():
    expected = getattr(importlib.import_module(module), name)
    for when, value in (("first", first[name]), ("after", getattr(radsearch, name)),
                        ("again", getattr(radsearch, name))):
        if isinstance(value, types.ModuleType) or value is not expected:
            wrong[f"{name} ({when})"] = repr(value)
print(json.dumps(wrong))
"""


def test_every_export_is_its_object_after_every_submodule_is_imported() -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {}


def test_a_second_label_query_lookup_is_still_the_function() -> None:
    import radsearch
    from radsearch.label_search import label_query

    assert radsearch.label_query is label_query
    assert radsearch.label_query is label_query
