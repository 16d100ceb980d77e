"""Nothing is lost when things break: the operator SIGKILLed mid-pipeline, a Job
deleted by hand."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, Operator

pytestmark = pytest.mark.cluster

SLEEP_AND_ECHO = """
import json, os, time
time.sleep({sleep})
data = json.load(open(os.environ["STAGECOACH_INPUT"]))
json.dump({{"n": len(data["stages"])}}, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""


def chain(name: str, stages: int, sleep: float, **spec: Any) -> dict[str, Any]:
    """A pipeline of ``stages`` run stages in a row, each sleeping ``sleep`` seconds."""
    body = []
    for i in range(stages):
        stage: dict[str, Any] = {
            "name": f"s{i}",
            "run": {"image": "python:3.12-slim", "command": ["python3", "-c"],
                    "args": [SLEEP_AND_ECHO.format(sleep=sleep)], "output": {"format": "json"}},
        }
        if i:
            stage["dependsOn"] = [f"s{i - 1}"]
        body.append(stage)
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name}, "spec": {"stages": body, **spec}}


def stage_status(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in (obj.get("status") or {}).get("stages", []) if s["name"] == name)


def test_operator_killed_mid_pipeline_finishes_without_duplicates(
        operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(chain("chain", 4, 1.5))
    kubectl.wait_for(("agentpipeline", "chain"),
                     lambda o: bool(o.get("status")) and stage_status(o, "s1")["phase"]
                     == "Running", timeout=60, operator=operator)
    operator.kill()  # SIGKILL: no cleanup, no final status patch
    time.sleep(3)  # s1's Job finishes while nobody watches
    operator.start()
    obj = kubectl.wait_phase("chain", {"Succeeded", "Failed"}, timeout=90, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    assert [s["attempt"] for s in obj["status"]["stages"]] == [1, 1, 1, 1]
    jobs = sorted(j["metadata"]["name"] for j in kubectl.items("jobs"))
    assert jobs == [f"chain-s{i}-1-1" for i in range(4)]
    assert "resumed from chain-state" in operator.logs()


def test_a_deleted_run_record_fails_the_run_and_runs_nothing_twice(
        operator: Operator, kubectl: Kubectl) -> None:
    """The record is gone while the operator is down: a fresh start would run s0 again;
    the run ends Failed (StateLost) instead, and the Job it had is the only one."""
    kubectl.apply(chain("lost", 3, 1.5))
    kubectl.wait_for(("agentpipeline", "lost"),
                     lambda o: bool(o.get("status")) and stage_status(o, "s0")["phase"]
                     == "Running", timeout=60, operator=operator)
    operator.kill()
    kubectl("delete", "configmap", "lost-state")
    operator.start()
    obj = kubectl.wait_phase("lost", {"Succeeded", "Failed", "Invalid"}, timeout=60,
                             operator=operator)
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "StateLost"), status
    assert "lost-state" in status["message"]
    time.sleep(2)
    assert [j["metadata"]["name"] for j in kubectl.items("jobs")] == ["lost-s0-1-1"]
    assert "lost-state" not in {c["metadata"]["name"] for c in kubectl.items("configmaps")}


def test_deleted_job_is_a_failed_attempt_and_is_retried(operator: Operator,
                                                        kubectl: Kubectl) -> None:
    retry = {"limit": 2, "backoff": {"initial": "200ms", "max": "1s"}}
    kubectl.apply(chain("victim", 1, 4, defaults={"retry": retry}))
    kubectl.wait_for(("jobs",), lambda o: bool(o["items"]), timeout=60, operator=operator)
    kubectl("delete", "job", "victim-s0-1-1", "--wait=false")
    obj = kubectl.wait_phase("victim", {"Succeeded", "Failed"}, timeout=90, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    assert stage_status(obj, "s0")["attempt"] == 2
    events = kubectl.operator_trace("victim")
    failed = [e for e in events if e["type"] == "StageFailed"]
    assert failed and "deleted" in failed[0]["data"]["message"]
    assert failed[0]["data"]["willRetry"] is True


def test_deleting_a_pipeline_stops_its_jobs(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(chain("doomed", 2, 60))
    kubectl.wait_for(("pods",), lambda o: any((p.get("status") or {}).get("phase") == "Running"
                                              for p in o["items"]),
                     timeout=60, operator=operator)
    kubectl("delete", "agentpipeline", "doomed", "--wait=false")
    kubectl.wait_for(("jobs,pods,configmaps", "-l", "stagecoach.dev/pipeline=doomed"),
                     lambda o: not o["items"], timeout=60, operator=operator)
