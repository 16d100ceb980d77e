"""Cost and the stage cache in the cluster (DESIGN §11): USD in status, trace, Events and
``/metrics``; a second pipeline answered from the namespace's cache without a Job; a
leaked stage token cannot poison the cache."""

from __future__ import annotations

import json
import signal
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.e2e.conftest import Kubectl, Operator, token_kubeconfig
from tests.e2e.test_operator_bench import scrape
from tests.e2e.test_operator_trust import as_user

pytestmark = pytest.mark.cluster

CASSETTE = """apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
  - stage: poem
    response: {content: "a poem about the world", usage: {input: 24, output: 18}}
  - stage: poem
    response: {content: "a second, different poem", usage: {input: 30, output: 20}}
"""
PRICING = {"input": "2.50", "output": "10.00"}
POEM_COST = Decimal("0.00024")  # (24 x 2.50 + 18 x 10.00) / 1e6


def pipeline(name: str) -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name},
            "spec": {"defaults": {"provider": "priced", "model": "small",
                                  "cache": {"ttl": "1h"}},
                     "budget": {"maxCost": "1.00"},
                     "stages": [
                         {"name": "greet", "run": {
                             "image": "python:3.12-slim", "command": ["python3", "-c"],
                             "args": ["import json, os; json.dump({'greeting': 'hello'}, "
                                      "open(os.environ['STAGECOACH_OUTPUT'], 'w'))"],
                             "output": {"format": "json"}}},
                         {"name": "poem", "dependsOn": ["greet"], "agent": {
                             "prompt": "A poem starting: {{ stages.greet.output.greeting }}"}},
                     ]}}


def priced_provider() -> list[dict[str, Any]]:
    """The cassette ConfigMap and the priced replay provider the pipelines call."""
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "poems"},
             "data": {"cassette.yaml": CASSETTE}},
            {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
             "metadata": {"name": "priced"},
             "spec": {"type": "replay", "cassette": {"configMapRef": {"name": "poems"}},
                      "models": {"small": {"pricing": PRICING}}}}]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(port: int, name: str, **labels: str) -> float:
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    deadline = time.monotonic() + 60
    while True:
        try:
            return scrape(port).get(want, 0.0)
        except OSError:
            assert time.monotonic() < deadline, "the operator serves no /metrics"
            time.sleep(0.5)


def test_cost_in_status_and_metrics_and_a_cache_hit_across_two_pipelines(
        crds: ControlPlane, kubectl: Kubectl, kube_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = _port()
    monkeypatch.setenv("STAGECOACH_METRICS_PORT", str(port))
    monkeypatch.setenv("STAGECOACH_POD_GC", "Never")  # a pod-bound token for the attack below
    operator = Operator(crds, kube_namespace, tmp_path)
    operator.start()
    try:
        _scenario(operator, kubectl, kube_namespace, tmp_path, port)
    finally:
        operator.kill(signal.SIGTERM)


def _scenario(operator: Operator, kubectl: Kubectl, ns: str, tmp_path: Path,
              port: int) -> None:
    kubectl.apply(*priced_provider(), pipeline("first"))
    first = kubectl.wait_phase("first", {"Succeeded", "Failed", "Invalid"},
                               timeout=120, operator=operator)["status"]
    assert first["phase"] == "Succeeded", json.dumps(first, indent=1)
    # 1. Cost: exact, per stage and pipeline; a run stage uses no model (tokens only).
    stages = {s["name"]: s for s in first["stages"]}
    assert Decimal(first["cost"]) == POEM_COST and Decimal(stages["poem"]["cost"]) == POEM_COST
    assert "cost" not in stages["greet"]
    ended = [e for e in kubectl.operator_trace("first") if e["type"] == "StageSucceeded"
             and e["stage"] == "poem"]
    assert Decimal(ended[0]["data"]["cost"]) == POEM_COST
    assert _metric(port, "stagecoach_cost_usd_total", provider="priced", model="small") \
        == pytest.approx(float(POEM_COST))
    # 2. The namespace's cache: one ConfigMap per stage, owned by no pipeline.
    entries = kubectl.items("configmaps", "-l", "stagecoach.dev/kind=cache")
    assert len(entries) == 2, [c["metadata"]["name"] for c in entries]
    assert all(not c["metadata"].get("ownerReferences") for c in entries)
    assert all(c["metadata"]["name"].startswith("stagecoach-cache-") for c in entries)
    # 3. An attacker with the poem pod's token cannot poison an entry (no writer label).
    [pod] = kubectl.items("pods", "-l", "batch.kubernetes.io/job-name=first-poem-1-1")
    token = kubectl("create", "token", "stagecoach-stage", "--bound-object-kind", "Pod",
                    "--bound-object-name", pod["metadata"]["name"]).stdout.strip()
    leaked = token_kubeconfig(kubectl.cluster, tmp_path / "leaked.kubeconfig",
                              "stagecoach-stage", token)
    target = entries[0]["metadata"]["name"]
    before = kubectl.get("configmap", target)["data"]
    for verb in (("patch", "configmap", target, "--type", "merge", "-p",
                  '{"data": {"x": "poison"}}'),
                 ("delete", "configmap", target)):
        res = as_user(kubectl.cluster, leaked, "-n", ns, *verb)
        assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr
    assert kubectl.get("configmap", target)["data"] == before
    # 4. A second pipeline with the same inputs: both stages answered by the cache, no
    #    Job, no tokens, cost zero, and the events name the run that produced them.
    kubectl.apply(pipeline("second"))
    second = kubectl.wait_phase("second", {"Succeeded", "Failed", "Invalid"},
                                timeout=120, operator=operator)["status"]
    assert second["phase"] == "Succeeded", json.dumps(second, indent=1)
    stages = {s["name"]: s for s in second["stages"]}
    for name in ("greet", "poem"):
        assert stages[name]["reason"] == "Cached", stages[name]
        assert stages[name]["tokens"] == {"input": 0, "output": 0}
    assert stages["poem"]["cost"] == "0" and second["cost"] == "0"
    assert kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=second") == []
    hits = [e for e in kubectl.operator_trace("second") if e["type"] == "StageCached"]
    assert {e["stage"] for e in hits} == {"greet", "poem"}
    first_uid = kubectl.get("agentpipeline", "first")["metadata"]["uid"]
    assert all(e["data"]["from"]["uid"] == first_uid for e in hits)
    poem_hit = next(e for e in hits if e["stage"] == "poem")
    assert Decimal(poem_hit["data"]["saved"]["cost"]) == POEM_COST
    out = kubectl.get("configmap", "second-poem-1")
    assert json.loads(out["data"]["1.json"])["value"] == "a poem about the world"
    events = kubectl.items("events", "--field-selector", "involvedObject.name=second")
    assert any(e["reason"] == "StageCached" and "first" in e["message"] for e in events)
    assert _metric(port, "stagecoach_stage_cache_total", result="hit") == 2
    # 5. The cache outlives the pipeline that filled it.
    kubectl("delete", "agentpipeline", "first", "--wait=true")
    assert len(kubectl.items("configmaps", "-l", "stagecoach.dev/kind=cache")) == 2


def _entry_configmap(key: str, created: str, expires: str) -> dict[str, Any]:
    doc = {"version": 1, "key": key, "format": "text", "value": "old", "createdAt": created,
           "expiresAt": expires, "from": {"pipeline": "gone", "stage": "s"},
           "tokens": {"input": 0, "output": 0}, "cost": None}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"stagecoach-cache-k-cache-{key}.json",
                         "labels": {"app.kubernetes.io/managed-by": "stagecoach",
                                    "stagecoach.dev/pipeline": "stagecoach-cache",
                                    "stagecoach.dev/kind": "cache"},
                         "annotations": {"stagecoach.dev/key": f"cache/{key}.json",
                                         "stagecoach.dev/part": "0"}},
            "data": {f"{key}.json": json.dumps(doc)}}


def test_the_operator_collects_expired_cache_entries(
        operator: Operator, kubectl: Kubectl) -> None:
    expired, fresh = "ee" * 32, "ff" * 32
    kubectl.apply(_entry_configmap(expired, "2020-01-01T00:00:00.000Z",
                                   "2020-01-02T00:00:00.000Z"),
                  _entry_configmap(fresh, "2026-01-01T00:00:00.000Z",
                                   "2999-01-01T00:00:00.000Z"),
                  *priced_provider(),
                  pipeline("collector"))
    status = kubectl.wait_phase("collector", {"Succeeded", "Failed", "Invalid"}, timeout=120,
                                operator=operator)["status"]
    assert status["phase"] == "Succeeded", status
    # The first pass over the namespace's cache collects (then every 10 minutes).
    left = kubectl.wait_for(("configmaps", "-l", "stagecoach.dev/kind=cache"), lambda cms: not [
        c for c in cms["items"] if expired in c["metadata"]["name"]], timeout=30,
        operator=operator)
    names = {c["metadata"]["name"] for c in left["items"]}
    assert f"stagecoach-cache-k-cache-{fresh}.json" in names  # not yet expired: kept
    assert len(names) == 3  # and the run's own two entries
    assert "1 expired entry deleted" in operator.logs()
