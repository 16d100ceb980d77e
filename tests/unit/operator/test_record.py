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
    assert "pipeline" not in body["data"]["pipeline.json"]  # the live spec is the snapshot
    again, refs = parse_record(body, pipe)
    assert again.jobs == {"p-a-1-1"} and refs == set()
    assert again.template is not None and again.template.metadata.name == "tpl"
    assert again.pipeline.spec.params == {"who": "you"}
    assert again.state.stages["a"].phase == "Running"
    assert again.dump() == record.dump()


def test_records_of_the_earlier_format_still_load() -> None:
    import json

    tdoc, pdoc = list(yaml.safe_load_all(DOCS))
    pipe = AgentPipeline.model_validate(pdoc)
    tpl = AgentPipelineTemplate.model_validate(tdoc)
    resolved, _ = resolve_pipeline(pipe, {"tpl": tpl})
    assert resolved is not None
    from stagecoach.engine import dump_state, new_state

    old = {"data": {"state.json": json.dumps(dump_state(new_state(resolved))),
                    "pipeline.json": json.dumps({"pipeline": pipe.model_dump(
                        by_alias=True, exclude_none=True, mode="json", exclude={"status"}),
                        "template": tdoc}),
                    "jobs.json": "[]"}}
    again, _ = parse_record(old, pipe)
    assert again.state.stages["a"].phase == "Pending" and again.template is not None


def _size(body: dict[str, object]) -> int:
    import json

    return len(json.dumps(body, separators=(",", ":")).encode())


def test_the_state_of_a_large_pipeline_stays_under_half_the_configmap_limit() -> None:
    """DESIGN §10: 1,000 stages with 1.2 KB prompts, every attempt with a long message;
    and a 5,000-instance forEach. Both records stay under 512 KiB (half of 1 MiB)."""
    import random

    from stagecoach.engine import new_state

    prompt = "Summarise the findings about {{ params.topic }} in detail. " * 20
    stages = [{"name": f"s{i}", "agent": {"provider": "p", "prompt": prompt[:1200]},
               **({"dependsOn": [f"s{i - 1}"]} if i else {})} for i in range(1000)]
    pdoc = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": "big", "namespace": "ns", "uid": "u"},
            "spec": {"params": {"topic": "batteries"}, "stages": stages}}
    pipe = AgentPipeline.model_validate(pdoc)
    resolved, problems = resolve_pipeline(pipe, {})
    assert resolved is not None, problems
    state = new_state(resolved)
    from stagecoach.engine.state import Instance

    for n, run in enumerate(state.stages.values()):
        run.phase, run.output_ref = "Succeeded", f"outputs/{run.name}/1.json"
        # incompressible text, the worst case for the gzipped state
        message = f"stage {n}: " + random.Random(n).randbytes(1000).hex()
        run.instances = [Instance(phase="Succeeded", attempt=3, reason="MalformedOutput",
                                  output_ref=run.output_ref, message=message,
                                  previous_error=message)]
    wide = AgentPipeline.model_validate({**pdoc, "metadata": {"name": "wide", "uid": "w"},
                                         "spec": {"stages": [{"name": "fan", "forEach": "[]",
                                                              "run": {"image": "x",
                                                                      "command": ["x"]}}]}})
    wide_resolved, _ = resolve_pipeline(wide, {})
    assert wide_resolved is not None
    wide_state = new_state(wide_resolved)

    fan = wide_state.stages["fan"]
    fan.instances = [Instance(index=i, item={"url": f"https://example.com/page/{i}"},
                              phase="Succeeded", attempt=1,
                              output_ref=f"outputs/fan/1-{i}.json") for i in range(5000)]
    sizes = {}
    for name, p, st in (("1,000 stages", pipe, state), ("5,000 instances", wide, wide_state)):
        body = record_body(RunRecord(p, None, st), "ns")
        sizes[name] = _size(body)
    print("\n<pipeline>-state sizes: " + ", ".join(f"{k}: {v / 1024:.0f} KiB"
                                                  for k, v in sizes.items()))
    assert all(v < 512 * 1024 for v in sizes.values()), sizes
