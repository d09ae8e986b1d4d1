"""How every command prints: JSON on stdout for ``--json``, rich text for people otherwise.

Results reach the printer as the library returns them (an object with ``to_dict()``, a dataclass,
a dict or a list of those); a command passes the person-facing printer and never writes JSON itself.
Progress and warnings go to stderr, so that ``--json`` output stays clean on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console

# No emoji codes: ":name:" in a file name or a report is text, not a picture.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

T = TypeVar("T")


def emit(result: T, json_output: bool, human: Callable[[T], None]) -> None:
    """Print ``result`` as JSON when asked, else through ``human`` (the command's rich printer)."""
    if json_output:
        print_json(result)
    else:
        human(result)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def _jsonable(data: Any) -> Any:
    """Result objects as plain JSON values: ``to_dict()`` where they have one, dataclass fields else."""
    if hasattr(data, "to_dict"):
        return data.to_dict()
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.asdict(data)
    if isinstance(data, (list, tuple)):
        return [_jsonable(item) for item in data]
    return data


def say(text: str, **style: Any) -> None:
    """One line for people, printed as written: file names and report text are never markup, and a
    long line is not wrapped (so that it can be read by grep)."""
    out.print(text, highlight=False, markup=False, soft_wrap=True, **style)


def log(text: str) -> None:
    """Progress and notes, on stderr."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def one_line(text: str) -> str:
    """Escape control characters (a newline in a file name must not break a one-line report) and
    markup, for lines printed with rich markup."""
    from rich.markup import escape

    return escape("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text))
