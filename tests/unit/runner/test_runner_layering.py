"""stagecoach_runner imports only stagecoach.api and stagecoach.store (DESIGN §8)."""

from __future__ import annotations

import ast
from pathlib import Path

import stagecoach_runner

ALLOWED = ("stagecoach.api", "stagecoach.store")


def test_runner_imports_only_api_and_store() -> None:
    root = Path(stagecoach_runner.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if (name == "stagecoach" or name.startswith("stagecoach.")) and not any(
                    name == a or name.startswith(a + ".") for a in ALLOWED
                ):
                    bad.append(f"{path.relative_to(root)}: {name}")
    assert bad == []


def test_store_imports_only_api() -> None:
    import stagecoach.store

    root = Path(stagecoach.store.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith(("stagecoach.engine", "stagecoach_runner")), path
