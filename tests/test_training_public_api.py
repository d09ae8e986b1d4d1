"""training/ builds on the encoders' public API only: no private encoder module is imported there,
and radclip-mini is built by ``create_model``, never from its class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[1] / "training"
ENCODERS = "radsearch.encoders"
MODEL_CLASS = "radsearch.encoders.radclip_mini"


def _imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in ``path``, ``from X import y`` giving ``X.y`` too
    (``y`` may be a submodule); relative imports resolved as if ``root`` were radsearch.training."""
    package = ["radsearch", "training", *path.relative_to(root).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def private_encoder_imports(path: Path, root: Path = TRAINING) -> list[str]:
    """``path:line module`` for each private encoder module (a ``_`` part under radsearch.encoders)."""
    return [
        f"{path.name}:{line} {module}"
        for line, module in _imported_modules(path, root)
        if module.startswith(ENCODERS + ".")
        and any(part.startswith("_") for part in module.removeprefix(ENCODERS + ".").split("."))
    ]


def test_no_training_module_imports_a_private_encoder_module() -> None:
    modules = sorted(TRAINING.rglob("*.py"))
    assert len(modules) > 10  # the check looks where the training code is
    offenders = [hit for path in modules for hit in private_encoder_imports(path)]
    assert offenders == []


def test_no_training_module_builds_radclip_mini_from_its_class() -> None:
    offenders = [
        f"{path.name}:{line} {module}"
        for path in sorted(TRAINING.rglob("*.py"))
        for line, module in _imported_modules(path, TRAINING)
        if module == MODEL_CLASS or module.startswith(MODEL_CLASS + ".")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "private"),
    [
        ("from radsearch.encoders import _minilm\n", True),
        ("import radsearch.encoders._efficientnet as e\n", True),
        ("from radsearch.encoders._radclip_weights import LOGIT_SCALE\n", True),
        ("from ..encoders._checkpoint import save_checkpoint\n", True),
        ("def f():\n    from radsearch.encoders import towers, _hub\n", True),
        ("from radsearch.encoders import create_model, towers\n", False),
        ("from radsearch.encoders.weights import save_weights\n", False),
        ("from radsearch.training._cache import x\n", False),
    ],
)
def test_the_check_sees_every_import_form(tmp_path: Path, source: str, private: bool) -> None:
    module = tmp_path / "probe.py"
    module.write_text(source, encoding="utf-8")
    assert bool(private_encoder_imports(module, tmp_path)) is private
