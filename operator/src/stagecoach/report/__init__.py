"""Run reports: the timeline, decisions, errors, tokens and output of one pipeline run.

``stagecoach run`` prints :func:`summary_text` and writes :func:`write_report` into the run
directory; ``stagecoach trace`` shows the same for a run directory or, in the cluster, for
a status and trace gathered into :meth:`RunData.from_parts` and passed to
:func:`render_terminal` / :func:`render_html`. Reading files lives in :mod:`.load`, writing
the report here; every other module only formats.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from .load import events_json_lines, load_run
from .model import Attempt, LoopMark, OutputFile, RunData, StageMark
from .page import CSS, render_attempt, render_html, render_sections
from .terminal import render_terminal

__all__ = [
    "CSS",
    "Attempt",
    "LoopMark",
    "OutputFile",
    "RunData",
    "StageMark",
    "events_json_lines",
    "load_run",
    "render_attempt",
    "render_html",
    "render_sections",
    "render_terminal",
    "summary_text",
    "write_report",
]


def summary_text(run_dir: Path, width: int | None = None, *,
                 data: RunData | None = None) -> str:
    """The plain-text report of a run directory (``width``: the terminal's, by default);
    ``data``: the run already loaded (:func:`load_run`), to read it only once."""
    if width is None:
        width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 160)
    return render_terminal(data if data is not None else load_run(run_dir), width=width)


def write_report(run_dir: Path, out: Path, *, data: RunData | None = None) -> None:
    """Write the HTML report of ``run_dir`` to ``out`` (atomically); ``data`` as for
    :func:`summary_text`."""
    out = Path(out)
    text = render_html(data if data is not None else load_run(run_dir),
                       generated=datetime.now(UTC), links_from=out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
