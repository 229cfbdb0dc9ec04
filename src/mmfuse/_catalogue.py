"""The built-in fusion strategies' names and summaries, read from their source files.

``mmfuse list`` answers from here without importing torch: each module of
:mod:`mmfuse.fusions` is parsed (not imported) and every class decorated with
``@register_fusion("<name>")`` contributes its name and the first line of its
docstring. A test checks this against the live registry, so the two cannot drift.
Strategies registered at run time by user code are, by nature, only in the live
registry (``mmfuse.list_fusions()``).
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["builtin_fusions"]

_FUSIONS = Path(__file__).with_name("fusions")


def _registered_name(node: ast.ClassDef) -> str | None:
    for dec in node.decorator_list:
        if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == "register_fusion"
                and dec.args and isinstance(dec.args[0], ast.Constant) and isinstance(dec.args[0].value, str)):
            return dec.args[0].value
    return None


def builtin_fusions() -> dict[str, str]:
    """``{name: first line of the class docstring}`` for every built-in strategy, sorted by name."""
    found: dict[str, str] = {}
    for path in sorted(_FUSIONS.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and (name := _registered_name(node)) is not None:
                doc = (ast.get_docstring(node) or "").strip().splitlines()
                found[name] = doc[0] if doc else ""
    return dict(sorted(found.items()))
