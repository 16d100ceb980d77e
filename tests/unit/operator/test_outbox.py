"""The operator's trace events ride in the run state's outbox until they are worth an
append (or the run ends); readers merge the outbox, so nothing is missing meanwhile and
nothing counts twice."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach.operator import reconciler as reconciler_module
from stagecoach.operator.record import outbox_of

from .fakekube import FakeKube
from .test_control import trace
from .test_reconciler import NS, agent_pipeline, setup, succeed


def trace_writes(kube: FakeKube) -> list[str]:
    """Wrap the fake's ConfigMap writes: each write of the operator's trace record."""
    written: list[str] = []
    create, replace = kube.create_configmap, kube.replace_configmap

    async def create_cm(ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["name"].endswith("-trace-operator"):
            written.append(body["metadata"]["name"])
        return await create(ns, body)

    async def replace_cm(ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["name"].endswith("-trace-operator"):
            written.append(body["metadata"]["name"])
        return await replace(ns, body)

    kube.create_configmap = create_cm  # type: ignore[method-assign]
    kube.replace_configmap = replace_cm  # type: ignore[method-assign]
    return written


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_events_ride_with_the_state_and_are_appended_once_when_the_run_ends() -> None:
    kube, rec = setup(agent_pipeline())
    written = trace_writes(kube)
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "hello")
    await rec.reconcile(NS, "p")
    assert written == []  # two passes, no trace append: the events are in the state
    assert (NS, "p-trace-operator") not in kube.configmaps
    running = trace(kube)
    assert types(running)[:2] == ["PipelineStarted", "StageReady"]
    assert ("StageSucceeded", "a") in {(e["type"], e["stage"]) for e in running}
    await succeed(kube, "p-b-1-1", "b", "done")
    await rec.reconcile(NS, "p")
    assert written == ["p-trace-operator"]  # one append for the whole run
    record = kube.configmaps[(NS, "p-trace-operator")]["data"]["operator.jsonl"]
    assert record.count('"type":"StageSucceeded"') == 2
    done = trace(kube)
    assert types(done).count("StageSucceeded") == 2  # the outbox copy counts once
    assert types(done)[-1] == "PipelineSucceeded"


async def test_a_restart_appends_what_the_saved_state_carried() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    assert outbox_of(kube.configmaps[(NS, "p-state")])  # carried, not appended
    _, fresh = setup()
    fresh.kube = fresh.gather.kube = kube  # type: ignore[assignment]
    await succeed(kube, "p-a-1-1", "a", "hello")
    await fresh.reconcile(NS, "p")  # loads the record and appends its outbox first
    record = kube.configmaps[(NS, "p-trace-operator")]["data"]["operator.jsonl"]
    assert '"type":"PipelineStarted"' in record
    await succeed(kube, "p-b-1-1", "b", "done")
    await fresh.reconcile(NS, "p")
    events = trace(kube)
    assert types(events).count("PipelineStarted") == 1
    assert types(events).count("StageStarted") == 2


async def test_a_full_outbox_is_appended_before_the_run_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler_module, "OUTBOX_FLUSH_BYTES", 1)
    kube, rec = setup(agent_pipeline())
    written = trace_writes(kube)
    await rec.reconcile(NS, "p")
    assert written == ["p-trace-operator"]
    await succeed(kube, "p-a-1-1", "a", "hello")
    await rec.reconcile(NS, "p")
    assert written == ["p-trace-operator"] * 2
    assert types(trace(kube)).count("StageStarted") == 2


async def test_a_run_the_operator_ends_itself_keeps_the_events_it_saved() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    await rec._fail_run(NS, kube.pipelines[(NS, "p")], "StateTooLarge", "too large")
    record = kube.configmaps[(NS, "p-trace-operator")]["data"]["operator.jsonl"]
    assert '"type":"StageStarted"' in record

