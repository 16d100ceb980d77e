"""Only ``stagecoach.operator.kube`` talks to the Kubernetes API (kopf in ``main`` only
watches, aiohttp in ``metrics`` only serves); the other operator modules are pure or go
through it."""

from __future__ import annotations

import ast
from pathlib import Path

import stagecoach.operator

PKG = Path(stagecoach.operator.__file__).parent
API_MODULES = {"kubernetes_asyncio", "aiohttp", "httpx", "httpx2", "kopf"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_only_kube_talks_to_the_api() -> None:
    for path in sorted(PKG.glob("*.py")):
        names = imported(path)
        roots = {n.split(".")[0] for n in names}
        talks = roots & API_MODULES or {n for n in names if n.endswith("RestClient")}
        if path.name == "kube.py":
            continue
        if path.name == "main.py":
            assert talks <= {"kopf"}, (path.name, talks)
            continue
        if path.name == "metrics.py":  # serves /metrics; never calls the API
            assert talks <= {"aiohttp"}, (path.name, talks)
            continue
        assert not talks, (path.name, talks)
