"""The generated CRDs on a real kube-apiserver: accepted as structural schemas,
documented by ``kubectl explain``, and enforcing what the schema can state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def crds(kube_cluster: Any) -> Any:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for name in ("agentpipelines", "agentpipelinetemplates", "modelproviders",
                 "stageapprovals"):
        kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             f"crd/{name}.stagecoach.dev")
    return kube_cluster


def _pipeline(spec: dict[str, Any], name: str = "p") -> str:
    return yaml.safe_dump({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
                           "metadata": {"name": name}, "spec": spec})


def _explain(cluster: Any, path: str) -> str:
    """kubectl explain, retried while the API server publishes the new OpenAPI."""
    deadline = time.monotonic() + 60
    while True:
        proc = cluster.kubectl("explain", path, check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            assert proc.returncode == 0, proc.stderr
            return str(proc.stdout)
        time.sleep(1)


def test_kubectl_explain_shows_field_descriptions(crds: Any) -> None:
    out = _explain(crds, "agentpipelines.spec.stages.routes.maxIterations")
    assert "How many iterations this back-edge may give its target" in out
    out = _explain(crds, "ap.spec.stages.dependsOn")
    assert "Stages that must finish first" in out


def test_examples_are_accepted_and_printer_columns_show(crds: Any,
                                                        kube_namespace: str) -> None:
    example = ROOT / "examples/research-report/pipeline.yaml"
    crds.kubectl("apply", "-n", kube_namespace, "-f", str(example))
    out = crds.kubectl("get", "ap", "-n", kube_namespace).stdout
    assert out.split("\n")[0].split() == ["NAME", "PHASE", "PROGRESS", "AGE"]
    assert "battery-report" in out
    out = crds.kubectl("get", "mp", "-n", kube_namespace).stdout
    assert out.split("\n")[0].split()[:3] == ["NAME", "TYPE", "IN"]
    crds.kubectl("get", "aptpl", "-n", kube_namespace, "research-report")


STAGE = {"name": "a", "run": {"image": "x", "command": ["x"]}}
INVALID = [
    ("exactly one of agent/run",
     {"stages": [{**STAGE, "agent": {"prompt": "hi"}}]},
     "a stage needs exactly one of agent, run or approval"),
    ("approval with forEach",
     {"stages": [{"name": "a", "forEach": "[1]", "approval": {"message": "ok?"}}]},
     "an approval stage takes no forEach"),
    ("finally approval",
     {"stages": [STAGE], "finally": [{"name": "f", "approval": {"message": "ok?"}}]},
     "unknown field"),
    ("approval input enum",
     {"stages": [{"name": "a", "approval": {"message": "ok?", "inputs": [
         {"name": "x"}, {"name": "x"}]}}]}, "Duplicate value"),
    ("shutdown mode", {"shutdown": "Pause", "stages": [STAGE]}, "Unsupported value"),
    ("templateRef and stages",
     {"templateRef": {"name": "t"}, "stages": [STAGE]},
     "set exactly one of templateRef or stages"),
    ("maxIterations required",
     {"stages": [STAGE, {**STAGE, "name": "b", "dependsOn": ["a"],
                         "routes": [{"when": "true", "goto": "a"}]}]},
     "maxIterations: Required value"),
    ("positive maxParallel", {"maxParallel": 0, "stages": [STAGE]},
     "should be greater than or equal to 1"),
    ("DNS stage names", {"stages": [{**STAGE, "name": "Bad_Name"}]}, "should match"),
    ("duplicate stage names", {"stages": [STAGE, STAGE]}, "Duplicate value"),
    ("durations", {"timeout": "5 minutes", "stages": [STAGE]}, "should match"),
    ("self dependency", {"stages": [{**STAGE, "dependsOn": ["a"]}]},
     "a stage cannot depend on itself"),
    ("route to itself", {"stages": [{**STAGE, "routes": [
        {"when": "true", "goto": "a", "maxIterations": 2}]}]},
     "a route must go back to an ancestor"),
    ("unknown error class",
     {"stages": [{**STAGE, "retry": {"on": ["Nope"]}}]}, "Unsupported value"),
]


@pytest.mark.parametrize(("case", "spec", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_kubectl_apply_rejects_what_the_schema_states(crds: Any, kube_namespace: str,
                                                      case: str, spec: dict[str, Any],
                                                      message: str) -> None:
    proc = crds.kubectl("apply", "-n", kube_namespace, "-f", "-", input=_pipeline(spec),
                        check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, proc.stderr


def _patch(cluster: Any, ns: str, name: str, patch: dict[str, Any]) -> Any:
    return cluster.kubectl("patch", "-n", ns, "ap", name, "--type=merge", "-p",
                           json.dumps(patch), check=False)


def test_only_suspend_and_shutdown_change_after_creation(crds: Any,
                                                         kube_namespace: str) -> None:
    crds.kubectl("apply", "-n", kube_namespace, "-f", "-",
                 input=_pipeline({"stages": [STAGE], "timeout": "1h"}, name="mut"))
    for patch in ({"spec": {"suspend": True}}, {"spec": {"suspend": False}},
                  {"spec": {"shutdown": "Stop"}}, {"spec": {"shutdown": "Terminate"}}):
        proc = _patch(crds, kube_namespace, "mut", patch)
        assert proc.returncode == 0, (patch, proc.stderr)
    refused = [
        ({"spec": {"timeout": "2h"}}, "spec.timeout is immutable"),
        ({"spec": {"maxParallel": 3}}, "spec.maxParallel is immutable"),
        ({"spec": {"stages": [{**STAGE, "name": "b"}]}}, "spec.stages is immutable"),
        ({"spec": {"params": {"x": 1}}}, "spec.params is immutable"),
        ({"spec": {"resumeFrom": {"name": "old"}}}, "spec.resumeFrom is immutable"),
        ({"spec": {"shutdown": "Stop"}}, "it may only go from Stop to Terminate"),
        ({"spec": {"shutdown": None}}, "spec.shutdown cannot be removed"),
    ]
    for patch, message in refused:
        proc = _patch(crds, kube_namespace, "mut", patch)
        assert proc.returncode != 0, f"{patch}: accepted"
        assert message in proc.stderr, proc.stderr


def test_stage_approvals_are_immutable_and_show_their_columns(crds: Any,
                                                               kube_namespace: str) -> None:
    sapr = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "StageApproval",
            "metadata": {"name": "ok-1"},
            "spec": {"pipeline": "p", "stage": "sign-off", "decision": "Approve",
                     "approver": "stagecoach-admin", "inputs": {"channel": "blog"}}}
    crds.kubectl("apply", "-n", kube_namespace, "-f", "-", input=yaml.safe_dump(sapr))
    out = crds.kubectl("get", "sapr", "-n", kube_namespace).stdout
    assert out.split("\n")[0].split() == ["NAME", "PIPELINE", "STAGE", "DECISION",
                                          "APPROVER", "RESULT", "AGE"]
    proc = crds.kubectl("patch", "-n", kube_namespace, "sapr", "ok-1", "--type=merge", "-p",
                        '{"spec": {"decision": "Reject"}}', check=False)
    assert proc.returncode != 0 and "a StageApproval is immutable" in proc.stderr
    bad = {**sapr, "metadata": {"name": "bad"}, "spec": {**sapr["spec"], "decision": "Maybe"}}
    proc = crds.kubectl("apply", "-n", kube_namespace, "-f", "-", input=yaml.safe_dump(bad),
                        check=False)
    assert proc.returncode != 0 and "Unsupported value" in proc.stderr
