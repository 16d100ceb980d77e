"""Reconciles against an in-memory API: Jobs created once, outcomes folded in, status
patched only on a diff, crash windows, deleted Jobs, Invalid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from stagecoach.api import AttemptResult
from stagecoach.operator.reconciler import Reconciler
from stagecoach.operator.slots import ProviderSlots
from stagecoach.store import ConfigMapStore, encode_output

from .fakekube import FakeKube

NS = "ns"


def agent_pipeline(name: str = "p", provider: str = "llm") -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": {"defaults": {"provider": provider, "model": "m"},
                     "stages": [{"name": "a", "agent": {"prompt": "hi"}},
                                {"name": "b", "dependsOn": ["a"],
                                 "agent": {"prompt": "{{ stages.a.output }}"}}]}}


def provider(name: str = "llm", **limits: int) -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "openai", "baseURL": "http://x", "limits": limits}}


def setup(*pipelines: dict[str, Any], **limits: int) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube()
    kube.providers[(NS, "llm")] = provider(**limits)
    for p in pipelines:
        kube.pipelines[(NS, p["metadata"]["name"])] = p
    clock = iter(datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(60))
    rec = Reconciler(kube, ProviderSlots(), clock=lambda: next(clock))  # type: ignore[arg-type]
    return kube, rec


async def succeed(kube: FakeKube, job: str, stage: str, value: Any, pipeline: str = "p") -> None:
    store = ConfigMapStore(kube, NS, pipeline, f"uid-{pipeline}")  # type: ignore[arg-type]
    key = f"outputs/{stage}/1.json"
    await store.put(key, encode_output(value, "text"))
    result = AttemptResult(phase="Succeeded", output_ref=key, tokens={"input": 3, "output": 4})
    kube.finish_job(NS, job, termination=result.to_termination_message())


async def test_a_pipeline_runs_to_success_and_patches_only_on_change() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1"]
    assert "p-state" in {n for _, n in kube.configmaps}
    assert kube.pipelines[(NS, "p")]["status"]["phase"] == "Running"
    patches = len(kube.status_patches)
    await rec.reconcile(NS, "p")  # nothing happened: no new Job, no status patch
    assert kube.job_creates == ["p-a-1-1"] and len(kube.status_patches) == patches
    await succeed(kube, "p-a-1-1", "a", "hello")
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1", "p-b-1-1"]
    await succeed(kube, "p-b-1-1", "b", "done")
    await rec.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    assert status["phase"] == "Succeeded" and status["tokens"] == {"input": 6, "output": 8}
    assert status["stages"][0]["outputRef"] == "configmap:p-a-1"
    assert {r for _, r, _ in kube.events} >= {"StageStarted", "StageSucceeded",
                                              "PipelineSucceeded"}


async def test_restart_adopts_and_creates_what_the_crash_skipped() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    # Crash window: the state says Running, but the Job was never created.
    kube.jobs.clear()
    state = kube.configmaps[(NS, "p-state")]
    state["data"]["jobs.json"] = "[]"
    _, fresh = setup()
    fresh.kube = fresh.gather.kube = kube  # type: ignore[assignment]
    await fresh.reconcile(NS, "p")
    assert (NS, "p-a-1-1") in kube.jobs
    assert kube.pipelines[(NS, "p")]["status"]["stages"][0]["attempt"] == 1


async def test_a_started_run_whose_record_is_gone_fails_instead_of_running_again() -> None:
    """A fresh start would run its stages a second time (and, in a namespace being
    deleted, re-judge a finished run against providers that are already gone)."""
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    assert kube.pipelines[(NS, "p")]["status"]["startedAt"]
    del kube.configmaps[(NS, "p-state")]
    _, fresh = setup()  # a restarted operator: nothing in memory
    fresh.kube = fresh.gather.kube = kube  # type: ignore[assignment]
    await fresh.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "StateLost")
    assert "p-state" in status["message"]
    assert kube.job_creates == ["p-a-1-1"] and (NS, "p-state") not in kube.configmaps
    await fresh.reconcile(NS, "p")  # Failed is terminal: never loaded again
    assert kube.job_creates == ["p-a-1-1"]


async def test_an_inline_output_is_read_from_the_result_not_the_store() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    data = encode_output("hello", "text")
    result = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json",
                           output=data.decode())
    kube.finish_job(NS, "p-a-1-1", termination=result.to_termination_message())
    reads: list[str] = []
    real = kube.get_configmap

    async def counted(ns: str, name: str) -> Any:
        reads.append(name)
        return await real(ns, name)
    kube.get_configmap = counted  # type: ignore[method-assign]
    await rec.reconcile(NS, "p")
    assert "p-a-1" not in reads  # the output ConfigMap was never read
    stages = {s["name"]: s for s in kube.pipelines[(NS, "p")]["status"]["stages"]}
    assert stages["a"]["phase"] == "Succeeded" and stages["b"]["phase"] == "Running"


async def test_a_crash_before_the_first_status_reloads_the_record_it_left() -> None:
    """A pipeline without status is started without reading a record (none can exist,
    but for this crash window): the create conflicts and the retried pass reads it."""
    from stagecoach.store import Conflict

    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    kube.pipelines[(NS, "p")].pop("status")  # the crash: record saved, nothing else
    kube.jobs.clear()
    kube.configmaps[(NS, "p-state")]["data"]["jobs.json"] = "[]"
    _, fresh = setup()
    fresh.kube = fresh.gather.kube = kube  # type: ignore[assignment]
    with pytest.raises(Conflict):
        await fresh.reconcile(NS, "p")
    assert kube.jobs == {}
    await fresh.reconcile(NS, "p")
    assert list(kube.jobs) == [(NS, "p-a-1-1")]
    assert kube.pipelines[(NS, "p")]["status"]["stages"][0]["attempt"] == 1


async def test_a_deleted_job_is_a_failed_attempt() -> None:
    pipe = agent_pipeline()
    pipe["spec"]["defaults"]["retry"] = {"limit": 1, "backoff": {"initial": "1s"}}
    kube, rec = setup(pipe)
    await rec.reconcile(NS, "p")
    del kube.jobs[(NS, "p-a-1-1")]
    await rec.reconcile(NS, "p")
    stage = kube.pipelines[(NS, "p")]["status"]["stages"][0]
    assert (stage["phase"], stage["reason"]) == ("Waiting", "Error")
    assert any(r == "StageRetry" and "deleted" in m for _, r, m in kube.events)


async def test_unknown_provider_is_invalid_without_jobs() -> None:
    kube, rec = setup(agent_pipeline(provider="ghost"))
    await rec.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    assert status["phase"] == "Invalid" and "ghost" in status["message"]
    assert kube.jobs == {} and ("Warning", "Invalid") in {e[:2] for e in kube.events}


async def test_max_concurrency_across_pipelines() -> None:
    kube, rec = setup(agent_pipeline("p"), agent_pipeline("q"), maxConcurrency=1)
    await rec.reconcile(NS, "p")
    await rec.reconcile(NS, "q")
    assert kube.job_creates == ["p-a-1-1"]
    q = kube.pipelines[(NS, "q")]["status"]["stages"][0]
    assert (q["phase"], q["reason"]) == ("Queued", "WaitingForProvider")
    assert kube.providers[(NS, "llm")]["status"] == {"inUse": 1, "queued": 1}
    await succeed(kube, "p-a-1-1", "a", "x")
    await rec.reconcile(NS, "p")  # p freed the slot but q waited first
    assert kube.job_creates == ["p-a-1-1"]
    await rec.reconcile(NS, "q")
    assert kube.job_creates == ["p-a-1-1", "q-a-1-1"]


async def test_requests_per_minute_limits_admission() -> None:
    kube, rec = setup(agent_pipeline("p"), agent_pipeline("q"), requestsPerMinute=1)
    woken: list[datetime] = []
    rec.wake = lambda key, at: woken.append(at)
    await rec.reconcile(NS, "p")
    await rec.reconcile(NS, "q")
    assert kube.job_creates == ["p-a-1-1"]
    assert woken and woken[-1] == datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)


async def test_s3_storage_puts_outputs_and_trace_in_the_bucket() -> None:
    from obstore.store import MemoryStore
    from stagecoach.api import AttemptSpec, StoreRef
    from stagecoach.store import S3Store

    pipe = agent_pipeline()
    pipe["spec"]["storage"] = {"type": "s3", "s3": {"bucket": "runs", "prefix": "sc",
                                                    "credentialsSecret": "s3-creds"}}
    kube, rec = setup(pipe)
    memory = MemoryStore()

    def factory(ref: StoreRef) -> S3Store:
        return S3Store(ref.bucket or "", prefix=ref.prefix, object_store=memory)

    rec.store_factory = factory
    await rec.reconcile(NS, "p")
    job = kube.jobs[(NS, "p-a-1-1")]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds", "key": "accessKeyId"}
    spec = AttemptSpec.from_json(env["STAGECOACH_ATTEMPT"]["value"])
    assert (spec.store.type, spec.store.bucket, spec.store.prefix) == ("s3", "runs",
                                                                       "sc/ns/p/uid-p")
    status = kube.pipelines[(NS, "p")]["status"]
    assert status["traceRef"] == "s3://runs/sc/ns/p/uid-p/trace/"
    assert not [n for _, n in kube.configmaps if "trace" in n]
    assert "p-state" in {n for _, n in kube.configmaps}  # the run record stays a ConfigMap


def _memory_factory() -> Any:
    from obstore.store import MemoryStore
    from stagecoach.api import StoreRef
    from stagecoach.store import S3Store

    memory = MemoryStore()

    def factory(ref: StoreRef) -> S3Store:
        return S3Store(ref.bucket or "", prefix=ref.prefix, object_store=memory)

    return factory


async def test_default_storage_s3_for_pipelines_without_spec_storage() -> None:
    from stagecoach.api import AttemptSpec
    from stagecoach.operator.storage import parse_default_storage

    kube, rec = setup(agent_pipeline())
    rec.default_storage = parse_default_storage(
        '{"type": "s3", "s3": {"bucket": "runs", "prefix": "d", "credentialsSecret": "c"}}')
    rec.store_factory = _memory_factory()
    await rec.reconcile(NS, "p")
    env = {e["name"]: e for e in
           kube.jobs[(NS, "p-a-1-1")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    spec = AttemptSpec.from_json(env["STAGECOACH_ATTEMPT"]["value"])
    assert (spec.store.type, spec.store.bucket, spec.store.prefix) == ("s3", "runs", "d/ns/p/uid-p")
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "c"
    assert kube.pipelines[(NS, "p")]["status"]["traceRef"] == "s3://runs/d/ns/p/uid-p/trace/"


async def test_configmap_store_spills_to_the_default_bucket() -> None:
    from stagecoach.api import AttemptSpec
    from stagecoach.operator.storage import parse_default_storage
    from stagecoach.store import SpillStore, open_store

    kube, rec = setup(agent_pipeline())
    rec.default_storage = parse_default_storage(
        '{"type": "configmap", "s3": {"bucket": "runs", "credentialsSecret": "c"}}')
    factory = _memory_factory()
    rec.store_factory = factory
    await rec.reconcile(NS, "p")
    env = {e["name"]: e for e in
           kube.jobs[(NS, "p-a-1-1")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    spec = AttemptSpec.from_json(env["STAGECOACH_ATTEMPT"]["value"])
    assert spec.store.type == "configmap" and spec.store.overflow is not None
    assert (spec.store.overflow.bucket, spec.store.overflow.prefix) == ("runs", "ns/p/uid-p")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "c"
    assert isinstance(open_store(spec.store, pipeline=spec.pipeline), SpillStore)
    # The pod's SpillStore: a large output goes to the bucket, a pointer to the ConfigMap.
    pod_store = SpillStore(ConfigMapStore(kube, NS, "p", "uid-p"),  # type: ignore[arg-type]
                           factory(spec.store.overflow))
    big = "x" * (2 * 1024 * 1024)
    await pod_store.put("outputs/a/1.json", encode_output(big, "text"))
    pointer = kube.configmaps[(NS, "p-a-1")]["data"]["1.json"]
    assert json.loads(pointer)["stagecoach.dev/spilled"] == \
        "s3://runs/ns/p/uid-p/outputs/a/1.json"
    result = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json",
                           tokens={"input": 3, "output": 4})
    kube.finish_job(NS, "p-a-1-1", termination=result.to_termination_message())
    await rec.reconcile(NS, "p")  # the operator follows the pointer
    assert kube.job_creates == ["p-a-1-1", "p-b-1-1"]
    assert rec.runs[(NS, "p")].record.state.stages["a"].output == big


async def test_tracing_schedule_spans_root_span_and_job_env(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    from stagecoach import telemetry

    spans: list[tuple[str, str, dict[str, Any]]] = []

    @contextmanager
    def child(uid: str, name: str, *, attributes: Any = None, **_: Any) -> Iterator[None]:
        spans.append((name, uid, dict(attributes or {})))
        yield None

    @contextmanager
    def root(name: str, uid: str, **kw: Any) -> Iterator[None]:
        spans.append(("root", uid, kw))
        yield None

    monkeypatch.setattr(telemetry, "pipeline_child_span", child)
    monkeypatch.setattr(telemetry, "start_pipeline_span", root)
    monkeypatch.setattr(telemetry, "pipeline_traceparent", lambda uid: f"00-{uid}-01")
    kube, rec = setup(agent_pipeline())
    rec.tracing, rec.otlp_endpoint = True, "http://collector:4318"
    await rec.reconcile(NS, "p")
    env = {e["name"]: e.get("value") for e in
           kube.jobs[(NS, "p-a-1-1")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRACEPARENT"] == "00-uid-p-01"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert spans == [("schedule", "uid-p", {"stagecoach.pipeline": "p",
                                            "k8s.namespace.name": NS, "stagecoach.started": 1,
                                            "stagecoach.stages": ["a"]})]
    await rec.reconcile(NS, "p")  # nothing started: no span
    assert len(spans) == 1
    await succeed(kube, "p-a-1-1", "a", "hello")
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-b-1-1", "b", "done")
    await rec.reconcile(NS, "p")
    assert [s[0] for s in spans] == ["schedule", "schedule", "root"]
    assert spans[-1][2]["start_time"] == datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert spans[-1][2]["namespace"] == NS
