"""The operator on the real control plane: a pipeline becomes Jobs, outputs land in
ConfigMaps, status follows DESIGN §4."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import (
    STAGECOACH,
    Kubectl,
    Operator,
    cassette_configmap,
    load_example,
    replay_provider,
)

pytestmark = pytest.mark.cluster


def test_hello_pipeline_succeeds(operator: Operator, kubectl: Kubectl) -> None:
    provider, pipeline = load_example("hello")
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"), pipeline)
    obj = kubectl.wait_phase("hello", {"Succeeded", "Failed", "Invalid"}, operator=operator)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + operator.logs()[-5000:]
    assert status["progress"] == "2/2"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["greet"]["job"] == "hello-greet-1-1"
    assert stages["poem"]["outputRef"] == "configmap:hello-poem-1"
    assert status["tokens"] == {"input": 24, "output": 18}
    assert status["traceRef"] == "configmap:hello-trace"
    greet = kubectl.get("configmap", "hello-greet-1")
    assert json.loads(greet["data"]["1.json"])["value"] == {"greeting": "hello world"}
    owner = greet["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("AgentPipeline", obj["metadata"]["uid"])
    jobs = kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=hello")
    assert sorted(j["metadata"]["name"] for j in jobs) == ["hello-greet-1-1", "hello-poem-1-1"]
    # podGC OnPodCompletion (the chart's default): the pods went once their results were
    # saved; the outputs and the trace stay readable (below).
    kubectl.wait_for(("pods",), lambda pods: not [
        p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")],
        timeout=30, operator=operator)
    # A Succeeded pod may go before the Job controller counted it (its tracking
    # finalizer holds it until then): every Job still ends Complete, none Failed.
    kubectl.wait_for(("jobs", "-l", "stagecoach.dev/pipeline=hello"), lambda jobs: all(
        any(c["type"] == "Complete" and c["status"] == "True"
            for c in (j.get("status") or {}).get("conditions") or [])
        for j in jobs["items"]), timeout=30, operator=operator)
    final = kubectl.get("configmap", status["outputRef"].split(":", 1)[1])
    assert "pipeline ran" in next(iter(final["data"].values()))
    events = kubectl.items("events", "--field-selector", "involvedObject.name=hello")
    reasons = {e["reason"] for e in events}
    assert {"StageStarted", "StageSucceeded", "PipelineSucceeded"} <= reasons
    # `stagecoach trace NAME -n NS` reads the same run back from the cluster.
    env = dict(os.environ, KUBECONFIG=str(kubectl.cluster.kubeconfig))
    out = subprocess.run([STAGECOACH, "trace", "hello", "-n", kubectl.ns, "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types[0] == "PipelineStarted" and "PipelineSucceeded" in types
    assert "InputSnapshot" in types and "OutputSnapshot" in types
    text = subprocess.run([STAGECOACH, "trace", "hello", "-n", kubectl.ns], capture_output=True,
                          text=True, env=env, check=True).stdout
    assert "greet" in text and "poem" in text


def research_docs() -> list[dict[str, object]]:
    provider, template, pipeline = load_example("research-report")
    return [cassette_configmap("research-cassette", "research-report"),
            replay_provider(provider, "research-cassette"), template, pipeline]


def test_research_example_loops_retries_and_succeeds(operator: Operator,
                                                     kubectl: Kubectl) -> None:
    kubectl.apply(*research_docs())
    waiting = kubectl.wait_for(
        ("agentpipeline", "battery-report"),
        lambda o: any(s["name"] == "sign-off" and s["phase"] == "Waiting"
                      for s in (o.get("status") or {}).get("stages", [])),
        timeout=150, operator=operator)
    gate = next(s for s in waiting["status"]["stages"] if s["name"] == "sign-off")
    assert gate["reason"] == "AwaitingApproval" and "QA score" in gate["message"]
    user = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    kubectl.apply({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "StageApproval",
                   "metadata": {"name": "battery-report-sign-off"},
                   "spec": {"pipeline": "battery-report", "stage": "sign-off",
                            "decision": "Approve", "inputs": {"channel": "newsletter"},
                            "approver": user["status"]["userInfo"]["username"]}})
    obj = kubectl.wait_phase("battery-report", {"Succeeded", "Failed", "Invalid"},
                             timeout=150, operator=operator)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["sign-off"]["phase"] == "Succeeded"
    assert stages["research"]["iteration"] == 2  # verify looped back once
    assert stages["scrape"]["instances"]["total"] == 3
    assert stages["publish"]["phase"] == "Succeeded"
    assert stages["notify"]["phase"] == "Succeeded"
    trace = kubectl.items("configmaps", "-l", "stagecoach.dev/kind=trace")
    events = [json.loads(line) for cm in trace for v in cm["data"].values()
              for line in v.splitlines() if line.strip()]
    types = [e["type"] for e in events]
    assert "ProviderRetry" in types  # the 429 retried inside an attempt
    retried = [e for e in events if e["type"] == "StageFailed" and e["data"].get("willRetry")]
    classes = [(e["stage"], e["data"]["errorClass"], e["data"]["message"]) for e in retried]
    assert ("qa", "MalformedOutput") in [c[:2] for c in classes], classes
    gotos = [e for e in events if e["type"] == "Decision" and e["data"]["action"] == "goto"]
    assert {g["data"]["target"] for g in gotos} >= {"research"}
    jobs = [j["metadata"]["name"] for j in kubectl.items("jobs")]
    assert len(jobs) == len(set(jobs))
    assert any(s.get("attempt", 0) >= 2 for s in status["stages"])


def test_spec_is_immutable_after_creation(crds: object, kubectl: Kubectl) -> None:
    _, pipeline = load_example("hello")
    kubectl.apply(pipeline)
    res = kubectl("patch", "agentpipeline", "hello", "--type", "merge", "-p",
                  '{"spec": {"params": {"who": "mars"}}}', check=False)
    assert res.returncode != 0 and "spec.params is immutable" in res.stderr
    kubectl("patch", "agentpipeline", "hello", "--type", "merge", "-p",
            '{"spec": {"suspend": true}}')  # the run-control fields are not
    kubectl("label", "agentpipeline", "hello", "team=a")  # metadata stays editable


def test_hello_with_s3_storage(crds: object, kube_namespace: str, kubectl: Kubectl,
                               s3_server: Any, tmp_path: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.create_bucket(f"e2e-{kube_namespace}")
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)  # the operator's own credentials
    op = Operator(kubectl.cluster, kube_namespace, tmp_path)
    op.start()
    try:
        provider, pipeline = load_example("hello")
        pipeline["spec"]["storage"] = {"type": "s3", "s3": {
            "bucket": bucket, "prefix": "runs", "endpoint": s3_server.endpoint,
            "credentialsSecret": "s3-creds"}}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
                  "stringData": {"accessKeyId": s3_server.access_key,
                                 "secretAccessKey": s3_server.secret_key}}
        kubectl.apply(secret, cassette_configmap("hello-cassette", "hello"),
                      replay_provider(provider, "hello-cassette"), pipeline)
        obj = kubectl.wait_phase("hello", {"Succeeded", "Failed", "Invalid"}, operator=op)
        status = obj["status"]
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + op.logs()[-3000:]
        prefix = f"runs/{kube_namespace}/hello/{obj['metadata']['uid']}"
        assert status["traceRef"] == f"s3://{bucket}/{prefix}/trace/"
        stages = {s["name"]: s for s in status["stages"]}
        assert stages["poem"]["outputRef"] == f"s3://{bucket}/{prefix}/outputs/poem/1.json"
        names = {c["metadata"]["name"] for c in kubectl.items("configmaps")}
        assert "hello-state" in names and not any(n.startswith("hello-trace") for n in names)
        env = dict(os.environ, KUBECONFIG=str(kubectl.cluster.kubeconfig))
        out = subprocess.run([STAGECOACH, "trace", "hello", "-n", kube_namespace, "--json"],
                             capture_output=True, text=True, env=env, check=True).stdout
        assert "PipelineSucceeded" in [json.loads(line)["type"] for line in out.splitlines()]
    finally:
        op.kill()


def test_a_finished_pipeline_goes_after_its_ttl_with_everything_it_owns(
        operator: Operator, kubectl: Kubectl) -> None:
    provider, pipeline = load_example("hello")
    pipeline["spec"]["ttlSecondsAfterFinished"] = 3
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"), pipeline)
    obj = kubectl.wait_phase("hello", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded"
    owned = ("configmaps", "-l", "stagecoach.dev/pipeline=hello")
    assert kubectl.items(*owned)  # outputs and trace readable until the TTL
    kubectl.wait_for(("agentpipelines",), lambda items: not items["items"], timeout=60,
                     operator=operator)
    kubectl.wait_for(owned, lambda items: not items["items"], timeout=60, operator=operator)
    kubectl.wait_for(("jobs",), lambda items: not items["items"], timeout=60,
                     operator=operator)
    assert "deleted" in operator.logs() and "(TTL)" in operator.logs()
