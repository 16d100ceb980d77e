"""Controlling a run in the cluster (DESIGN §9): suspend and resume, Stop and Terminate,
approval stages decided by StageApprovals (answered in their status), an approval's
timeout across an operator restart, ``resumeFrom`` after a failed run, and which spec
fields the API server lets change after creation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    RELEASE_NAMESPACE,
    Kubectl,
    Operator,
    figure,
    operator_service_account,
)
from tests.e2e.test_operator_resilience import stage_status

pytestmark = pytest.mark.cluster

API = "stagecoach.dev/v1alpha1"
DONE = {"Succeeded", "Failed", "Cancelled", "Invalid"}

SLEEP = """
import json, os, time
time.sleep({sleep})
json.dump({{"slept": {sleep}}}, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""
FAIL_ONCE = """
import json, os, sys
marker = {marker!r}
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
json.dump({{"second": True}}, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""
ECHO = """
import json, os
d = json.load(open(os.environ["STAGECOACH_INPUT"]))
json.dump({{"seen": d["stages"][{stage!r}]["output"]}}, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""


def py(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": {"image": "python:3.12-slim", "command": ["python3", "-c"],
                                  "args": [code], "output": {"format": "json"}}, **extra}


def pipeline(name: str, stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "AgentPipeline", "metadata": {"name": name},
            "spec": {"stages": stages, **spec}}


def gate(**approval: Any) -> dict[str, Any]:
    return {"name": "gate", "dependsOn": ["a"], "approval": {
        "message": "Publish report {{ stages.a.output.slept }}?",
        "inputs": [{"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"}],
        **approval}}


def patch(kubectl: Kubectl, name: str, spec: dict[str, Any], *, check: bool = True
          ) -> Any:
    return kubectl("patch", "agentpipeline", name, "--type", "merge", "-p",
                   json.dumps({"spec": spec}), check=check)


def jobs(kubectl: Kubectl, name: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in
                  kubectl.items("jobs", "-l", f"stagecoach.dev/pipeline={name}"))


def trace(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return kubectl.operator_trace(name)


def events(kubectl: Kubectl, name: str) -> list[tuple[str, str]]:
    items = kubectl.items("events", "--field-selector", f"involvedObject.name={name}")
    return [(e["reason"], e["message"]) for e in items]


def wait_stage(kubectl: Kubectl, name: str, stage: str, phase: str, operator: Operator,
               timeout: float = 90) -> dict[str, Any]:
    obj = kubectl.wait_for(("agentpipeline", name),
                           lambda o: bool(o.get("status", {}).get("stages"))
                           and stage_status(o, stage)["phase"] == phase,
                           timeout=timeout, operator=operator)
    return stage_status(obj, stage)


def whoami(kubectl: Kubectl) -> str:
    review = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    return str(review["status"]["userInfo"]["username"])


def approve(kubectl: Kubectl, name: str, pipe: str, stage: str, decision: str = "Approve",
            approver: str | None = None, **spec: Any) -> None:
    kubectl.apply({"apiVersion": API, "kind": "StageApproval", "metadata": {"name": name},
                   "spec": {"pipeline": pipe, "stage": stage, "decision": decision,
                            "approver": approver or whoami(kubectl), **spec}})


def answer(kubectl: Kubectl, name: str, operator: Operator,
           timeout: float = 60) -> dict[str, Any]:
    obj = kubectl.wait_for(("stageapproval", name),
                           lambda o: bool((o.get("status") or {}).get("phase")),
                           timeout=timeout, operator=operator)
    return dict(obj["status"])


def output(kubectl: Kubectl, name: str, stage: str) -> Any:
    cm = kubectl.get("configmap", f"{name}-{stage}-1")
    return json.loads(next(iter(cm["data"].values())))["value"]


# -- suspend --------------------------------------------------------------------------
def test_suspend_starts_nothing_new_and_resume_completes(operator: Operator,
                                                         kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("held", [py("s0", SLEEP.format(sleep=3)),
                                    py("s1", SLEEP.format(sleep=0), dependsOn=["s0"])]))
    wait_stage(kubectl, "held", "s0", "Running", operator)
    patch(kubectl, "held", {"suspend": True})
    obj = kubectl.wait_for(("agentpipeline", "held"),
                           lambda o: stage_status(o, "s0")["phase"] == "Succeeded",
                           timeout=60, operator=operator)
    time.sleep(4)  # plenty of time to start s1, were it allowed to
    obj = kubectl.get("agentpipeline", "held")
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Suspended", "Suspended"), status
    assert "spec.suspend" in status["message"]
    assert stage_status(obj, "s1")["phase"] == "Pending"
    assert jobs(kubectl, "held") == ["held-s0-1-1"]
    patch(kubectl, "held", {"suspend": False})
    obj = kubectl.wait_phase("held", DONE, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert jobs(kubectl, "held") == ["held-s0-1-1", "held-s1-1-1"]
    kinds = [e["type"] for e in trace(kubectl, "held")]
    assert kinds.index("PipelineSuspended") < kinds.index("PipelineResumed")
    reasons = {r for r, _ in events(kubectl, "held")}
    assert {"Suspended", "Resumed", "PipelineSucceeded"} <= reasons


def test_suspend_during_a_retry_backoff(operator: Operator, kubectl: Kubectl,
                                        tmp_path: Path) -> None:
    marker = str(tmp_path / "failed-once")
    kubectl.apply(pipeline("backoff", [py("flaky", FAIL_ONCE.format(marker=marker),
                                          retry={"limit": 2, "backoff": {"initial": "4s"}})]))
    waiting = wait_stage(kubectl, "backoff", "flaky", "Waiting", operator)
    assert waiting.get("nextAttemptAt"), waiting
    patch(kubectl, "backoff", {"suspend": True})
    time.sleep(7)  # the backoff passes while suspended
    obj = kubectl.get("agentpipeline", "backoff")
    assert obj["status"]["phase"] == "Suspended", obj["status"]
    assert jobs(kubectl, "backoff") == ["backoff-flaky-1-1"]
    patch(kubectl, "backoff", {"suspend": False})
    obj = kubectl.wait_phase("backoff", DONE, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert stage_status(obj, "flaky")["attempt"] == 2
    assert jobs(kubectl, "backoff") == ["backoff-flaky-1-1", "backoff-flaky-1-2"]


# -- stop and terminate -----------------------------------------------------------------
def test_stop_lets_running_attempts_and_finally_finish(operator: Operator,
                                                       kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("stopper", [py("s0", SLEEP.format(sleep=4)),
                                       py("s1", SLEEP.format(sleep=0), dependsOn=["s0"])],
                           **{"finally": [py("notify", SLEEP.format(sleep=0))]}))
    wait_stage(kubectl, "stopper", "s0", "Running", operator)
    patch(kubectl, "stopper", {"shutdown": "Stop"})
    obj = kubectl.wait_phase("stopper", DONE, operator=operator)
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Stopped"), status
    assert stage_status(obj, "s0")["phase"] == "Succeeded"  # it finished
    assert stage_status(obj, "s1")["phase"] == "Skipped"
    assert stage_status(obj, "notify")["phase"] == "Succeeded"
    assert jobs(kubectl, "stopper") == ["stopper-notify-1-1", "stopper-s0-1-1"]
    assert any(r == "ShutdownRequested" and "Stop" in m for r, m in events(kubectl, "stopper"))


def test_terminate_deletes_running_jobs_and_skips_finally(operator: Operator,
                                                          kubectl: Kubectl) -> None:
    """Also the immutability rule: only spec.suspend and spec.shutdown change, and
    shutdown is never removed."""
    kubectl.apply(pipeline("term", [py("s0", SLEEP.format(sleep=120)),
                                    py("s1", SLEEP.format(sleep=120))],
                           **{"finally": [py("notify", SLEEP.format(sleep=0))]}))
    wait_stage(kubectl, "term", "s0", "Running", operator)
    wait_stage(kubectl, "term", "s1", "Running", operator)
    bad = patch(kubectl, "term", {"stages": [py("s0", "pass")]}, check=False)
    assert bad.returncode != 0 and "spec.stages is immutable" in bad.stderr, bad.stderr
    assert patch(kubectl, "term", {"suspend": True}, check=False).returncode == 0
    assert patch(kubectl, "term", {"suspend": False}, check=False).returncode == 0
    assert patch(kubectl, "term", {"shutdown": "Stop"}, check=False).returncode == 0
    gone = kubectl("patch", "agentpipeline", "term", "--type", "json", "-p",
                   '[{"op": "remove", "path": "/spec/shutdown"}]', check=False)
    assert gone.returncode != 0 and "cannot be removed" in gone.stderr, gone.stderr
    started = time.monotonic()
    patch(kubectl, "term", {"shutdown": "Terminate"})
    obj = kubectl.wait_phase("term", DONE, timeout=60, operator=operator)
    took = time.monotonic() - started
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Terminated"), status
    assert took < 30, took  # not the 120 s the stages sleep
    figure(f"CONTROL | shutdown: Terminate patched → phase Cancelled: {took:.2f} s "
           "(2 running Jobs deleted)")
    deadline = time.monotonic() + 30
    while jobs(kubectl, "term") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs(kubectl, "term") == []  # deleted (and the finally stage never had one)
    assert stage_status(obj, "notify")["phase"] in {"Pending", "Skipped"}
    cancelled = sorted(e["stage"] for e in trace(kubectl, "term")
                       if e["type"] == "StageFailed" and e["data"]["errorClass"] == "Cancelled")
    assert cancelled == ["s0", "s1"]
    assert any(r == "PipelineCancelled" for r, _ in events(kubectl, "term"))


def test_terminate_during_an_approval_wait(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("termgate", [py("a", SLEEP.format(sleep=0)), gate(),
                                        py("c", SLEEP.format(sleep=0), dependsOn=["gate"])]))
    wait_stage(kubectl, "termgate", "gate", "Waiting", operator)
    patch(kubectl, "termgate", {"shutdown": "Terminate"})
    obj = kubectl.wait_phase("termgate", DONE, operator=operator)
    assert (obj["status"]["phase"], obj["status"]["reason"]) == ("Cancelled", "Terminated")
    gate_status = stage_status(obj, "gate")
    assert (gate_status["phase"], gate_status["reason"]) == ("Failed", "Cancelled"), gate_status
    assert jobs(kubectl, "termgate") == ["termgate-a-1-1"]
    approve(kubectl, "too-late", "termgate", "gate")
    late = answer(kubectl, "too-late", operator)
    assert (late["phase"], late["reason"]) == ("Refused", "PipelineFinished"), late


# -- approvals -----------------------------------------------------------------------
def test_approve_with_inputs_reaches_the_next_stage(operator: Operator,
                                                    kubectl: Kubectl) -> None:
    me = whoami(kubectl)
    kubectl.apply(pipeline("ship", [py("a", SLEEP.format(sleep=1)), gate(),
                                    py("c", ECHO.format(stage="gate"), dependsOn=["gate"])]))
    waiting = wait_stage(kubectl, "ship", "gate", "Waiting", operator)
    assert (waiting["reason"], waiting["message"]) == ("AwaitingApproval",
                                                       "Publish report 1?"), waiting
    assert ("ApprovalRequested", "stage gate iteration 1 attempt 1 awaits approval: "
            "Publish report 1?") in events(kubectl, "ship")
    # Refused: not an approval stage; approved as someone else: the admission policy.
    approve(kubectl, "wrong-stage", "ship", "a")
    forged = kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": API, "kind": "StageApproval", "metadata": {"name": "forged"},
        "spec": {"pipeline": "ship", "stage": "gate", "decision": "Approve",
                 "approver": "mallory"}}))
    assert forged.returncode != 0 and "spec.approver" in forged.stderr, forged.stderr
    refused = answer(kubectl, "wrong-stage", operator)
    assert (refused["phase"], refused["reason"]) == ("Refused", "NotAnApprovalStage"), refused
    assert stage_status(kubectl.get("agentpipeline", "ship"), "gate")["phase"] == "Waiting"
    audit = kubectl.cluster.audit_log
    mark = audit.mark()
    asked = time.monotonic()
    approve(kubectl, "go", "ship", "gate", inputs={"channel": "newsletter"},
            message="looks good")
    accepted = answer(kubectl, "go", operator)
    answered_in = time.monotonic() - asked
    assert (accepted["phase"], accepted["reason"]) == ("Accepted", "Approved"), accepted
    assert me in accepted["message"] and accepted["decidedAt"]
    obj = kubectl.wait_phase("ship", DONE, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    seen = output(kubectl, "ship", "c")["seen"]
    assert (seen["approved"], seen["approver"], seen["inputs"], seen["message"]) == (
        True, me, {"channel": "newsletter"}, "looks good"), seen
    assert stage_status(obj, "gate")["outputRef"] == "configmap:ship-gate-1"
    assert jobs(kubectl, "ship") == ["ship-a-1-1", "ship-c-1-1"]  # no Job for the gate
    decided = [e for e in trace(kubectl, "ship") if e["type"] == "ApprovalDecided"]
    assert [(e["data"]["approver"], e["data"]["approval"]) for e in decided] == [(me, "go")]
    assert any(r == "ApprovalDecided" and me in m for r, m in events(kubectl, "ship"))
    # The approvals come from the watch: a reconcile lists none and reads none.
    counts = audit.count(since=mark, user=f"system:serviceaccount:{RELEASE_NAMESPACE}:"
                         f"{operator_service_account()}")
    on_approvals = {k: n for k, n in counts.items() if "stageapprovals" in k[1]}
    assert on_approvals == {("patch", "stagecoach.dev/stageapprovals/status"): 1}, counts
    figure(f"CONTROL | StageApproval created → status Accepted: {answered_in:.2f} s; operator "
           f"requests from then to Succeeded: {sum(counts.values())} "
           f"({', '.join(f'{v} {r}: {n}' for (v, r), n in sorted(counts.items()))})")
    approve(kubectl, "again", "ship", "gate")  # decided already, and the run finished
    again = answer(kubectl, "again", operator)
    assert again["phase"] == "Refused" and "already finished" in again["message"], again


def test_reject_with_on_failure_continue(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("veto", [py("a", SLEEP.format(sleep=0)),
                                    {**gate(), "onFailure": "continue"},
                                    py("c", ECHO.format(stage="gate"), dependsOn=["gate"])]))
    wait_stage(kubectl, "veto", "gate", "Waiting", operator)
    approve(kubectl, "no", "veto", "gate", "Reject", message="not this week")
    assert answer(kubectl, "no", operator)["reason"] == "Rejected"
    obj = kubectl.wait_phase("veto", DONE, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    rejected = stage_status(obj, "gate")
    assert (rejected["phase"], rejected["reason"]) == ("Failed", "Rejected"), rejected
    assert "not this week" in rejected["message"]
    assert output(kubectl, "veto", "c") == {"seen": None}
    approve(kubectl, "for-nobody", "no-such-pipeline", "gate")
    lost = answer(kubectl, "for-nobody", operator)
    assert (lost["phase"], lost["reason"]) == ("Refused", "PipelineNotFound"), lost
    assert "there is no pipeline no-such-pipeline in namespace" in lost["message"]


def test_approval_timeout_across_an_operator_restart(operator: Operator,
                                                     kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("patience", [
        py("a", SLEEP.format(sleep=0)), gate(timeout="10s", onTimeout="approve"),
        py("c", ECHO.format(stage="gate"), dependsOn=["gate"])]))
    wait_stage(kubectl, "patience", "gate", "Waiting", operator)
    operator.kill()  # SIGKILL: the in-memory timer is gone with it
    time.sleep(12)  # the deadline passes while no operator runs
    operator.start()
    obj = kubectl.wait_phase("patience", DONE, timeout=60, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    seen = output(kubectl, "patience", "c")["seen"]
    assert (seen["approved"], seen["approver"], seen["inputs"]) == (
        True, None, {"channel": "blog"}), seen
    decided = [e for e in trace(kubectl, "patience") if e["type"] == "ApprovalDecided"]
    assert [e["data"]["by"] for e in decided] == ["timeout"]


# -- resumeFrom -------------------------------------------------------------------------
def test_retry_after_a_failed_run_reuses_what_succeeded(operator: Operator, kubectl: Kubectl,
                                                        tmp_path: Path) -> None:
    marker = str(tmp_path / "failed-once")
    stages = [py("s0", SLEEP.format(sleep=0)),
              py("s1", FAIL_ONCE.format(marker=marker), dependsOn=["s0"]),
              py("s2", ECHO.format(stage="s0"), dependsOn=["s1"])]
    kubectl.apply(pipeline("first", stages))
    obj = kubectl.wait_phase("first", DONE, operator=operator)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    time.sleep(2)  # let the operator's last writes (pod GC, events) settle
    old = kubectl.get("agentpipeline", "first")
    old_maps = {c["metadata"]["name"]: c["metadata"]["resourceVersion"]
                for c in kubectl.items("configmaps", "-l", "stagecoach.dev/pipeline=first")}
    assert "first-s0-1" in old_maps and "first-state" in old_maps
    kubectl.apply(pipeline("second", stages, resumeFrom={"name": "first"}))
    obj = kubectl.wait_phase("second", DONE, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    s0 = stage_status(obj, "s0")
    assert (s0["phase"], s0["reason"]) == ("Succeeded", "Reused"), s0
    assert jobs(kubectl, "second") == ["second-s1-1-1", "second-s2-1-1"]  # none for s0
    assert output(kubectl, "second", "s2") == {"seen": {"slept": 0}}
    copied = kubectl.get("configmap", "second-s0-1")
    assert copied["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    reused = [e for e in trace(kubectl, "second") if e["type"] == "StageReused"]
    assert [(e["stage"], e["data"]["source"]) for e in reused] == [("s0", "first")]
    explained = [m for r, m in events(kubectl, "second") if r == "ResumeDecided"]
    assert explained and "reused s0" in explained[0] and "s1: it was Failed there" in \
        explained[0], explained
    # The first run is only ever read.
    after = kubectl.get("agentpipeline", "first")
    assert after["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"]
    assert {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in
            kubectl.items("configmaps", "-l", "stagecoach.dev/pipeline=first")} == old_maps


def test_resume_from_a_deleted_pipeline_says_so(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("orphan", [py("s0", SLEEP.format(sleep=0))],
                           resumeFrom={"name": "vanished"}))
    obj = kubectl.wait_phase("orphan", DONE, operator=operator)
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ResumeSourceNotFound"), status
    assert "spec.resumeFrom.name: pipeline vanished not found" in status["message"]
    assert jobs(kubectl, "orphan") == []
    assert any(r == "ResumeSourceNotFound" for r, _ in events(kubectl, "orphan"))


def test_resume_from_a_running_pipeline_waits_for_it(operator: Operator,
                                                     kubectl: Kubectl) -> None:
    """``stagecoach terminate OLD && stagecoach retry OLD`` has no race: the retry waits
    until OLD finished, woken by OLD's own watch event."""
    stages = [py("s0", SLEEP.format(sleep=0)), py("s1", SLEEP.format(sleep=120),
                                                  dependsOn=["s0"])]
    kubectl.apply(pipeline("busy", stages))
    wait_stage(kubectl, "busy", "s1", "Running", operator)
    kubectl.apply(pipeline("busy-r1", stages, resumeFrom={"name": "busy"}))
    waiting = kubectl.wait_for(("agentpipeline", "busy-r1"),
                               lambda o: (o.get("status") or {}).get("reason")
                               == "WaitingForResumeSource", timeout=30, operator=operator)
    assert waiting["status"]["phase"] == "Pending"
    assert "waiting for pipeline busy to finish (it is Running)" in waiting["status"]["message"]
    assert jobs(kubectl, "busy-r1") == []
    stopped = time.monotonic()
    patch(kubectl, "busy", {"shutdown": "Terminate"})
    obj = kubectl.wait_for(("agentpipeline", "busy-r1"),
                           lambda o: bool(o.get("status", {}).get("stages"))
                           and stage_status(o, "s1")["phase"] == "Running",
                           timeout=30, operator=operator)
    took = time.monotonic() - stopped
    figure(f"CONTROL | resumeFrom a running pipeline: OLD terminated → new run's first Job "
           f"in {took:.2f} s (woken by OLD's watch event)")
    assert took < 10, took  # the watch, not the 30 s backstop timer
    assert stage_status(obj, "s0")["reason"] == "Reused"
    assert jobs(kubectl, "busy-r1") == ["busy-r1-s1-1-1"]
    patch(kubectl, "busy-r1", {"shutdown": "Terminate"})
    kubectl.wait_phase("busy-r1", DONE, operator=operator)
