"""The fault suite (DESIGN §10): the API server frozen and restarted, etcd frozen, the
operator SIGKILLed again and again, the node agent killed under a running pod. Each run
must end Succeeded with exactly one Job per attempt, no duplicate stage events in the
trace and every output readable. Each test prints one row of the figures table:
fault, faults injected, pipelines, Jobs, duplicates, lost outputs."""

from __future__ import annotations

import json
import random
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, Operator, figure
from tests.e2e.test_operator_ha import assert_exactly_once
from tests.e2e.test_operator_resilience import chain, stage_status

pytestmark = pytest.mark.cluster

# Transient API errors during an outage are warnings (no traceback); kopf says so too.
OUTAGE = ("Cannot connect", "ClientConnectorError", "Server disconnected", "timeout",
          "Timeout", "Connection reset")


def running(kubectl: Kubectl, name: str, stage: str, operator: Operator,
            timeout: float = 90) -> None:
    kubectl.wait_for(("agentpipeline", name),
                     lambda o: bool(o.get("status")) and stage_status(o, stage)["phase"]
                     == "Running", timeout=timeout, operator=operator)


def outputs_readable(kubectl: Kubectl, name: str, stages: int) -> int:
    """How many of the pipeline's stage outputs cannot be read back (0 is the goal)."""
    lost = 0
    for i in range(stages):
        try:
            cm = kubectl.get("configmap", f"{name}-s{i}-1")
            json.loads(next(iter(cm["data"].values())))
        except Exception:
            lost += 1
    return lost


def report(fault: str, injected: int, kubectl: Kubectl, names: list[str],
           stages: int) -> None:
    jobs = sum(len(kubectl.items("jobs", "-l", f"stagecoach.dev/pipeline={n}"))
               for n in names)
    lost = sum(outputs_readable(kubectl, n, stages) for n in names)
    for n in names:
        assert_exactly_once(kubectl, n, stages)  # raises on any duplicate
    figure(f"FAULTS | {fault:<40} | injected {injected:>2} | pipelines {len(names)} | "
           f"Jobs {jobs:>3} | duplicates 0 | lost outputs {lost}")
    assert lost == 0


def test_api_server_frozen(operator: Operator, kubectl: Kubectl) -> None:
    cluster = kubectl.cluster
    kubectl.apply(chain("apifreeze", 4, 1.5))
    running(kubectl, "apifreeze", "s1", operator)
    cluster.freeze("kube-apiserver")
    try:
        time.sleep(20)
    finally:
        cluster.thaw("kube-apiserver")
    obj = kubectl.wait_phase("apifreeze", {"Succeeded", "Failed"}, timeout=180,
                             operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    report("API server frozen 20 s", 1, kubectl, ["apifreeze"], 4)


def test_api_server_restarted(operator: Operator, kubectl: Kubectl) -> None:
    cluster = kubectl.cluster
    kubectl.apply(chain("apirestart", 4, 1.5))
    running(kubectl, "apirestart", "s1", operator)
    cluster.restart("kube-apiserver")
    obj = kubectl.wait_phase("apirestart", {"Succeeded", "Failed"}, timeout=180,
                             operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    report("API server restarted", 1, kubectl, ["apirestart"], 4)


def test_etcd_frozen(operator: Operator, kubectl: Kubectl) -> None:
    cluster = kubectl.cluster
    kubectl.apply(chain("etcdfreeze", 4, 1.5))
    running(kubectl, "etcdfreeze", "s1", operator)
    cluster.freeze("etcd")
    try:
        time.sleep(20)
    finally:
        cluster.thaw("etcd")
    obj = kubectl.wait_phase("etcdfreeze", {"Succeeded", "Failed"}, timeout=180,
                             operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    report("etcd frozen 20 s", 1, kubectl, ["etcdfreeze"], 4)


def test_operator_killed_ten_times_at_random_moments(operator: Operator,
                                                     kubectl: Kubectl) -> None:
    rng = random.Random(9)
    names = ["kill-a", "kill-b"]
    kubectl.apply(*(chain(n, 6, 1.0) for n in names))
    kills = 0
    for _ in range(10):
        time.sleep(rng.uniform(0.3, 2.5))
        operator.kill(signal.SIGKILL)
        kills += 1
        time.sleep(rng.uniform(0.0, 1.5))
        operator.start()
    for n in names:
        obj = kubectl.wait_phase(n, {"Succeeded", "Failed"}, timeout=180, operator=operator)
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    report("operator SIGKILLed at random moments", kills, kubectl, names, 6)


def test_node_agent_killed_while_a_pod_runs(operator: Operator, kubectl: Kubectl) -> None:
    """The pod is lost with its node agent (ContainerStatusUnknown): the attempt fails
    and is retried; nothing else runs twice."""
    pipe: dict[str, Any] = chain("nodeloss", 3, 1.0)
    pipe["spec"]["stages"][1]["run"]["args"] = [
        "import json, os, time\ntime.sleep(8)\n"
        "json.dump({'n': 1}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))"]
    pipe["spec"]["stages"][1]["retry"] = {"limit": 1, "backoff": {"initial": "1s"}}
    kubectl.apply(pipe)
    kubectl.wait_for(("pods",), lambda pods: any(
        p["metadata"]["name"].startswith("nodeloss-s1-1-1-")
        and (p.get("status") or {}).get("phase") == "Running" for p in pods["items"]),
        timeout=90, operator=operator)
    time.sleep(1.5)  # the user's command is running
    kubectl.cluster.restart("nodeagent")
    obj = kubectl.wait_phase("nodeloss", {"Succeeded", "Failed"}, timeout=120,
                             operator=operator)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert [s["attempt"] for s in status["stages"]] == [1, 2, 1]
    jobs = sorted(j["metadata"]["name"] for j in kubectl.items("jobs"))
    assert jobs == ["nodeloss-s0-1-1", "nodeloss-s1-1-1", "nodeloss-s1-1-2", "nodeloss-s2-1-1"]
    lost = outputs_readable(kubectl, "nodeloss", 3)
    figure(f"FAULTS | {'node agent killed under a running pod':<40} | injected  1 | "
           f"pipelines 1 | Jobs {len(jobs):>3} | duplicates 0 | lost outputs {lost}")
    assert lost == 0
