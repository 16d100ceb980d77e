"""The durable run record round-trips through its ConfigMap form. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml
from stagecoach.api import AgentPipeline, AgentPipelineTemplate, resolve_pipeline
from stagecoach.engine import step
from stagecoach.operator.record import RunRecord, parse_record, record_body, record_name

DOCS = """
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipelineTemplate
metadata: {name: tpl, resourceVersion: "9", managedFields: []}
spec:
  params: {who: {default: world}}
  stages:
    - {name: a, run: {image: x, command: ["true"]}}
    - {name: b, dependsOn: [a], run: {image: x, command: ["true"]}}
---
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: p, namespace: ns, uid: u-1, generation: 1, managedFields: [{x: 1}]}
spec: {templateRef: {name: tpl}, params: {who: you}}
"""


def test_round_trip_keeps_the_snapshot_and_the_jobs() -> None:
    tdoc, pdoc = list(yaml.safe_load_all(DOCS))
    tpl = AgentPipelineTemplate.model_validate(tdoc)
    pipe = AgentPipeline.model_validate(pdoc)
    resolved, _ = resolve_pipeline(pipe, {"tpl": tpl})
    assert resolved is not None
    from stagecoach.engine import new_state

    plan = step(resolved, new_state(resolved), datetime(2026, 1, 1, tzinfo=UTC))
    record = RunRecord(pipe, tpl, plan.state, {"p-a-1-1"})
    body = record_body(record, "ns")
    assert body["metadata"]["name"] == record_name("p") == "p-state"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert "managedFields" not in body["data"]["pipeline.json"]
    again, refs = parse_record(body)
    assert again.jobs == {"p-a-1-1"} and refs == set()
    assert again.template is not None and again.template.metadata.name == "tpl"
    assert again.pipeline.spec.params == {"who": "you"}
    assert again.state.stages["a"].phase == "Running"
    assert again.dump() == record.dump()
