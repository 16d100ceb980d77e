"""Runner telemetry without an exporter: span attributes (a pure function), W3C context
handling, and that tracing stays off without an endpoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from stagecoach.api import AttemptResult, AttemptSpec, ModelUsage, TokenUsage
from stagecoach_runner import telemetry

MakeSpec = Callable[..., AttemptSpec]

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_tracing_is_off_without_an_endpoint() -> None:
    assert not telemetry.enabled({})
    assert telemetry.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not telemetry.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                  "OTEL_SDK_DISABLED": "true"})
    assert telemetry.capture_content({"STAGECOACH_OTEL_CAPTURE_CONTENT": "true"})
    assert not telemetry.capture_content({})


def test_traceparent_round_trip() -> None:
    ctx = telemetry.extract_context(TP)
    assert ctx is not None
    from opentelemetry import trace

    span = trace.get_current_span(ctx)
    assert telemetry.traceparent_of(span) == TP
    assert telemetry.extract_context("garbage") is None
    assert telemetry.extract_context(None) is None


def test_agent_attempt_attributes(make_spec: MakeSpec) -> None:
    spec = make_spec({"temperature": 0.2, "maxTokens": 100}, iteration=2, attempt=3)
    result = AttemptResult(phase="Succeeded", tokens=TokenUsage(input=12, output=5),
                           output_ref="outputs/s/2.json")
    seen = {"provider": "main", "request_model": "m", "response_model": "m-2024",
            "finish_reason": "stop", "prompt": "hello", "content": "hi"}
    attrs = telemetry.attempt_attributes(spec, result, seen, capture=False)
    assert attrs == {
        "stagecoach.pipeline": "p", "stagecoach.pipeline.uid": "u", "stagecoach.stage": "s",
        "stagecoach.iteration": 2, "stagecoach.attempt": 3, "stagecoach.stage.kind": "agent",
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "stagecoach.provider": "main", "gen_ai.request.model": "m",
        "gen_ai.response.model": "m-2024", "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 100,
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 5,
        "stagecoach.outcome": "Succeeded", "stagecoach.output_ref": "outputs/s/2.json",
    }
    with_content = telemetry.attempt_attributes(spec, result, seen, capture=True)
    assert "hello" in with_content["gen_ai.input.messages"]
    assert "hi" in with_content["gen_ai.output.messages"]


def test_a_priced_attempt_carries_its_cost(make_spec: MakeSpec) -> None:
    spec = make_spec(providers={"main": {"type": "openai", "models": {
        "m": {"pricing": {"input": "2.50", "output": "10.00"}}}}})
    result = AttemptResult(phase="Succeeded", tokens=TokenUsage(input=24, output=18),
                           usage=[ModelUsage(provider="main", model="m", input=24, output=18)])
    attrs = telemetry.attempt_attributes(spec, result, {}, capture=False)
    assert attrs["gen_ai.usage.cost"] == pytest.approx(0.00024)
    unpriced = telemetry.attempt_attributes(make_spec(), result, {}, capture=False)
    assert "gen_ai.usage.cost" not in unpriced  # no price: no cost, never 0


def test_failed_run_stage_attributes(make_spec: MakeSpec) -> None:
    spec = make_spec(stage={"name": "scrape", "run": {"image": "x", "command": ["true"]}},
                     index=4)
    result = AttemptResult.failed("Timeout", "too slow")
    attrs = telemetry.attempt_attributes(spec, result, {}, capture=True)
    assert attrs["stagecoach.index"] == 4 and attrs["stagecoach.stage.kind"] == "run"
    assert attrs["stagecoach.error_class"] == attrs["error.type"] == "Timeout"
    assert not [k for k in attrs if k.startswith("gen_ai.")]


async def test_no_span_when_tracing_is_off(make_spec: MakeSpec) -> None:
    assert telemetry.attempt_span(make_spec(), environ={}) is None
