"""The local executor end to end: real runner, real subprocesses, replay provider.

Parallelism and ordering are proved from trace timestamps, never from sleeps' durations
alone; no assertion depends on wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagecoach.api import AgentPipeline, ModelProvider, load_documents, resolve_pipeline
from stagecoach.local import LocalExecutor, RunOptions, new_run_dir
from stagecoach_runner.providers import ProviderPool

PY = sys.executable


def sh(code: str, **extra: Any) -> dict[str, Any]:
    """A run stage executing Python code; STAGECOACH_OUTPUT gets JSON."""
    return {"run": {"image": "python", "command": [PY, "-c", code],
                    "output": {"format": "json"}}, **extra}


WRITE_OK = ("import json, os; json.dump({'ok': True}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))")


def sleeper(seconds: float) -> str:
    return f"import time; time.sleep({seconds}); " + WRITE_OK


def manifest(spec: dict[str, Any], cassette: list[dict[str, Any]] | None = None,
             provider: dict[str, Any] | None = None) -> str:
    docs: list[dict[str, Any]] = []
    if cassette is not None:
        docs.append({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
                     "metadata": {"name": "replay"},
                     "spec": {"type": "replay", "cassette": {"path": "cassette.yaml"},
                              **(provider or {})}})
    docs.append({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
                 "metadata": {"name": "t"}, "spec": spec})
    return yaml.safe_dump_all(docs)


async def execute(tmp: Path, spec: dict[str, Any], cassette: list[dict[str, Any]] | None = None,
                  cancel_after: float | None = None,
                  provider: dict[str, Any] | None = None,
                  run_dirs: list[Path] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    if cassette is not None:
        (tmp / "cassette.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette", "entries": cassette}))
    docs, problems = load_documents(manifest(spec, cassette, provider))
    assert not problems, problems
    pipeline = next(d.obj for d in docs if isinstance(d.obj, AgentPipeline))
    providers = {d.obj.metadata.name: d.obj for d in docs if isinstance(d.obj, ModelProvider)}
    resolved, problems = resolve_pipeline(pipeline)
    assert resolved is not None, problems
    from datetime import UTC, datetime

    run_dir = new_run_dir(tmp / "runs", "t", datetime.now(UTC))
    if run_dirs is not None:
        run_dirs.append(run_dir.path)
    async with ProviderPool(base_dir=str(tmp)) as pool:
        ex = LocalExecutor(resolved, providers, run_dir, pool,
                           options=RunOptions(base_dir=str(tmp)))
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, ex.request_cancel)
        state = await ex.execute()
        events = await ex.store.read_trace()
    return state, events


def ts(events: list[dict[str, Any]], type_: str, stage: str, **kw: Any) -> list[str]:
    return [e["ts"] for e in events if e["type"] == type_ and e["stage"] == stage
            and all(e.get(k) == v for k, v in kw.items())]


async def test_independent_stages_overlap(tmp_path: Path) -> None:
    state, ev = await execute(tmp_path, {"stages": [
        {"name": "a", **sh(sleeper(0.5))}, {"name": "b", **sh(sleeper(0.5))},
        {"name": "c", "dependsOn": ["a", "b"], **sh(WRITE_OK)}]})
    assert state.phase == "Succeeded"
    a_start, b_start = ts(ev, "StageStarted", "a")[0], ts(ev, "StageStarted", "b")[0]
    a_end, b_end = ts(ev, "StageSucceeded", "a")[0], ts(ev, "StageSucceeded", "b")[0]
    assert max(a_start, b_start) < min(a_end, b_end), "a and b ran at the same time"
    assert ts(ev, "StageStarted", "c")[0] >= max(a_end, b_end)


async def test_max_parallel_serialises(tmp_path: Path) -> None:
    state, ev = await execute(tmp_path, {"maxParallel": 1, "stages": [
        {"name": "a", **sh(sleeper(0.2))}, {"name": "b", **sh(sleeper(0.2))}]})
    assert state.phase == "Succeeded"
    first, second = sorted([(ts(ev, "StageStarted", s)[0], ts(ev, "StageSucceeded", s)[0])
                            for s in ("a", "b")])
    assert second[0] >= first[1]


async def test_cancel_stops_the_subprocess_and_flushes_the_trace(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    state, ev = await execute(tmp_path, {"stages": [{"name": "slow", **sh(code)}]},
                              cancel_after=1.5)
    assert state.phase == "Cancelled"
    assert ev[-1]["type"] == "PipelineFailed" and ev[-1]["data"]["phase"] == "Cancelled"
    [end] = [e for e in ev if e["type"] == "StageFailed"]  # the engine ends what it stops
    assert (end["stage"], end["attempt"], end["data"]["errorClass"]) == ("slow", 1, "Cancelled")
    assert end["data"]["durationMs"] >= 1000
    pid = int(pidfile.read_text())
    await asyncio.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_attempt_timeout_is_classed_timeout_and_retried(tmp_path: Path) -> None:
    marker = tmp_path / "first"
    code = (f"import os, time, json\nif not os.path.exists({str(marker)!r}):\n"
            f"    open({str(marker)!r}, 'w').close(); time.sleep(30)\n" + WRITE_OK)
    state, ev = await execute(tmp_path, {"stages": [{"name": "s", "timeout": "1s",
                                                     "retry": {"limit": 1, "backoff": {
                                                         "initial": "100ms"}}, **sh(code)}]})
    assert state.phase == "Succeeded"
    failed = [e for e in ev if e["type"] == "StageFailed"]
    assert failed[0]["data"]["errorClass"] == "Timeout" and failed[0]["data"]["willRetry"]
    assert failed[0]["data"]["durationMs"] >= 1000  # not null: the engine timed it out


async def test_ctrl_c_during_a_retry_backoff_leaves_the_stage_failed_with_its_attempt(
        tmp_path: Path) -> None:
    dirs: list[Path] = []
    state, _ = await execute(tmp_path, {"stages": [
        {"name": "s", "retry": {"limit": 2, "backoff": {"initial": "30s"}},
         **sh("import sys; sys.exit(2)")}]}, cancel_after=1.5, run_dirs=dirs)
    assert state.phase == "Cancelled"
    [s] = json.loads((dirs[0] / "status.json").read_text())["stages"]
    assert (s["phase"], s["attempt"], s["reason"]) == ("Failed", 1, "Cancelled")
    assert "retry did not start" in s["message"]


async def test_a_for_each_over_an_empty_list_is_in_the_trace_and_the_report(
        tmp_path: Path) -> None:
    from stagecoach.report import load_run, render_terminal

    dirs: list[Path] = []
    state, ev = await execute(tmp_path, {"params": {"xs": []}, "stages": [
        {"name": "fan", "forEach": "params.xs", **sh(WRITE_OK)}]}, run_dirs=dirs)
    assert state.phase == "Succeeded"
    [done] = [e for e in ev if e["type"] == "StageSucceeded"]
    assert (done["stage"], done["data"]["instances"]) == ("fan", 0)
    (dirs[0] / "trace.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    text = render_terminal(load_run(dirs[0]))
    assert any(line.startswith("  fan ") and "nothing to run" in line
               for line in text.splitlines())


async def test_failure_continue_and_finally(tmp_path: Path) -> None:
    state, ev = await execute(tmp_path, {
        "stages": [{"name": "bad", "onFailure": "continue",
                    **sh("import sys; print('nope', file=sys.stderr); sys.exit(3)")},
                   {"name": "after", "dependsOn": ["bad"],
                    **sh("import json, os; d = json.load(open(os.environ['STAGECOACH_INPUT']));"
                         " json.dump({'saw': d['stages']['bad']['output']},"
                         " open(os.environ['STAGECOACH_OUTPUT'], 'w'))")}],
        "finally": [{"name": "cleanup", **sh(WRITE_OK)}]})
    assert state.phase == "Succeeded"
    assert state.stages["bad"].phase == "Failed" and state.stages["bad"].reason == "Error"
    assert state.stages["after"].output == {"saw": None}
    assert state.stages["cleanup"].phase == "Succeeded"
    msg = next(e for e in ev if e["type"] == "StageFailed")["data"]["message"]
    assert "3" in msg and "nope" in msg


async def test_budget_exhaustion_fails_with_budget_exceeded(tmp_path: Path) -> None:
    cassette = [{"stage": s, "response": {"content": "x", "usage": {"input": 600, "output": 0}}}
                for s in ("a", "b")]
    state, ev = await execute(tmp_path, {
        "budget": {"maxTokens": 500}, "defaults": {"provider": "replay"},
        "stages": [{"name": "a", "agent": {"prompt": "hi"}},
                   {"name": "b", "dependsOn": ["a"], "agent": {"prompt": "hi"}}]}, cassette)
    assert state.phase == "Failed" and state.reason == "BudgetExceeded"
    assert state.stages["b"].phase == "Skipped"
    assert any(e["type"] == "BudgetExceeded" for e in ev)


async def test_budget_stop_with_instances_queued_tells_the_truth(tmp_path: Path) -> None:
    cassette = [{"stage": "f", "index": i, "response": {"content": "x",
                                                        "usage": {"input": 60, "output": 0}}}
                for i in range(4)]
    dirs: list[Path] = []
    state, _ = await execute(tmp_path, {
        "maxParallel": 1, "budget": {"maxTokens": 100}, "params": {"xs": [1, 2, 3, 4]},
        "defaults": {"provider": "replay"},
        "stages": [{"name": "f", "forEach": "params.xs", "agent": {"prompt": "hi"}}]},
        cassette, run_dirs=dirs)
    assert state.phase == "Failed" and state.reason == "BudgetExceeded"
    status = json.loads((dirs[0] / "status.json").read_text())
    [f] = status["stages"]
    assert (f["phase"], f["reason"], f["attempt"]) == ("Failed", "BudgetExceeded", 1)
    assert f["instances"] == {"total": 4, "succeeded": 2, "failed": 0, "running": 0}
    used = status["tokens"]["input"] + status["tokens"]["output"]
    assert used == 120 and f"{used} of 100 tokens" in status["message"]


async def test_replay_429_retried_and_malformed_json_retried(tmp_path: Path) -> None:
    cassette = [
        {"stage": "a", "error": {"status": 429, "retryAfter": 0.2}},
        {"stage": "a", "response": {"content": "not json", "usage": {"input": 5, "output": 2}}},
        {"stage": "a", "response": {"content": '{"x": 1}', "usage": {"input": 5, "output": 2}}},
    ]
    state, ev = await execute(tmp_path, {
        "defaults": {"provider": "replay"},
        "stages": [{"name": "a", "retry": {"limit": 1, "backoff": {"initial": "100ms"}},
                    "agent": {"prompt": "hi", "output": {"format": "json", "schema": {
                        "type": "object", "required": ["x"]}}}}]}, cassette)
    assert state.phase == "Succeeded" and state.stages["a"].output == {"x": 1}
    assert any(e["type"] == "ProviderRetry" for e in ev)
    failed = [e for e in ev if e["type"] == "StageFailed"]
    assert failed[0]["data"]["errorClass"] == "MalformedOutput"
    assert state.tokens.total == 14  # the rejected answer's tokens were billed too
    second = [e for e in ev if e["type"] == "InputSnapshot" and e["attempt"] == 2][0]
    assert "not valid JSON" in json.dumps(second["data"])


async def test_provider_max_concurrency_holds(tmp_path: Path) -> None:
    # Agent stages on a provider with maxConcurrency 1 never overlap, even with no deps.
    cassette = [{"stage": f"s{i}", "response": {"content": "x"}} for i in range(4)]
    state, ev = await execute(tmp_path, {"defaults": {"provider": "replay"}, "stages": [
        {"name": f"s{i}", "agent": {"prompt": "hi"}} for i in range(4)]}, cassette,
        provider={"limits": {"maxConcurrency": 1}})
    assert state.phase == "Succeeded"
    spans = sorted((ts(ev, "StageStarted", f"s{i}")[0], ts(ev, "StageSucceeded", f"s{i}")[0])
                   for i in range(4))
    for (_s1, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        assert s2 >= e1
    assert any(e["type"] == "StageQueued" and e["data"]["reason"] == "WaitingForProvider"
               for e in ev)
