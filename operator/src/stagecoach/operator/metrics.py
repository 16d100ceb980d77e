"""Prometheus metrics and the health endpoints of the operator.

:class:`Metrics` owns a private registry (tests create as many as they like) and is fed
by the reconciler from the engine's actions, never by polling. :func:`serve` exposes
``/metrics``, ``/healthz`` (the event loop answers) and ``/readyz`` (the operator has
started) on ``STAGECOACH_METRICS_PORT`` with aiohttp, the HTTP stack the API client
already brings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..engine import Action

__all__ = ["Metrics", "serve"]

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The operator's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile = Histogram("stagecoach_reconcile_duration_seconds",
                                   "Duration of one reconcile pass.", registry=r,
                                   buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        # ``pipeline`` is the template name for templated pipelines (bounded), else the
        # pipeline's own name, so generated runs of one template share their series.
        self.stage_duration = Histogram("stagecoach_stage_duration_seconds",
                                        "Duration of stage attempts.",
                                        ["pipeline", "stage", "outcome"],
                                        registry=r, buckets=_BUCKETS)
        self.retries = Counter("stagecoach_stage_retries_total",
                               "Stage attempts that failed and will be retried.",
                               ["pipeline", "stage", "error_class"], registry=r)
        self.pipelines = Gauge("stagecoach_pipelines", "Pipelines by phase.", ["phase"],
                               registry=r)
        self.tokens = Counter("stagecoach_tokens_total", "Tokens reported by providers.",
                              ["provider", "model", "kind"], registry=r)
        self.cost = Counter("stagecoach_cost_usd", "USD of the tokens reported, at the "
                            "models' pricing (models without pricing add nothing).",
                            ["provider", "model"], registry=r)
        self.cache = Counter("stagecoach_stage_cache_total", "Stage-cache lookups by result.",
                             ["result"], registry=r)
        self.queue_wait = Histogram("stagecoach_queue_wait_seconds",
                                    "Time stage instances waited for a provider slot or "
                                    "parallelism.", ["provider"], registry=r, buckets=_BUCKETS)
        self.jobs_created = Counter("stagecoach_jobs_created_total", "Jobs created.",
                                    registry=r)
        self.api_requests = Gauge("stagecoach_api_requests", "API requests made so far.",
                                  registry=r)
        self.leader = Gauge("stagecoach_leader", "1 while this operator reconciles (holds "
                            "the Lease, or runs without leader election).", registry=r)
        self._phases: dict[tuple[str, str], str] = {}
        self.ready = False

    def observe_actions(self, actions: Iterable[Action], pipeline: str = "") -> None:
        """Stage durations and retries from the trace-producing actions."""
        for a in actions:
            ev = a.event()
            if ev is None:
                continue
            data: dict[str, Any] = ev.get("data") or {}
            if ev["type"] == "StageFailed" and data.get("willRetry"):
                self.retries.labels(pipeline, str(ev.get("stage")),
                                    str(data.get("errorClass"))).inc()
            if ev["type"] in {"StageSucceeded", "StageFailed"} and isinstance(
                    data.get("durationMs"), int):
                outcome = "succeeded" if ev["type"] == "StageSucceeded" else "failed"
                self.stage_duration.labels(pipeline, str(ev.get("stage")), outcome).observe(
                    data["durationMs"] / 1000)

    def pipeline_phase(self, key: tuple[str, str], phase: str | None) -> None:
        """Track one pipeline's phase (None: deleted)."""
        old = self._phases.pop(key, None)
        if old is not None:
            self.pipelines.labels(old).dec()
        if phase is not None:
            self._phases[key] = phase
            self.pipelines.labels(phase).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


async def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> Any:
    """Start the HTTP endpoints; returns the aiohttp runner (``await runner.cleanup()``)."""
    from aiohttp import web

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready" if metrics.ready else "starting",
                            status=200 if metrics.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
