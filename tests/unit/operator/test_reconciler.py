"""Reconciles against an in-memory API: Jobs created once, outcomes folded in, status
patched only on a diff, crash windows, deleted Jobs, Invalid."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
    fresh.kube = kube  # type: ignore[assignment]
    await fresh.reconcile(NS, "p")
    assert (NS, "p-a-1-1") in kube.jobs
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
