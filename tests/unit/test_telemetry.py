"""The shells' telemetry API: deterministic pipeline ids and TRACEPARENT injection."""

from __future__ import annotations

from stagecoach import telemetry
from stagecoach_runner.telemetry import extract_context

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_pipeline_ids_are_stable_and_distinct() -> None:
    a, b = telemetry.pipeline_ids("uid-1"), telemetry.pipeline_ids("uid-2")
    assert a == telemetry.pipeline_ids("uid-1") and a != b
    assert 0 < a[0] < 2**128 and 0 < a[1] < 2**64
    trace_id, span_id = a
    assert extract_context(f"00-{trace_id:032x}-{span_id:016x}-01") is not None


def test_inject_traceparent_into_a_dict_and_a_pod_env_list() -> None:
    env: dict[str, str] = {"A": "1"}
    telemetry.inject_traceparent(env, TP)
    assert env == {"A": "1", "TRACEPARENT": TP}
    pod_env = [{"name": "TRACEPARENT", "value": "old"}, {"name": "B", "value": "2"}]
    telemetry.inject_traceparent(pod_env, TP)
    assert pod_env == [{"name": "B", "value": "2"}, {"name": "TRACEPARENT", "value": TP}]


def test_nothing_is_injected_without_a_span() -> None:
    env: dict[str, str] = {}
    telemetry.inject_traceparent(env)  # no current span
    assert env == {}


def test_pipeline_span_is_none_when_tracing_is_off() -> None:
    with telemetry.start_pipeline_span("p", "u", environ={}) as span:
        assert span is None
    telemetry.set_pipeline_outcome(span, "Failed", "x")  # a no-op
