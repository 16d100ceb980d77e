"""The run directory's own files: ``status.json`` is rewritten only when its text changes."""

from __future__ import annotations

import json
from pathlib import Path

from stagecoach.api import PipelineStatus
from stagecoach.local.rundir import RunDir


def test_status_is_written_again_only_when_it_says_something_else(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    text = run.write_status(PipelineStatus(phase="Running", progress="1/2"))
    assert json.loads(run.status.read_text())["progress"] == "1/2"
    first = run.status.stat().st_ino  # each write is a new file renamed into place

    same = run.write_status(PipelineStatus(phase="Running", progress="1/2"), unless=text)
    assert same == text and run.status.stat().st_ino == first  # not written again

    other = run.write_status(PipelineStatus(phase="Succeeded", progress="2/2"), unless=text)
    assert other != text and run.status.stat().st_ino != first
    assert json.loads(run.status.read_text())["phase"] == "Succeeded"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind
