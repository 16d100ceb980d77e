"""Run control in the operator against an in-memory API (DESIGN §9): suspend and
resume, Stop and Terminate, StageApprovals answered once in their status, and
``resumeFrom`` copying what an earlier run finished."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from stagecoach.api import AttemptResult
from stagecoach.operator.approvals import ApprovalIndex
from stagecoach.operator.reconciler import Reconciler
from stagecoach.operator.record import outbox_of
from stagecoach.operator.slots import ProviderSlots
from stagecoach.store import ConfigMapStore, decode_output, encode_output
from stagecoach.store.trace import with_outbox

from .fakekube import FakeKube

NS = "ns"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def pipeline(name: str = "p", *, stages: list[dict[str, Any]] | None = None,
             **spec: Any) -> dict[str, Any]:
    default = [{"name": "a", "agent": {"prompt": "a"}},
               {"name": "b", "dependsOn": ["a"], "agent": {"prompt": "b"}}]
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "generation": 1},
            "spec": {"defaults": {"provider": "llm", "model": "m"},
                     "stages": stages or default, **spec}}


def gated(name: str = "p", **approval: Any) -> dict[str, Any]:
    return pipeline(name, stages=[
        {"name": "a", "agent": {"prompt": "a"}},
        {"name": "gate", "dependsOn": ["a"], "approval": {
            "message": "Ship {{ stages.a.output }}?",
            "inputs": [{"name": "channel", "enum": ["blog", "news"], "default": "blog"}],
            **approval}},
        {"name": "c", "dependsOn": ["gate"], "agent": {
            "prompt": "{{ stages.gate.output.inputs.channel }}"}}])


def setup(*pipes: dict[str, Any]) -> tuple[FakeKube, Reconciler, Clock]:
    kube = FakeKube()
    kube.providers[(NS, "llm")] = {
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
        "metadata": {"name": "llm", "namespace": NS},
        "spec": {"type": "openai", "baseURL": "http://x"}}
    for p in pipes:
        kube.pipelines[(NS, p["metadata"]["name"])] = p
    clock = Clock()
    rec = Reconciler(kube, ProviderSlots(), clock=clock)  # type: ignore[arg-type]
    return kube, rec, clock


async def succeed(kube: FakeKube, job: str, stage: str, value: Any, pipeline: str = "p",
                  iteration: int = 1) -> None:
    store = ConfigMapStore(kube, NS, pipeline, f"uid-{pipeline}")  # type: ignore[arg-type]
    key = f"outputs/{stage}/{iteration}.json"
    await store.put(key, encode_output(value, "json"))
    result = AttemptResult(phase="Succeeded", output_ref=key, tokens={"input": 1, "output": 2})
    kube.finish_job(NS, job, termination=result.to_termination_message())


def fail(kube: FakeKube, job: str) -> None:
    result = AttemptResult.failed("Error", "exit 1")
    kube.finish_job(NS, job, termination=result.to_termination_message(), exit_code=1)


def status(kube: FakeKube, name: str = "p") -> dict[str, Any]:
    return dict(kube.pipelines[(NS, name)]["status"])


def stage(kube: FakeKube, name: str, pipe: str = "p") -> dict[str, Any]:
    return next(s for s in status(kube, pipe)["stages"] if s["name"] == name)


def trace(kube: FakeKube, pipe: str = "p") -> list[dict[str, Any]]:
    """The operator's trace as readers see it: the record plus the state's outbox."""
    out: list[dict[str, Any]] = []
    for (_, n), cm in sorted(kube.configmaps.items()):
        if n.startswith(f"{pipe}-trace"):
            for line in next(iter(cm["data"].values())).splitlines():
                out.append(json.loads(line))
    state = kube.configmaps.get((NS, f"{pipe}-state"))
    return with_outbox(out, outbox_of(state) if state else [])


def approval(name: str, stage: str, decision: str = "Approve", pipe: str = "p",
             **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "StageApproval",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"pipeline": pipe, "stage": stage, "decision": decision,
                     "approver": "alice", **spec}}


def submit(kube: FakeKube, rec: Reconciler, body: dict[str, Any]) -> None:
    kube.approvals[(NS, body["metadata"]["name"])] = body
    assert rec.desk.approvals.observe("ADDED", body) == (NS, body["spec"]["pipeline"])


# -- suspend, stop, terminate ----------------------------------------------------------
async def test_suspend_starts_nothing_new_and_resume_continues() -> None:
    kube, rec, clock = setup(pipeline())
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1"]
    kube.pipelines[(NS, "p")]["spec"]["suspend"] = True
    await succeed(kube, "p-a-1-1", "a", 1)
    clock.advance(1)
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1"]  # a finished, b does not start
    st = status(kube)
    assert (st["phase"], st["reason"]) == ("Suspended", "Suspended")
    assert "spec.suspend" in st["message"]
    assert ("Normal", "Suspended") in {e[:2] for e in kube.events}
    kube.pipelines[(NS, "p")]["spec"]["suspend"] = False
    clock.advance(1)
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1", "p-b-1-1"]
    assert status(kube)["phase"] == "Running"
    assert [e["type"] for e in trace(kube) if e["type"].startswith("Pipeline")] == [
        "PipelineStarted", "PipelineSuspended", "PipelineResumed"]


async def test_terminate_deletes_running_jobs_and_cancels() -> None:
    kube, rec, clock = setup(pipeline())
    kube.pipelines[(NS, "p")]["spec"]["finally"] = [
        {"name": "notify", "agent": {"prompt": "n"}}]
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1") in kube.jobs
    kube.pipelines[(NS, "p")]["spec"]["shutdown"] = "Terminate"
    clock.advance(2)
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1") not in kube.jobs  # the running Job is deleted
    st = status(kube)
    assert (st["phase"], st["reason"]) == ("Cancelled", "Terminated")
    assert kube.job_creates == ["p-a-1-1"]  # finally is skipped
    failed = [e for e in trace(kube) if e["type"] == "StageFailed"]
    assert [(e["stage"], e["data"]["errorClass"]) for e in failed] == [("a", "Cancelled")]
    assert ("Warning", "PipelineCancelled") in {e[:2] for e in kube.events}


async def test_stop_lets_running_attempts_and_finally_finish() -> None:
    kube, rec, clock = setup(pipeline())
    kube.pipelines[(NS, "p")]["spec"]["finally"] = [
        {"name": "notify", "agent": {"prompt": "n"}}]
    await rec.reconcile(NS, "p")
    kube.pipelines[(NS, "p")]["spec"]["shutdown"] = "Stop"
    clock.advance(1)
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1") in kube.jobs and status(kube)["phase"] == "Running"
    await succeed(kube, "p-a-1-1", "a", 1)
    clock.advance(1)
    await rec.reconcile(NS, "p")
    assert kube.job_creates == ["p-a-1-1", "p-notify-1-1"]  # not b; finally runs
    await succeed(kube, "p-notify-1-1", "notify", "sent")
    clock.advance(1)
    await rec.reconcile(NS, "p")
    st = status(kube)
    assert (st["phase"], st["reason"]) == ("Cancelled", "Stopped")
    assert stage(kube, "a")["phase"] == "Succeeded"


# -- approvals ---------------------------------------------------------------------------
async def test_approve_applies_once_and_answers_in_status() -> None:
    kube, rec, clock = setup(gated())
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "v1")
    clock.advance(1)
    await rec.reconcile(NS, "p")
    gate = stage(kube, "gate")
    assert (gate["phase"], gate["reason"], gate["message"]) == (
        "Waiting", "AwaitingApproval", "Ship v1?")
    assert any(r == "ApprovalRequested" and "Ship v1?" in m for _, r, m in kube.events)
    submit(kube, rec, approval("ok", "gate", inputs={"channel": "news"}, message="go"))
    clock.advance(1)
    await rec.reconcile(NS, "p")
    answer = kube.approvals[(NS, "ok")]["status"]
    assert (answer["phase"], answer["reason"]) == ("Accepted", "Approved")
    assert answer["decidedAt"] == "2026-01-01T00:00:02.000Z"
    assert "alice" in answer["message"] and rec.desk.approvals.waiting() == 0
    assert stage(kube, "gate")["phase"] == "Succeeded"
    assert kube.job_creates[-1] == "p-c-1-1"
    env = {e["name"]: e.get("value") for e in
           kube.jobs[(NS, "p-c-1-1")]["spec"]["template"]["spec"]["containers"][0]["env"]}
    upstream = json.loads(env["STAGECOACH_ATTEMPT"] or "{}")["upstream"]
    assert upstream["gate"]["output_ref" if "output_ref" in upstream["gate"]
                            else "outputRef"] == "outputs/gate/1.json"
    stored = decode_output(await ConfigMapStore(
        kube, NS, "p", "uid-p").get("outputs/gate/1.json")).value  # type: ignore[arg-type]
    assert (stored["approved"], stored["approver"], stored["inputs"], stored["message"]) == (
        True, "alice", {"channel": "news"}, "go")
    assert stage(kube, "gate")["outputRef"] == "configmap:p-gate-1"
    assert any(r == "ApprovalDecided" and "alice" in m and "channel=news" in m
               for _, r, m in kube.events)
    # The same object again (a replayed watch event): answered, never applied twice.
    assert rec.desk.approvals.observe("MODIFIED", approval("ok", "gate")) is None


async def test_refusals_say_why_and_change_nothing() -> None:
    kube, rec, clock = setup(gated())
    await rec.reconcile(NS, "p")
    submit(kube, rec, approval("early", "gate"))
    submit(kube, rec, approval("nostage", "ghost"))
    submit(kube, rec, approval("notgate", "a"))
    clock.advance(1)
    await rec.reconcile(NS, "p")
    got = {n: (kube.approvals[(NS, n)]["status"]["phase"],
               kube.approvals[(NS, n)]["status"]["reason"])
           for n in ("early", "nostage", "notgate")}
    assert got == {"early": ("Refused", "NotWaiting"), "nostage": ("Refused", "UnknownStage"),
                   "notgate": ("Refused", "NotAnApprovalStage")}
    assert "not waiting" in kube.approvals[(NS, "early")]["status"]["message"]
    assert stage(kube, "gate")["phase"] == "Pending"
    await succeed(kube, "p-a-1-1", "a", "v1")
    await rec.reconcile(NS, "p")
    submit(kube, rec, approval("badinput", "gate", inputs={"channel": "tv"}))
    clock.advance(1)
    await rec.reconcile(NS, "p")
    bad = kube.approvals[(NS, "badinput")]["status"]
    assert (bad["phase"], bad["reason"]) == ("Refused", "InvalidInputs")
    assert "channel" in bad["message"] and stage(kube, "gate")["phase"] == "Waiting"
    assert any(r == "ApprovalRefused" for _, r, _ in kube.events)


async def test_reject_with_continue_routes_around() -> None:
    pipe = gated()
    pipe["spec"]["stages"][1]["onFailure"] = "continue"
    kube, rec, clock = setup(pipe)
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "v1")
    clock.advance(1)
    await rec.reconcile(NS, "p")
    submit(kube, rec, approval("no", "gate", "Reject", message="not yet"))
    clock.advance(1)
    await rec.reconcile(NS, "p")
    assert kube.approvals[(NS, "no")]["status"]["reason"] == "Rejected"
    gate = stage(kube, "gate")
    assert (gate["phase"], gate["reason"]) == ("Failed", "Rejected")
    assert kube.job_creates[-1] == "p-c-1-1"


async def test_approvals_for_missing_and_finished_pipelines_are_refused() -> None:
    kube, rec, clock = setup(pipeline())
    submit(kube, rec, approval("lost", "gate", pipe="ghost"))
    await rec.reconcile(NS, "ghost")
    lost = kube.approvals[(NS, "lost")]["status"]
    assert (lost["phase"], lost["reason"]) == ("Refused", "PipelineNotFound")
    assert "no pipeline ghost" in lost["message"]
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", 1)
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-b-1-1", "b", 2)
    await rec.reconcile(NS, "p")
    assert status(kube)["phase"] == "Succeeded"
    submit(kube, rec, approval("late", "b"))
    fresh = Reconciler(kube, ProviderSlots(), clock=clock)  # type: ignore[arg-type]
    fresh.desk.approvals = rec.desk.approvals
    await fresh.reconcile(NS, "p")  # a restarted operator: the pipeline is not loaded
    late = kube.approvals[(NS, "late")]["status"]
    assert (late["phase"], late["reason"]) == ("Refused", "PipelineFinished")
    assert "already finished (Succeeded)" in late["message"]


async def test_approval_timeout_survives_a_restart() -> None:
    kube, rec, clock = setup(gated(timeout="1m", onTimeout="approve"))
    woken: list[datetime] = []
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "v1")
    clock.advance(1)
    rec.wake = lambda key, at: woken.append(at)
    await rec.reconcile(NS, "p")
    assert woken[-1] == T0 + timedelta(seconds=61)
    clock.advance(120)
    fresh = Reconciler(kube, ProviderSlots(), clock=clock)  # type: ignore[arg-type]
    await fresh.reconcile(NS, "p")
    gate = stage(kube, "gate")
    assert gate["phase"] == "Succeeded"
    assert kube.job_creates[-1] == "p-c-1-1"
    decided = [e for e in trace(kube) if e["type"] == "ApprovalDecided"]
    assert [e["data"]["by"] for e in decided] == ["timeout"]


def test_the_index_keeps_only_unanswered_approvals() -> None:
    index = ApprovalIndex()
    body = approval("x", "gate")
    assert index.observe(None, body) == (NS, "p")  # the initial listing
    assert [p.name for p in index.pending((NS, "p"))] == ["x"]
    done = {**body, "status": {"phase": "Accepted"}}
    assert index.observe("MODIFIED", done) is None and index.waiting() == 0
    assert index.observe("ADDED", approval("y", "gate", pipe="q")) == (NS, "q")
    index.answered(NS, "y")
    assert index.observe("MODIFIED", approval("y", "gate", pipe="q")) is None
    assert index.observe("DELETED", approval("y", "gate", pipe="q")) is None
    assert index.waiting() == 0


# -- resumeFrom --------------------------------------------------------------------------
async def finished_old(kube: FakeKube, rec: Reconciler, clock: Clock) -> None:
    """Run ``old``: a Succeeded, b Failed (no retry) → Failed."""
    await rec.reconcile(NS, "old")
    await succeed(kube, "old-a-1-1", "a", {"n": 41}, pipeline="old")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    fail(kube, "old-b-1-1")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    assert status(kube, "old")["phase"] == "Failed"


def snapshot(kube: FakeKube, prefix: str) -> dict[str, str]:
    return {n: json.dumps(cm, sort_keys=True) for (_, n), cm in kube.configmaps.items()
            if n.startswith(prefix)}


async def test_resume_from_reuses_what_succeeded_and_copies_its_output() -> None:
    kube, rec, clock = setup(pipeline("old"))
    await finished_old(kube, rec, clock)
    before = snapshot(kube, "old-")
    old_body = json.dumps(kube.pipelines[(NS, "old")], sort_keys=True)
    kube.pipelines[(NS, "new")] = pipeline("new", resumeFrom={"name": "old"})
    creates = len(kube.job_creates)
    clock.advance(1)
    await rec.reconcile(NS, "new")
    assert kube.job_creates[creates:] == ["new-b-1-1"]  # a is reused: no Job
    a = stage(kube, "a", "new")
    assert (a["phase"], a["reason"]) == ("Succeeded", "Reused")
    assert a["outputRef"] == "configmap:new-a-1"
    copied = kube.configmaps[(NS, "new-a-1")]
    assert copied["metadata"]["ownerReferences"][0]["uid"] == "uid-new"
    assert decode_output(next(iter(copied["data"].values())).encode()).value == {"n": 41}
    assert status(kube, "new")["tokens"] == {"input": 0, "output": 0}
    events = {e["type"]: e for e in trace(kube, "new")}
    assert events["StageReused"]["data"]["source"] == "old"
    assert events["ResumeDecided"]["data"]["rerun"]["b"] == "it was Failed there"
    assert any(r == "ResumeDecided" and "reused a" in m and "b: it was Failed" in m
               for _, r, m in kube.events)
    # b's attempt reads a's output from the new run's store.
    state = kube.configmaps[(NS, "new-state")]
    raw = json.loads(gzip.decompress(base64.b64decode(state["binaryData"]["state.json.gz"])))
    assert raw["stages"]["a"]["output_ref"] == "outputs/a/1.json"
    assert snapshot(kube, "old-") == before  # OLD never changes
    assert json.dumps(kube.pipelines[(NS, "old")], sort_keys=True) == old_body


async def test_resume_from_a_deleted_pipeline_fails_clearly() -> None:
    kube, rec, _ = setup(pipeline("new", resumeFrom={"name": "gone"}))
    await rec.reconcile(NS, "new")
    st = status(kube, "new")
    assert (st["phase"], st["reason"]) == ("Failed", "ResumeSourceNotFound")
    assert "spec.resumeFrom.name: pipeline gone not found" in st["message"]
    assert kube.job_creates == []


async def test_resume_from_a_running_pipeline_waits_for_it() -> None:
    kube, rec, clock = setup(pipeline("old"), pipeline("new", resumeFrom={"name": "old"}))
    await rec.reconcile(NS, "old")
    await rec.reconcile(NS, "new")
    st = status(kube, "new")
    assert (st["phase"], st["reason"]) == ("Pending", "WaitingForResumeSource")
    assert "old" in st["message"] and kube.job_creates == ["old-a-1-1"]
    await succeed(kube, "old-a-1-1", "a", {"n": 1}, pipeline="old")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    fail(kube, "old-b-1-1")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    assert rec.desk.source_changed((NS, "old")) == {(NS, "new")}
    await rec.reconcile(NS, "new")
    assert stage(kube, "a", "new")["reason"] == "Reused"
    assert kube.job_creates[-1] == "new-b-1-1"


async def test_a_reused_output_gone_from_the_source_runs_again() -> None:
    kube, rec, clock = setup(pipeline("old"))
    await finished_old(kube, rec, clock)
    del kube.configmaps[(NS, "old-a-1")]
    kube.pipelines[(NS, "new")] = pipeline("new", resumeFrom={"name": "old"})
    await rec.reconcile(NS, "new")
    assert kube.job_creates[-1] == "new-a-1-1"
    assert stage(kube, "a", "new")["phase"] == "Running"


async def test_a_changed_stage_and_what_depends_on_it_run_again() -> None:
    kube, rec, clock = setup(pipeline("old"))
    await rec.reconcile(NS, "old")
    await succeed(kube, "old-a-1-1", "a", {"n": 1}, pipeline="old")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    await succeed(kube, "old-b-1-1", "b", {"n": 2}, pipeline="old")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    assert status(kube, "old")["phase"] == "Succeeded"
    new = pipeline("new", resumeFrom={"name": "old"})
    new["spec"]["stages"][0]["agent"]["prompt"] = "a, but better"
    kube.pipelines[(NS, "new")] = new
    await rec.reconcile(NS, "new")
    assert kube.job_creates[-1] == "new-a-1-1"
    decided = next(e for e in trace(kube, "new") if e["type"] == "ResumeDecided")
    assert decided["data"]["reused"] == []
    assert decided["data"]["rerun"] == {"a": "its resolved spec changed",
                                        "b": "it depends on a, which runs again"}


async def test_resume_from_copies_between_buckets() -> None:
    from obstore.store import MemoryStore
    from stagecoach.api import StoreRef
    from stagecoach.store import S3Store

    memory = MemoryStore()

    def factory(ref: StoreRef) -> S3Store:
        return S3Store(ref.bucket or "", prefix=ref.prefix, object_store=memory)

    storage = {"type": "s3", "s3": {"bucket": "runs", "prefix": "sc"}}
    kube, rec, clock = setup(pipeline("old", storage=storage))
    rec.store_factory = factory
    await rec.reconcile(NS, "old")
    old_store = factory(StoreRef(type="s3", bucket="runs", prefix="sc/ns/old/uid-old"))
    await old_store.put("outputs/a/1.json", encode_output({"n": 7}, "json"))
    done = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json")
    kube.finish_job(NS, "old-a-1-1", termination=done.to_termination_message())
    clock.advance(1)
    await rec.reconcile(NS, "old")
    fail(kube, "old-b-1-1")
    clock.advance(1)
    await rec.reconcile(NS, "old")
    kube.pipelines[(NS, "new")] = pipeline("new", resumeFrom={"name": "old"}, storage=storage)
    await rec.reconcile(NS, "new")
    assert stage(kube, "a", "new")["reason"] == "Reused"
    assert stage(kube, "a", "new")["outputRef"] == "s3://runs/sc/ns/new/uid-new/outputs/a/1.json"
    new_store = factory(StoreRef(type="s3", bucket="runs", prefix="sc/ns/new/uid-new"))
    assert decode_output(await new_store.get("outputs/a/1.json")).value == {"n": 7}
    assert kube.job_creates[-1] == "new-b-1-1"
