"""OpenTelemetry for stage attempts: one span per attempt, GenAI attributes (issue 6).

Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
then :func:`configure` installs a TracerProvider exporting OTLP over HTTP/protobuf (the
standard ``OTEL_*`` variables apply). The operator and the local executor call it too,
through :mod:`stagecoach.telemetry`, which adds the pipeline's root span; the runner may
import only the API and the stores, so the shared setup lives here.

:func:`attempt_span` opens the attempt's span as a child of the W3C ``traceparent`` it is
given: the ``TRACEPARENT`` env var in a pod, a parameter of ``run_attempt`` in-process, or
else the current context. The span carries GenAI semantic-convention attributes
(``gen_ai.operation.name`` = chat, provider, request/response model, token usage, finish
reasons) and ``stagecoach.*`` ones (pipeline, stage, iteration, attempt, index, error
class). It learns them by watching the events the attempt writes to its trace
(:meth:`AttemptSpan.observe` wraps the :class:`TraceSink`), so the agent code stays
unaware of tracing. Prompts and answers are recorded only when
``STAGECOACH_OTEL_CAPTURE_CONTENT=true``, and then with secrets redacted.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from stagecoach.api import AttemptResult, AttemptSpec, cost_of, format_usd

from .tracing import Redactor, TraceSink

__all__ = [
    "CAPTURE_ENV",
    "TRACEPARENT_ENV",
    "AttemptSpan",
    "attempt_attributes",
    "attempt_span",
    "capture_content",
    "configure",
    "enabled",
    "extract_context",
    "flush",
    "traceparent_of",
]

TRACEPARENT_ENV = "TRACEPARENT"
"""W3C trace context handed to a pod (``00-<trace id>-<span id>-<flags>``)."""

CAPTURE_ENV = "STAGECOACH_OTEL_CAPTURE_CONTENT"
"""``true``: record prompts and answers on spans (off by default)."""

_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "replay": "stagecoach.replay"}
_TRACER = "stagecoach_runner"
_lock = threading.Lock()
_configured = False
_propagator = TraceContextTextMapPropagator()


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when an OTLP endpoint is configured (tracing on)."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in _ENDPOINT_ENVS) and (
        env.get("OTEL_SDK_DISABLED", "").lower() != "true"
    )


def capture_content(environ: Mapping[str, str] | None = None) -> bool:
    """True when prompts and answers may go on spans."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")


def configure(service_name: str, environ: Mapping[str, str] | None = None,
              *, id_generator: Any = None) -> bool:
    """Install the OTLP/HTTP TracerProvider once per process; True when tracing is on.

    Does nothing (and returns True) when this process already has an SDK provider, so
    the local executor's setup is reused by in-process attempts. ``id_generator`` lets
    :mod:`stagecoach.telemetry` give pipeline root spans deterministic ids.
    """
    global _configured
    if not enabled(environ):
        return _sdk_active()
    with _lock:
        if _configured or _sdk_active():
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        env = os.environ if environ is None else environ
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME")
                                    or service_name})
        kw: dict[str, Any] = {"resource": resource}
        if id_generator is not None:
            kw["id_generator"] = id_generator
        provider = TracerProvider(**kw)
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _configured = True
        return True


def _sdk_active() -> bool:
    provider = trace.get_tracer_provider()
    return hasattr(provider, "force_flush") and hasattr(provider, "add_span_processor")


def flush(timeout_ms: int = 10_000) -> None:
    """Export every finished span now (a pod is about to exit; a local run ends)."""
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(timeout_ms)


def extract_context(traceparent: str | None) -> otel_context.Context | None:
    """The OTel context of a W3C ``traceparent`` (None when absent or invalid)."""
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    span_ctx = trace.get_current_span(ctx).get_span_context()
    return ctx if span_ctx.is_valid else None


def traceparent_of(span: Span | None = None) -> str | None:
    """``traceparent`` of ``span`` (default: the current span); None if there is none."""
    span = span or trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def attempt_attributes(spec: AttemptSpec, result: AttemptResult | None,
                       seen: Mapping[str, Any], capture: bool) -> dict[str, Any]:
    """Span attributes for an attempt: ``stagecoach.*`` and, for agent stages, GenAI
    semantic conventions; content only when ``capture``. No side effects.

    ``seen`` holds what :class:`AttemptSpan` observed in the trace events (provider,
    request/response model, finish reason, prompt, answer).
    """
    attrs: dict[str, Any] = {
        "stagecoach.pipeline": spec.pipeline.name,
        "stagecoach.pipeline.uid": spec.pipeline.uid,
        "stagecoach.stage": spec.stage.name,
        "stagecoach.iteration": spec.iteration,
        "stagecoach.attempt": spec.attempt,
        "stagecoach.stage.kind": "agent" if spec.agent is not None else "run",
    }
    if spec.pipeline.namespace:
        attrs["k8s.namespace.name"] = spec.pipeline.namespace
    if spec.index is not None:
        attrs["stagecoach.index"] = spec.index
    if spec.agent is not None:
        provider = seen.get("provider") or spec.agent.provider
        pspec = spec.providers.get(provider) if provider else None
        attrs["gen_ai.operation.name"] = "chat"
        if pspec is not None:
            attrs["gen_ai.provider.name"] = _PROVIDER_NAMES.get(pspec.type, pspec.type)
        if provider:
            attrs["stagecoach.provider"] = provider
        request_model = seen.get("request_model") or spec.agent.model
        if request_model:
            attrs["gen_ai.request.model"] = request_model
        if seen.get("response_model"):
            attrs["gen_ai.response.model"] = seen["response_model"]
        if seen.get("finish_reason"):
            attrs["gen_ai.response.finish_reasons"] = [str(seen["finish_reason"])]
        if spec.agent.temperature is not None:
            attrs["gen_ai.request.temperature"] = spec.agent.temperature
        if spec.agent.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = spec.agent.max_tokens
        if capture:
            if seen.get("system"):
                attrs["gen_ai.system_instructions"] = json.dumps(
                    [{"type": "text", "content": seen["system"]}], ensure_ascii=False)
            if seen.get("prompt") is not None:
                attrs["gen_ai.input.messages"] = json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": seen["prompt"]}]}],
                    ensure_ascii=False)
            if seen.get("content") is not None:
                attrs["gen_ai.output.messages"] = json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text",
                                                      "content": seen["content"]}],
                      "finish_reason": seen.get("finish_reason") or "stop"}],
                    ensure_ascii=False)
    if result is not None:
        if spec.agent is not None:
            attrs["gen_ai.usage.input_tokens"] = result.tokens.input
            attrs["gen_ai.usage.output_tokens"] = result.tokens.output
            cost = cost_of(result.usage, spec.providers)
            if cost is not None:  # USD, rounded to a micro-dollar (a span holds numbers)
                attrs["gen_ai.usage.cost"] = float(format_usd(cost) or 0)
        attrs["stagecoach.outcome"] = result.phase
        if result.error_class:
            attrs["stagecoach.error_class"] = result.error_class
            attrs["error.type"] = result.error_class
        if result.output_ref:
            attrs["stagecoach.output_ref"] = result.output_ref
    return attrs


class _Observer:
    """A :class:`TraceSink` that forwards every event and remembers what spans need."""

    def __init__(self, sink: TraceSink, seen: dict[str, Any]) -> None:
        self.sink = sink
        self.seen = seen

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        if type == "InputSnapshot" and "model" in data:
            self.seen.update(provider=data.get("provider"), request_model=data.get("model"),
                             system=data.get("system"), prompt=data.get("prompt"))
        elif type == "OutputSnapshot":
            self.seen.update(provider=data.get("provider"), response_model=data.get("model"),
                             finish_reason=data.get("finishReason"),
                             content=data.get("content"))
        await self.sink.emit(type, data)

    def __getattr__(self, name: str) -> Any:  # TraceWriter.events etc. stay reachable
        return getattr(self.sink, name)


class AttemptSpan:
    """The span of one attempt; a context manager that ends it (also on cancellation)."""

    def __init__(self, spec: AttemptSpec, span: Span, token: object, capture: bool,
                 redactor: Redactor | None) -> None:
        self.spec = spec
        self.span = span
        self._token = token
        self.capture = capture
        self.redactor = redactor or Redactor()
        self.seen: dict[str, Any] = {}

    def observe(self, sink: TraceSink, redactor: Redactor | None = None) -> TraceSink:
        """``sink`` wrapped so the span learns models, finish reasons and content;
        ``redactor`` (the attempt's, knowing its API keys) scrubs captured content."""
        if redactor is not None:
            self.redactor = redactor
        return _Observer(sink, self.seen)

    def record(self, result: AttemptResult) -> None:
        """Set the outcome attributes and the span status from the attempt's result."""
        seen = {k: self.redactor.data(v) if k in ("system", "prompt", "content") else v
                for k, v in self.seen.items()}
        self.span.set_attributes(attempt_attributes(self.spec, result, seen, self.capture))
        if not result.ok:
            self.span.set_status(Status(StatusCode.ERROR,
                                        f"{result.error_class}: {result.message or ''}"[:500]))

    def __enter__(self) -> AttemptSpan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.span.set_attribute("stagecoach.outcome", "Cancelled"
                                    if exc_type is not None and exc_type.__name__ ==
                                    "CancelledError" else "Error")
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


def attempt_span(spec: AttemptSpec, *, traceparent: str | None = None,
                 environ: Mapping[str, str] | None = None,
                 redactor: Redactor | None = None) -> AttemptSpan | None:
    """Start the attempt's span (None when tracing is off).

    The parent is ``traceparent``, else ``$TRACEPARENT``, else the current context.
    """
    if not configure("stagecoach-runner", environ):
        return None
    env = os.environ if environ is None else environ
    parent = extract_context(traceparent or env.get(TRACEPARENT_ENV))
    tracer = trace.get_tracer(_TRACER)
    inst = f"[{spec.index}]" if spec.index is not None else ""
    span = tracer.start_span(f"stage {spec.stage.name}{inst}", context=parent,
                             kind=SpanKind.INTERNAL,
                             attributes=attempt_attributes(spec, None, {}, False))
    token = otel_context.attach(trace.set_span_in_context(span))
    return AttemptSpan(spec, span, token, capture_content(env), redactor)

