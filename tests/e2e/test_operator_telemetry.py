"""OpenTelemetry on the cluster: an operator with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set runs
a pipeline of two agent stages; the real OTLP/HTTP payloads (from the operator and from the stage
pods) form one trace, the pipeline's root span over the runner's attempt spans (GenAI
attributes, no prompt content) and the operator's scheduling spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stagecoach.telemetry import pipeline_ids

from tests.e2e.conftest import Kubectl, Operator
from tests.fixtures.otlp import OTLPReceiver, ReceivedSpan

pytestmark = pytest.mark.cluster

CONTENT = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}
SLACK_NS = 50_000_000  # clocks of different processes on one host, rounding

DOCS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: duet-cassette}
data:
  cassette.yaml: |
    apiVersion: stagecoach.dev/v1alpha1
    kind: Cassette
    entries:
      - stage: draft
        response: {content: "roses are red", usage: {input: 9, output: 4}, model: tiny-2,
                   finishReason: stop}
      - stage: review
        response: {content: "violets are blue", usage: {input: 12, output: 5},
                   model: tiny-2, finishReason: stop}
---
apiVersion: stagecoach.dev/v1alpha1
kind: ModelProvider
metadata: {name: local-llm}
spec: {type: replay, cassette: {configMapRef: {name: duet-cassette}}}
---
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: duet}
spec:
  defaults: {provider: local-llm, model: tiny}
  params: {who: sk-not-a-secret}
  stages:
    - name: draft
      agent: {system: "You are a poet.", prompt: "A line about {{ params.who }}"}
    - name: review
      dependsOn: [draft]
      agent: {prompt: "Improve: {{ stages.draft.output }}"}
"""


def _complete(spans: list[ReceivedSpan]) -> bool:
    names = {s.name for s in spans}
    return {"pipeline duet", "stage draft", "stage review", "schedule"} <= names


def test_cluster_run_is_one_trace(crds: object, kube_namespace: str, kubectl: Kubectl,
                                  otlp_receiver: OTLPReceiver, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export promptly
    op = Operator(kubectl.cluster, kube_namespace, tmp_path)
    op.start()
    try:
        kubectl.apply(DOCS)
        obj = kubectl.wait_phase("duet", {"Succeeded", "Failed", "Invalid"}, operator=op)
        status = obj["status"]
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + op.logs()[-3000:]
        spans = otlp_receiver.wait_for(_complete, timeout=30)
        assert _complete(spans), ([s.name for s in spans], op.logs()[-3000:])
        job = kubectl.get("job", "duet-draft-1-1")
    finally:
        op.kill()

    trace_id, span_id = (f"{n:0{w}x}" for n, w in zip(pipeline_ids(obj["metadata"]["uid"]),
                                                          (32, 16), strict=True))
    # Every stage container got the run's traceparent and the endpoint.
    env = {e["name"]: e.get("value") for e in
           job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRACEPARENT"] == f"00-{trace_id}-{span_id}-01"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == otlp_receiver.endpoint

    assert {s.trace_id for s in spans} == {trace_id}  # one trace
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    assert (root.name, root.span_id) == ("pipeline duet", span_id)
    assert root.attributes["stagecoach.phase"] == "Succeeded"
    assert root.attributes["k8s.namespace.name"] == kube_namespace
    assert (root.attributes["gen_ai.usage.input_tokens"],
            root.attributes["gen_ai.usage.output_tokens"]) == (21, 9)

    stages = {s.name: s for s in spans if s.name.startswith("stage ")}
    assert set(stages) == {"stage draft", "stage review"}  # one attempt each
    for name, s in stages.items():
        a = s.attributes
        assert s.parent_span_id == span_id, name
        assert a["stagecoach.stage"] == name.removeprefix("stage ")
        assert a["stagecoach.pipeline"] == "duet" and a["stagecoach.outcome"] == "Succeeded"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "stagecoach.replay"
        assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("tiny", "tiny-2")
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert root.start_ns - SLACK_NS <= s.start_ns and s.end_ns <= root.end_ns + SLACK_NS

    schedules = [s for s in spans if s.name == "schedule"]
    assert all(s.parent_span_id == span_id for s in schedules)
    assert all(s.attributes["stagecoach.pipeline"] == "duet" for s in schedules)
    assert sum(s.attributes["stagecoach.started"] for s in schedules) == 2
    assert {s.service for s in schedules} == {root.service}
    # review depends on draft: its Job is created by a later scheduling span
    assert len(schedules) == 2
    first = min(schedules, key=lambda s: s.start_ns)
    assert first.start_ns <= stages["stage draft"].start_ns

    assert not any(CONTENT & s.attributes.keys() for s in spans)  # no prompt content
    assert not any("sk-not-a-secret" in json.dumps(s.attributes) for s in spans)
