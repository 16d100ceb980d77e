"""The engine is pure: no I/O modules, no Kubernetes, no clock reads (STYLE principle 1).

import-linter checks the package layers in ``make lint``; this test also looks inside the
engine's source for clock reads and file access, which import rules cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stagecoach.engine

ENGINE = Path(stagecoach.engine.__file__).parent
ALLOWED_IMPORTS = {"__future__", "collections", "copy", "dataclasses", "datetime", "functools",
                   "hashlib", "json", "re", "typing", "cel", "jinja2", "stagecoach"}
FORBIDDEN_CALLS = {"now", "utcnow", "time", "monotonic", "open", "sleep", "random", "today"}


def test_engine_imports_only_pure_modules() -> None:
    for path in ENGINE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"


def test_engine_never_reads_the_clock_or_files() -> None:
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                assert name not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {name}()"
