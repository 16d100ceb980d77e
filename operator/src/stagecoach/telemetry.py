"""OpenTelemetry for the shells: one trace per pipeline run (issue 6).

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP/protobuf; the usual
``OTEL_*`` variables apply). The pipeline run is the trace's root span; every stage
attempt is a child span made by the runner (:mod:`stagecoach_runner.telemetry`, which
also holds the shared provider setup), in-process in local mode and in the Job's pod in
the cluster, where the parent travels as the ``TRACEPARENT`` env var.

The root span's ids are derived from the pipeline UID (:func:`pipeline_traceparent`), so
any process, at any time, can name the parent of an attempt without holding the span: the
operator injects ``TRACEPARENT`` into Jobs across restarts and emits the root span itself
when the pipeline finishes (``start_time`` = ``status.startedAt``). API for the shells:

- :func:`configure` — install the provider (idempotent; False when tracing is off);
- :func:`start_pipeline_span` — context manager around a run (the local executor) or a
  finished run (the operator), yielding the root span or None;
- :func:`pipeline_child_span` — a span under a run's root from any process (scheduling);
- :func:`inject_traceparent` — put ``TRACEPARENT`` into a dict or a Kubernetes env list;
- :func:`set_pipeline_outcome`, :func:`flush`.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from stagecoach_runner import telemetry as _runner

__all__ = [
    "TRACEPARENT_ENV",
    "configure",
    "flush",
    "inject_traceparent",
    "pipeline_child_span",
    "pipeline_ids",
    "pipeline_traceparent",
    "set_pipeline_outcome",
    "start_pipeline_span",
    "traceparent_of",
]

TRACEPARENT_ENV = _runner.TRACEPARENT_ENV
flush = _runner.flush
traceparent_of = _runner.traceparent_of

_NEXT_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "stagecoach_next_span_ids", default=None)


@functools.cache
def _id_generator_class() -> type[Any]:
    """The SDK's id generator with pipeline root ids (built on first use: the SDK takes
    ~15 ms to import, and only a process that exports spans needs it)."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class PipelineIdGenerator(IdGenerator):
        """Random ids, except for the root span :func:`start_pipeline_span` starts."""

        def __init__(self) -> None:
            self._random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            ids = _NEXT_IDS.get()
            return ids[1] if ids else self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            ids = _NEXT_IDS.get()
            return ids[0] if ids else self._random.generate_trace_id()

    return PipelineIdGenerator


def pipeline_ids(uid: str) -> tuple[int, int]:
    """(trace id, root span id) of pipeline run ``uid``: stable, never zero. No side effects."""
    digest = hashlib.sha256(f"stagecoach.dev/pipeline/{uid}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def configure(service_name: str = "stagecoach",
              environ: Mapping[str, str] | None = None) -> bool:
    """Install the OTLP/HTTP provider for this process; False when tracing is off."""
    if not _runner.enabled(environ):
        return _runner.configure(service_name, environ)  # someone else's SDK, or none
    return _runner.configure(service_name, environ, id_generator=_id_generator_class()())


def _deterministic() -> bool:
    """Whether this process's SDK is ours (called only with an SDK active: loads it)."""
    provider: Any = trace.get_tracer_provider()
    return isinstance(getattr(provider, "id_generator", None), _id_generator_class())


def pipeline_traceparent(uid: str) -> str | None:
    """The ``traceparent`` of run ``uid``'s root span, or None when tracing is off (or the
    process's provider was set up by someone else, so root ids are random)."""
    if not configure() or not _deterministic():
        return None
    trace_id, span_id = pipeline_ids(uid)
    return f"00-{trace_id:032x}-{span_id:016x}-01"


@contextmanager
def start_pipeline_span(name: str, uid: str, *, namespace: str | None = None,
                        start_time: datetime | None = None,
                        attributes: Mapping[str, Any] | None = None,
                        environ: Mapping[str, str] | None = None) -> Iterator[Span | None]:
    """The root span of pipeline run ``uid`` (None when tracing is off), current inside.

    Ends on exit; an exception marks it failed. ``start_time`` backdates it (the operator
    emits the span of a finished run from ``status.startedAt``).
    """
    if not configure(environ=environ):
        yield None
        return
    attrs: dict[str, Any] = {"stagecoach.pipeline": name, "stagecoach.pipeline.uid": uid}
    if namespace:
        attrs["k8s.namespace.name"] = namespace
    attrs.update(attributes or {})
    tracer = trace.get_tracer("stagecoach")
    token = _NEXT_IDS.set(pipeline_ids(uid))
    try:
        span = tracer.start_span(
            f"pipeline {name}", context=Context(), kind=SpanKind.INTERNAL, attributes=attrs,
            start_time=int(start_time.timestamp() * 1e9) if start_time else None,
        )
    finally:
        _NEXT_IDS.reset(token)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextmanager
def pipeline_child_span(uid: str, name: str, *, attributes: Mapping[str, Any] | None = None,
                        environ: Mapping[str, str] | None = None) -> Iterator[Span | None]:
    """A span in run ``uid``'s trace, child of its root span, without holding the root:
    the operator's scheduling work (``reconcile``, ``create job research``). None when
    tracing is off."""
    parent = _runner.extract_context(pipeline_traceparent(uid)) if configure(
        environ=environ) else None
    if parent is None:
        yield None
        return
    tracer = trace.get_tracer("stagecoach")
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.INTERNAL,
                                      attributes=dict(attributes or {})) as span:
        yield span


def set_pipeline_outcome(span: Span | None, phase: str, message: str | None = None,
                         tokens: tuple[int, int] | None = None,
                         cost: str | None = None) -> None:
    """Record the run's final phase (and token totals, and USD when priced) on its root
    span."""
    if span is None:
        return
    span.set_attribute("stagecoach.phase", phase)
    if tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", tokens[0])
        span.set_attribute("gen_ai.usage.output_tokens", tokens[1])
    if cost is not None:  # USD, rounded to a micro-dollar (a span holds numbers)
        span.set_attribute("gen_ai.usage.cost", float(cost))
    if phase in ("Failed", "Cancelled", "Invalid"):
        span.set_status(Status(StatusCode.ERROR, f"{phase}: {message or ''}"[:500]))


def inject_traceparent(env: MutableMapping[str, str] | list[dict[str, str]],
                       parent: Span | str | None = None) -> None:
    """Add ``TRACEPARENT`` to ``env`` (a dict, or a container's ``env`` list of
    ``{name, value}``). ``parent``: a span, a traceparent string (say
    :func:`pipeline_traceparent`), or the current span. Nothing when there is none."""
    value = parent if isinstance(parent, str) else _runner.traceparent_of(parent)
    if not value:
        return
    if isinstance(env, list):
        env[:] = [e for e in env if e.get("name") != TRACEPARENT_ENV]
        env.append({"name": TRACEPARENT_ENV, "value": value})
    else:
        env[TRACEPARENT_ENV] = value
