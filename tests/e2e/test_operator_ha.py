"""Two operators at once (DESIGN §10): with leader election only the Lease holder
reconciles and a standby takes over when the leader is killed; without it, a mistaken
second operator corrupts nothing. Each run: Succeeded, exactly one Job per attempt, no
duplicate stage events in the trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    RELEASE_NAMESPACE,
    STAGECOACH,
    Kubectl,
    Operator,
    chart_release,
    figure,
)
from tests.e2e.test_operator_resilience import chain, stage_status

pytestmark = pytest.mark.cluster


def holder(kubectl: Kubectl) -> str | None:
    res = kubectl.cluster.kubectl("-n", RELEASE_NAMESPACE, "get", "lease",
                                  "stagecoach-operator", "-o", "json", check=False)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout)["spec"].get("holderIdentity") or None


def assert_exactly_once(kubectl: Kubectl, name: str, stages: int) -> None:
    obj = kubectl.get("agentpipeline", name)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    assert [s["attempt"] for s in obj["status"]["stages"]] == [1] * stages
    jobs = sorted(j["metadata"]["name"] for j in kubectl.items(
        "jobs", "-l", f"stagecoach.dev/pipeline={name}"))
    assert jobs == sorted(f"{name}-s{i}-1-1" for i in range(stages))
    env = dict(os.environ, KUBECONFIG=str(kubectl.cluster.kubeconfig))
    out = subprocess.run([STAGECOACH, "trace", name, "-n", kubectl.ns, "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    seen = Counter((e["type"], e.get("stage"), e.get("iteration"), e.get("attempt"),
                    e.get("index")) for e in events
                   if e["type"] in ("StageStarted", "StageSucceeded", "StageFailed"))
    assert [k for k, n in seen.items() if n > 1] == []
    assert len(seen) == 2 * stages


def test_the_standby_takes_over_when_the_leader_is_killed(
        crds: object, kube_namespace: str, kubectl: Kubectl, tmp_path: Path) -> None:
    a = Operator(kubectl.cluster, kube_namespace, tmp_path, identity="op-a", name="a")
    b = Operator(kubectl.cluster, kube_namespace, tmp_path, identity="op-b", name="b")
    a.start()
    try:
        deadline = time.monotonic() + 60
        while holder(kubectl) != "op-a":
            assert time.monotonic() < deadline, a.logs()[-3000:]
            time.sleep(0.2)
        b.start()
        deadline = time.monotonic() + 60
        while "is standby" not in b.logs():
            assert time.monotonic() < deadline, b.logs()[-3000:]
            time.sleep(0.2)
        kubectl.apply(chain("ha", 4, 1.5))
        kubectl.wait_for(("agentpipeline", "ha"),
                         lambda o: bool(o.get("status")) and stage_status(o, "s1")["phase"]
                         == "Running", timeout=60, operator=a)
        assert "reconcile" not in b.logs().split("is standby", 1)[1].lower()
        killed = time.monotonic()
        a.kill(signal.SIGKILL)  # no release: b must wait out the lease
        deadline = killed + 40
        while holder(kubectl) != "op-b":
            assert time.monotonic() < deadline, b.logs()[-3000:]
            time.sleep(0.2)
        takeover = time.monotonic() - killed
        obj = kubectl.wait_phase("ha", {"Succeeded", "Failed"}, timeout=90, operator=b)
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
        assert_exactly_once(kubectl, "ha", 4)
        figure(f"HA | leader killed → standby holds the lease after {takeover:.1f} s "
               "(lease duration 15 s)")
        assert "acquired lease" in b.logs()
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)


def test_two_operators_without_election_corrupt_nothing(
        crds: object, kube_namespace: str, kubectl: Kubectl, tmp_path: Path) -> None:
    """A mistaken second install with leader election off: both reconcile; state writes
    with resourceVersion checks keep every pipeline exactly once."""
    deployment: dict[str, Any] = json.loads(json.dumps(chart_release()[1]))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [a for a in container["args"] if "leader-elect" not in a]
    ops = [Operator(kubectl.cluster, kube_namespace, tmp_path, deployment=deployment,
                    identity=f"op-{i}", name=f"op{i}") for i in range(2)]
    for op in ops:
        op.start()
    try:
        kubectl.apply(*(chain(f"twin{i}", 3, 0.5) for i in range(3)))
        for i in range(3):
            kubectl.wait_phase(f"twin{i}", {"Succeeded", "Failed"}, timeout=120,
                               operator=ops[0])
        for i in range(3):
            assert_exactly_once(kubectl, f"twin{i}", 3)
    finally:
        for op in ops:
            op.kill(signal.SIGTERM)
