"""Metrics from actions, and the HTTP endpoints."""

from __future__ import annotations

import socket

import httpx2 as httpx
from stagecoach.engine import ScheduleRetry, StageEvent
from stagecoach.operator.metrics import Metrics, serve


def test_actions_feed_histograms_and_counters() -> None:
    m = Metrics()
    m.observe_actions([
        ScheduleRetry("a", 1, 1, None, error_class="RateLimited", message="x", duration_ms=300),
        StageEvent("a", 1, 2, None, type="StageSucceeded", data={"durationMs": 1200}),
    ], "research-report")
    m.pipeline_phase(("ns", "p"), "Running")
    m.pipeline_phase(("ns", "p"), "Succeeded")
    text = m.render().decode()
    assert ('stagecoach_stage_retries_total{error_class="RateLimited",'
            'pipeline="research-report",stage="a"} 1.0') in text
    assert ('stagecoach_stage_duration_seconds_count{outcome="succeeded",'
            'pipeline="research-report",stage="a"} 1.0') in text
    assert 'stagecoach_pipelines{phase="Succeeded"} 1.0' in text
    assert 'stagecoach_pipelines{phase="Running"} 0.0' in text


async def test_endpoints() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = Metrics()
    runner = await serve(m, port, "127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            m.ready = True
            assert (await client.get("/readyz")).status_code == 200
            assert "stagecoach_reconcile_duration_seconds" in (await client.get("/metrics")).text
    finally:
        await runner.cleanup()
