"""The base layer (toolkit/base) is standard library only: every layer may import it, and a host
that runs nothing but `ember daemon status` never pays for a third-party import through it.
The layers above it are import-linter's contracts (pyproject.toml), run by scripts/test."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import toolkit

BASE = Path(toolkit.__file__).parent / "base"
ALLOWED_OWN = ("toolkit.base", "toolkit.errors")


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def test_the_base_layer_imports_only_the_standard_library_and_itself() -> None:
    modules = sorted(BASE.glob("*.py"))
    assert len(modules) >= 5  # files, pidfile, procs, notify, envfile
    wrong = {}
    for path in modules:
        for name in imports_of(path):
            top = name.partition(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if name == "toolkit" or name.startswith(ALLOWED_OWN):
                continue
            wrong.setdefault(path.name, []).append(name)
    assert wrong == {}
