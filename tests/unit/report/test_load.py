"""Reading a run directory: every file optional, bad lines become warnings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from stagecoach.report import events_json_lines, load_run

from .sample import EVENTS, EVIL


def test_reads_every_file(run_dir: Path) -> None:
    data = load_run(run_dir)
    assert data.name == "demo"
    assert data.max_tokens == 10000
    assert data.status.progress == "5/5"
    assert len(data.events) == len(EVENTS)
    assert len(data.outputs) == 8
    assert data.final_output is not None and EVIL in data.final_output
    assert data.manifest is not None and "maxTokens" in data.manifest
    assert data.source == str(run_dir)
    assert data.warnings == []


def test_missing_status_is_inferred(make_run: Callable[..., Path]) -> None:
    data = load_run(make_run(status=None, manifest=None, final=None))
    assert data.phase == "Succeeded"
    assert data.name == "demo"
    assert data.final_output is None
    assert any("status.json is missing" in w for w in data.warnings)


def test_invalid_status_is_a_warning(make_run: Callable[..., Path]) -> None:
    data = load_run(make_run(status={"phase": "Exploded"}))
    assert data.phase == "Succeeded"
    assert any("status.json is invalid" in w for w in data.warnings)


def test_per_writer_records_are_merged_without_trace_jsonl(
        make_run: Callable[..., Path]) -> None:
    path = make_run()
    (path / "trace.jsonl").unlink()
    (path / "trace").mkdir()
    runner = [e for e in EVENTS if e["type"] in {"InputSnapshot", "OutputSnapshot",
                                                 "ProviderRetry"}]
    executor = [e for e in EVENTS if e not in runner]
    for name, evs in (("executor", executor), ("runner-research-1-1", runner)):
        (path / "trace" / f"{name}.jsonl").write_text(events_json_lines(evs))
    data = load_run(path)
    assert len(data.events) == len(EVENTS)
    assert any("merged" in w for w in data.warnings)


def test_bad_lines_are_skipped_with_a_warning(make_run: Callable[..., Path]) -> None:
    path = make_run()
    text = (path / "trace.jsonl").read_text().splitlines()
    text.insert(3, "{torn")
    (path / "trace.jsonl").write_text("\n".join(text) + "\n[1]\n")
    data = load_run(path)
    assert len(data.events) == len(EVENTS)
    assert [w.split(":")[1] for w in data.warnings] == ["4", str(len(EVENTS) + 2)]


def test_empty_directory(tmp_path: Path) -> None:
    data = load_run(tmp_path)
    assert data.attempts == [] and data.phase == "Pending"
    assert any("no trace" in w for w in data.warnings)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "nope")


def test_events_json_lines_round_trip() -> None:
    text = events_json_lines(EVENTS)
    assert text.endswith("\n")
    assert [json.loads(line) for line in text.splitlines()] == EVENTS
