"""A local run killed hard (SIGKILL) leaves a consistent run directory.

``stagecoach run`` commits each engine pass's outputs and trace events together
(:mod:`stagecoach.local.commit`). Whenever the process dies, what is on disk must agree
with itself: every ``StageSucceeded`` in the trace has its output on disk and readable and
comes after the attempt's own events; ``status.json`` and ``state.json`` claim no stage
the trace does not show finished; no output file is torn. The kill points are spread over
the run by waiting for progress on disk, never for a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagecoach.store import decode_output

PY = sys.executable
WIDTH, STAGES = 6, 48


def _manifest(tmp: Path) -> Path:
    stages: list[dict[str, Any]] = []
    for i in range(STAGES):
        deps = [] if i < WIDTH else [f"s{i - WIDTH}", f"s{(i - WIDTH + 1) // WIDTH * WIDTH}"]
        stages.append({"name": f"s{i}", "dependsOn": sorted(set(deps)),
                       "agent": {"prompt": f"stage {i} on {{{{ params.topic }}}}"}})
    # one slow run stage per layer keeps the run going long enough to be killed mid-way
    for layer in range(STAGES // WIDTH):
        stages.append({"name": f"slow{layer}", "dependsOn": [f"s{layer * WIDTH}"],
                       "run": {"image": "python", "command": [
                           PY, "-c", "import json, os, time; time.sleep(0.05); json.dump("
                           "{'ok': True}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))"],
                           "output": {"format": "json"}}})
    cassette = [{"stage": s["name"], "response": {"content": f"answer {s['name']}",
                                                  "usage": {"input": 3, "output": 2}}}
                for s in stages if "agent" in s]
    (tmp / "cassette.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette", "entries": cassette}))
    docs = [{"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
             "metadata": {"name": "llm"},
             "spec": {"type": "replay", "cassette": {"path": "cassette.yaml"}}},
            {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
             "metadata": {"name": "crash"},
             "spec": {"params": {"topic": "crashes"}, "defaults": {"provider": "llm"},
                      "stages": stages}}]
    path = tmp / "crash.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """Every record's events in file order; a torn last line (the kill) is dropped."""
    out: list[dict[str, Any]] = []
    for record in sorted((run_dir / "trace").glob("*.jsonl")):
        lines = record.read_bytes().split(b"\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                assert n == len(lines) - 1, f"{record}: a torn line before the end"
    return out


def _check(run_dir: Path) -> int:
    """The invariants; returns how many stages the trace shows succeeded."""
    events = _events(run_dir)
    seen: dict[str, list[str]] = {}
    succeeded: set[str] = set()
    for ev in events:
        stage = ev.get("stage")
        if not stage:
            continue
        seen.setdefault(stage, []).append(ev["type"])
        if ev["type"] == "StageSucceeded":
            succeeded.add(stage)
            ref = ev["data"].get("outputRef")
            assert ref, ev
            decode_output((run_dir / ref).read_bytes())  # on disk and whole
            if stage.startswith("s"):  # the attempt's own events are on disk before it
                assert "OutputSnapshot" in seen[stage][:-1], (stage, seen[stage])
    for path in (run_dir / "outputs").glob("*/*.json"):
        decode_output(path.read_bytes())  # never torn, even for stages not yet done
    status = run_dir / "status.json"
    if status.exists():
        done = {s["name"] for s in json.loads(status.read_text())["stages"]
                if s["phase"] == "Succeeded"}
        assert done <= succeeded, done - succeeded
    state = run_dir / "state.json"
    if state.exists():
        runs = json.loads(state.read_text())["state"]["stages"]
        done = {n for n, r in runs.items() if r["phase"] == "Succeeded"}
        assert done <= succeeded, done - succeeded
        for name in done:
            decode_output((run_dir / runs[name]["output_ref"]).read_bytes())
    return len(succeeded)


def _progress(run_dir: Path) -> int:
    try:
        return sum(1 for ev in _events(run_dir) if ev["type"] == "StageSucceeded")
    except (OSError, AssertionError):
        return 0


@pytest.mark.parametrize("kill_after", [1, STAGES // 3, STAGES * 2 // 3])
def test_a_run_killed_hard_leaves_a_consistent_run_directory(tmp_path: Path,
                                                             kill_after: int) -> None:
    path = _manifest(tmp_path)
    store = tmp_path / "runs"
    proc = subprocess.Popen([PY, "-m", "stagecoach.cli.main", "run", str(path), "--store",
                             str(store)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        run_dir: Path | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = [d for d in store.glob("*") if (d / "trace").is_dir()]
            if found and _progress(found[0]) >= kill_after:
                run_dir = found[0]
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    run_dir = run_dir or next(store.glob("*"))
    assert _check(run_dir) >= min(kill_after, 1)
    if proc.returncode == 0:  # it finished before the kill: everything is there
        assert _check(run_dir) == STAGES + STAGES // WIDTH
