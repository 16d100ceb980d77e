"""``stagecoach trace (NAME [-n NS] | RUN_DIR) [--html OUT] [--json]``.

A run directory (local mode) is read from disk; a NAME is a pipeline in the cluster whose
status and trace ConfigMaps are fetched by :mod:`stagecoach.operator.fetch`. A target that
cannot be a pipeline name (it has a ``/``, say) is a run directory, so a mistyped path is
reported as such without asking a cluster. Either way the
same report renders: a terminal timeline with decisions, errors, tokens and the output
assembly; ``--json`` prints the events as JSON lines; ``--html`` writes the HTML report.
"""

from __future__ import annotations

import importlib
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..report import RunData, events_json_lines, load_run, render_html, render_terminal

__all__ = ["run_trace"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A Kubernetes object name (DNS-1123 subdomain): what an AgentPipeline can be called."""


def _load(target: str, namespace: str | None) -> RunData:
    path = Path(target)
    if path.is_dir():
        if not (path / "status.json").exists() and not (path / "trace.jsonl").exists():
            raise ValueError(f"{target}: not a run directory (no status.json or trace.jsonl)")
        return load_run(path)
    if path.exists():
        raise ValueError(f"{target}: not a run directory")
    if len(target) > 253 or not _NAME.match(target):
        raise ValueError(f"{target}: no such run directory")
    try:
        fetch = importlib.import_module("stagecoach.operator.fetch")
    except ImportError:
        raise ValueError(f"{target}: no such run directory") from None
    data: RunData = fetch.fetch_run(target, namespace)
    return data


def run_trace(target: str, namespace: str | None = None, html: str | None = None,
              as_json: bool = False) -> int:
    """The ``trace`` command; returns the exit code."""
    try:
        data = _load(target, namespace)
    except (OSError, ValueError) as exc:
        print(f"stagecoach trace: {exc}", file=sys.stderr)
        return 1
    if as_json:
        sys.stdout.write(events_json_lines(data.events))
    elif html is None:
        print(render_terminal(data))
    if html is not None:
        out = Path(html)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(data, generated=datetime.now(UTC), links_from=out.parent),
                       encoding="utf-8")
        print(f"report: {out}", file=sys.stderr if as_json else sys.stdout)
    return 0
