"""``stagecoach validate FILE...``: schema and semantic checks, one line per problem.

Parses every document of every file (pipelines, templates, providers), resolves
``templateRef`` against the templates in the same files, and prints
``FILE: <field path>: <reason>`` for each problem. Exit 1 when anything is wrong,
0 otherwise; never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from ..api import ManifestSet, Problem, load_file
from ..engine import validate_manifests

__all__ = ["load_manifests", "run_validate"]


def load_manifests(files: Sequence[str]) -> tuple[ManifestSet, list[Problem]]:
    """Parse files into one set (shared by run, graph and validate)."""
    manifests = ManifestSet()
    problems: list[Problem] = []
    for f in files:
        docs, found = load_file(f)
        manifests.add(docs)
        problems.extend(found)
    problems.extend(validate_manifests(manifests))
    return manifests, problems


def run_validate(files: Sequence[str], out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """Validate ``files``; print problems to ``err``; return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    manifests, problems = load_manifests(files)
    for p in problems:
        print(p.render(), file=err)
    if problems:
        return 1
    if not manifests.documents:
        print(f"{', '.join(files)}: no documents found", file=err)
        return 1
    for d in manifests.documents:
        name = getattr(getattr(d.obj, "metadata", None), "name", "")
        print(f"{d.file}: {d.kind} {name}: valid", file=out)
    return 0
