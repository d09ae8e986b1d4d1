"""Whether the index run was started from the top level of a script without the
``if __name__ == "__main__":`` guard.

Worker processes are started with the "spawn" method, which runs the main script again in each
worker: an unguarded script would start the whole run again there, and the workers fail. Such a
run decodes in its own process instead (``pipeline.index_folder``), so the README's snippet works
as a script either way.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache


def called_from_unguarded_script() -> bool:
    """True when the calling chain starts at a line of the main script's top level that is not
    inside an ``if __name__ == "__main__":`` block."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return False  # an interactive session or `python -c`: nothing is run again
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return False  # `python -m package`: multiprocessing does not run a package's __main__ again
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            return not _inside_main_guard(path, frame.f_lineno)
        frame = frame.f_back
    return False


@lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """The line ranges of the script's top-level ``if __name__ == "__main__":`` blocks."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ()
    return tuple((node.lineno, node.end_lineno or node.lineno) for node in tree.body
                 if isinstance(node, ast.If) and _is_main_test(node.test))


def _inside_main_guard(path: str, line: int) -> bool:
    # A script that cannot be read counts as unguarded: decoding in-process is slower, never wrong.
    return any(first <= line <= last for first, last in _guarded_lines(path))


def _is_main_test(test: ast.expr) -> bool:
    if not isinstance(test, ast.Compare) or len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    values = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]
