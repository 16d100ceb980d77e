"""DESIGN §2/§3 semantics in the cluster: Invalid, onFailure: continue, the token budget,
provider maxConcurrency across pipelines."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, Operator

pytestmark = pytest.mark.cluster

API = "stagecoach.dev/v1alpha1"


def run_stage(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": {"image": "python:3.12-slim", "command": ["python3", "-c", code],
                                  "output": {"format": "json"}}, **extra}


def pipeline(name: str, stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "AgentPipeline", "metadata": {"name": name},
            "spec": {"stages": stages, **spec}}


def replay(name: str, cassette: str, **spec: Any) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-cassette"},
             "data": {"cassette.yaml": cassette}},
            {"apiVersion": API, "kind": "ModelProvider", "metadata": {"name": name},
             "spec": {"type": "replay", "cassette": {"configMapRef": {"name": f"{name}-cassette"}},
                      **spec}}]


def test_invalid_pipeline_ends_invalid_without_jobs(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("broken", [run_stage("a", "pass", dependsOn=["nope"])]),
                  pipeline("no-provider", [{"name": "a", "agent": {"provider": "ghost",
                                                                   "prompt": "hi"}}]))
    for name, words in (("broken", "nope"), ("no-provider", "ghost")):
        obj = kubectl.wait_phase(name, {"Invalid", "Succeeded", "Failed"}, operator=operator)
        status = obj["status"]
        assert status["phase"] == "Invalid" and words in status["message"], status
        valid = next(c for c in status["conditions"] if c["type"] == "Valid")
        assert valid["status"] == "False"
    assert kubectl.items("jobs") == []
    # What the schema can express, the API server rejects at apply time.
    both = {"name": "x", "agent": {"prompt": "p"},
            "run": {"image": "i", "command": ["c"]}}
    res = kubectl("apply", "-f", "-", input=json.dumps(pipeline("both", [both])), check=False)
    assert res.returncode != 0 and "exactly one of agent, run or approval" in res.stderr


def test_on_failure_continue_routes_around(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(pipeline("tolerant", [
        run_stage("flaky", "import sys; sys.exit(3)", onFailure="continue"),
        run_stage("after", "import json, os; d = json.load(open(os.environ['STAGECOACH_INPUT']));"
                  " json.dump({'seen': d['stages']['flaky']['output']},"
                  " open(os.environ['STAGECOACH_OUTPUT'], 'w'))", dependsOn=["flaky"]),
    ]))
    obj = kubectl.wait_phase("tolerant", {"Succeeded", "Failed"}, operator=operator)
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["flaky"]["phase"] == "Failed" and "code 3" in stages["flaky"]["message"]
    after = kubectl.get("configmap", "tolerant-after-1")
    assert json.loads(after["data"]["1.json"])["value"] == {"seen": None}


CASSETTE_BIG = """
apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
  - {stage: first, response: {content: "a lot", usage: {input: 400, output: 200}}}
  - {stage: second, response: {content: "never", usage: {input: 1, output: 1}}}
"""


def test_budget_exceeded_stops_new_stages(operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(*replay("llm", CASSETTE_BIG), pipeline("spendy", [
        {"name": "first", "agent": {"prompt": "hi"}},
        {"name": "second", "dependsOn": ["first"], "agent": {"prompt": "again"}},
    ], defaults={"provider": "llm"}, budget={"maxTokens": 500}))
    obj = kubectl.wait_phase("spendy", {"Succeeded", "Failed"}, operator=operator)
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "BudgetExceeded"), status
    assert status["tokens"] == {"input": 400, "output": 200}
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["second"]["phase"] == "Skipped" and stages["second"]["attempt"] == 0
    assert [j["metadata"]["name"] for j in kubectl.items("jobs")] == ["spendy-first-1-1"]


CASSETTE_SLOW = """
apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
  - {stage: one, error: {status: 429, retryAfter: 1}}
  - {stage: one, response: {content: "1", usage: {input: 1, output: 1}}}
  - {stage: two, error: {status: 429, retryAfter: 1}}
  - {stage: two, response: {content: "2", usage: {input: 1, output: 1}}}
"""


def test_provider_max_concurrency_holds_across_pipelines(operator: Operator,
                                                         kubectl: Kubectl) -> None:
    docs = replay("shared", CASSETTE_SLOW, limits={"maxConcurrency": 1})
    names = ["p1", "p2", "p3"]
    for n in names:
        docs.append(pipeline(n, [{"name": "one", "agent": {"prompt": "1"}},
                                 {"name": "two", "dependsOn": ["one"], "agent": {"prompt": "2"}}],
                             defaults={"provider": "shared"}))
    peak = {"active": 0, "queued": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            jobs = kubectl.items("jobs", "-l", "stagecoach.dev/provider=shared")
            active = [j for j in jobs if not any(c.get("status") == "True" for c in
                                                 (j.get("status") or {}).get("conditions", []))]
            peak["active"] = max(peak["active"], len(active))
            mp = kubectl.get("modelprovider", "shared")
            peak["queued"] = max(peak["queued"], (mp.get("status") or {}).get("queued", 0))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    kubectl.apply(*docs)
    sampler.start()
    try:
        for n in names:
            obj = kubectl.wait_phase(n, {"Succeeded", "Failed"}, timeout=120, operator=operator)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
    finally:
        done.set()
        sampler.join()
    assert peak["active"] == 1, peak
    assert peak["queued"] >= 1, peak
    assert len(kubectl.items("jobs")) == 6
    # Round-robin: every pipeline started its first stage before any started its second.
    starts = []
    for n in names:
        starts += [(e["ts"], n, e["stage"]) for e in kubectl.operator_trace(n)
                   if e["type"] == "StageStarted"]
    order = [stage for _, _, stage in sorted(starts)]
    assert order[:3] == ["one", "one", "one"], sorted(starts)
