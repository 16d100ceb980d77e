"""``stagecoach validate FILE...``: schema and semantic checks, one line per problem.

Parses every document of every file (pipelines, templates, providers), resolves
``templateRef`` against the templates in the same files, reads the cassette file of
every replay provider (relative to the file that defines the provider), and prints
``FILE: <field path>: <reason> (line N)`` for each problem. Exit 1 when anything is
wrong, 0 otherwise; never a traceback. ``run`` and ``graph`` load manifests through
:func:`load_manifests` too, so they refuse exactly what ``validate`` reports.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..api import ManifestSet, ModelProvider, Problem, load_cassette, read_file
from ..engine import validate_manifests

__all__ = ["check_cassettes", "load_manifests", "run_validate"]


def load_manifests(files: Sequence[str]) -> tuple[ManifestSet, list[Problem]]:
    """Parse files into one set (shared by run, graph and validate)."""
    manifests = ManifestSet()
    problems: list[Problem] = []
    for f in files:
        loaded = read_file(f)
        manifests.add_loaded(loaded)
        problems.extend(loaded.problems)
    problems.extend(validate_manifests(manifests))
    problems.extend(check_cassettes(manifests))
    rank = {f: i for i, f in enumerate(files)}
    problems.sort(key=lambda p: (rank.get(p.file or "", len(rank)), p.doc or 0, p.line or 0))
    return manifests, problems


def check_cassettes(manifests: ManifestSet) -> list[Problem]:
    """Every replay provider's cassette file exists and is a valid cassette."""
    problems: list[Problem] = []
    seen: set[Path] = set()
    for doc in (*manifests.documents, *manifests.salvaged):
        obj = doc.obj
        if not isinstance(obj, ModelProvider) or obj.spec.type != "replay":
            continue
        ref = obj.spec.cassette
        if ref is None or not ref.path or any(loc[:3] == ("spec", "cassette", "path")[:len(loc)]
                                              for loc in doc.repaired):
            continue
        path = Path(ref.path)
        if not path.is_absolute():
            path = Path(doc.file).parent / path
        line = doc.lines.get(("spec", "cassette", "path"))
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            problems.append(Problem("spec.cassette.path", f"file {ref.path!r} {what} (looked "
                                    f"for {path})", line, doc.file, doc.index))
            continue
        if path.resolve() not in seen:
            seen.add(path.resolve())
            problems.extend(load_cassette(path))
    return problems


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
