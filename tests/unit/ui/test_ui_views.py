"""The UI's views and server without a browser: large runs stay paged, the DAG is linear
in stages, the server's guards, and what it serves."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient, TestServer
from stagecoach.api import PipelineStatus, StageStatus
from stagecoach.api.resolve import resolve_pipeline
from stagecoach.api.resources import AgentPipeline
from stagecoach.report import RunData
from stagecoach.ui import views
from stagecoach.ui.graph import render_graph
from stagecoach.ui.server import make_app
from stagecoach.ui.sources import LocalRuns

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _ts(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _manifest(stages: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
                           "metadata": {"name": "big"}, "spec": {"stages": stages}})


def _big_foreach(n: int) -> RunData:
    events: list[dict[str, Any]] = [{"ts": _ts(0), "type": "PipelineStarted",
                                     "data": {"stages": ["fan"], "finally": []}}]
    for i in range(n):
        base = {"stage": "fan", "iteration": 1, "attempt": 1, "index": i}
        events.append({**base, "ts": _ts(i), "type": "StageStarted", "data": {}})
        events.append({**base, "ts": _ts(i + 5), "type": "StageSucceeded",
                       "data": {"durationMs": 5}})
    manifest = _manifest([{"name": "fan", "forEach": "params.items",
                           "run": {"image": "x", "command": ["x"]}}])
    status = PipelineStatus(phase="Running", stages=[StageStatus(name="fan", phase="Running")])
    return RunData.from_parts(status, events, manifest=manifest)


def test_a_5000_instance_run_is_paged_and_its_timeline_drawn_on_request() -> None:
    data = _big_foreach(5000)
    started = time.perf_counter()
    page = views.run_page("local:big", data, source="local", controls=["stop"])
    took = time.perf_counter() - started
    print(f"\nrun page of 5,000 instances: {took * 1000:.0f} ms, "
          f"{len(json.dumps(page, default=str)) // 1024} KiB")
    assert page["attempts"]["total"] == 5000 and len(page["attempts"]["items"]) == 200
    assert "show the whole timeline" in page["sections"]["timeline"]
    assert len(json.dumps(page, default=str)) < 512 * 1024  # bounded, whatever the size
    later = views.attempt_page(data, 4900)
    assert [i["label"] for i in later["items"]][:1] == ["fan[4900] #1"]
    assert len(later["items"]) == 100
    full = views.run_page("local:big", data, source="local", controls=[], full_timeline=True)
    assert "<svg" in full["sections"]["timeline"]


def test_the_dag_of_1000_stages_is_drawn_in_linear_time() -> None:
    stages = [{"name": f"s{i}", "dependsOn": [f"s{i - 1}"] if i else [],
               "run": {"image": "x", "command": ["x"]}} for i in range(1000)]
    stages.reverse()  # manifest order is not dependency order
    p = AgentPipeline.model_validate(yaml.safe_load(_manifest(stages)))
    resolved, problems = resolve_pipeline(p)
    assert resolved is not None, problems
    started = time.perf_counter()
    svg = render_graph(resolved.stages, (), {})
    print(f"\nDAG of 1,000 stages: {(time.perf_counter() - started) * 1000:.0f} ms, "
          f"{len(svg) // 1024} KiB")
    assert svg.count('class="node ') == 1000 and svg.count('class="edge"') == 999


def test_names_and_tooltips_are_escaped_in_the_graph() -> None:
    p = AgentPipeline.model_validate(yaml.safe_load(_manifest([
        {"name": "a", "run": {"image": "x", "command": ["x"]}},
        {"name": "b", "dependsOn": ["a"], "agent": {"provider": "p", "prompt": "x"},
         "routes": [{"when": "'<script>' != ''", "goto": "a", "maxIterations": 2}]}])))
    resolved, _ = resolve_pipeline(p)
    assert resolved is not None
    status = {"a": StageStatus(name="a", phase="Failed", reason="Error",
                               message="<img src=x onerror=alert(1)>")}
    svg = render_graph(resolved.stages, (), status)
    assert "<img" not in svg and "<script>" not in svg
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg and 'class="edge back"' in svg


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_server_guards_its_host_and_its_actions(tmp_path: Path) -> None:
    port = _port()
    app = make_app({"local": LocalRuns(tmp_path)}, host="127.0.0.1", port=port)
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
        res = await client.get("/")
        assert res.status == 200 and "default-src 'none'" in res.headers[
            "Content-Security-Policy"]
        assert "<script src=\"/static/app.js\"" in await res.text()
        assert (await client.get("/static/app.js")).status == 200
        assert (await client.get("/static/../server.py")).status == 404
        assert (await client.get("/api/runs", headers={"Host": "evil.example"})).status == 421
        forged = await client.post("/api/act", data="id=local:x&action=terminate",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert forged.status == 403
        ok_form = await client.post("/api/act", json={"id": "local:nope", "action": "stop"},
                                    headers={"X-Stagecoach-UI": "1"})
        assert ok_form.status == 404  # accepted as the page's request; no such run
        assert (await client.get("/api/run", params={"id": "local:../etc"})).status == 404
        assert (await client.get("/api/run", params={"id": "nope"})).status == 404
        assert (await client.get("/api/runs")).status == 200
