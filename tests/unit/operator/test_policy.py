"""The admission policies: stage writes (DESIGN §6), whose CEL decides what a stage pod
may write, and approvals (DESIGN §9), whose CEL makes a StageApproval name the user who
created it; the operator installs them outside Helm. The real API server evaluates them
in tests/e2e/test_operator_trust.py and tests/e2e/test_control_cli.py; here the rules are
checked with the CEL library the engine uses, on the requests an attacker would send."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach.operator.kube import Kube
from stagecoach.operator.policy import (
    APPROVAL_POLICY_NAME,
    POLICY_NAME,
    approval_policy,
    stage_policy,
)


class FakeRest:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, body: Any = None,
                      query: Any = None, content_type: str = "") -> tuple[int, Any]:
        self.calls.append((method, path))
        if method == "GET":
            return (200, self.objects[path]) if path in self.objects else (404, {})
        if method == "POST":
            self.objects[f"{path}/{body['metadata']['name']}"] = body
            return 201, body
        if method == "PATCH":
            self.objects[path] = {**self.objects[path], **body}
            return 200, self.objects[path]
        raise AssertionError(method)


async def test_the_operator_installs_the_policy_and_its_binding_once() -> None:
    rest = FakeRest()
    kube = Kube(rest)  # type: ignore[arg-type]
    objects = stage_policy("stagecoach-stage")
    await kube.ensure_cluster_objects(objects)
    base = "/apis/admissionregistration.k8s.io/v1"
    assert set(rest.objects) == {f"{base}/validatingadmissionpolicies/{POLICY_NAME}",
                                 f"{base}/validatingadmissionpolicybindings/{POLICY_NAME}"}
    rest.calls.clear()
    await kube.ensure_cluster_objects(objects)  # unchanged: reads only
    assert [m for m, _ in rest.calls] == ["GET", "GET"]
    changed = stage_policy("runner")
    await kube.ensure_cluster_objects(changed)  # another account: the spec is updated
    assert "PATCH" in [m for m, _ in rest.calls]


def _evaluate(operation: str, pod: str | None, old: dict[str, Any] | None,
              new: dict[str, Any] | None, resource: str = "configmaps") -> list[str]:
    """The messages of the validations that fail (the CEL of the policy, evaluated)."""
    import cel

    [policy, _] = stage_policy("stagecoach-stage")
    spec = policy["spec"]
    extra = {"authentication.kubernetes.io/pod-name": [pod]} if pod else {}
    request = {"operation": operation, "userInfo": {
        "username": "system:serviceaccount:ns:stagecoach-stage", "extra": extra},
        "resource": {"group": "", "version": "v1", "resource": resource}}
    env: dict[str, Any] = {"request": request, "object": new, "oldObject": old}
    variables: dict[str, Any] = {}
    for v in spec["variables"]:
        variables[v["name"]] = cel.evaluate(v["expression"], {**env, "variables": variables})
    env["variables"] = variables
    failed = []
    for rule in spec["validations"]:
        if not cel.evaluate(rule["expression"], env):
            failed.append(rule.get("message") or rule["messageExpression"])
    return failed


def _cm(writer: str | None, data: str = "x", **labels: str) -> dict[str, Any]:
    all_labels = {"app.kubernetes.io/managed-by": "stagecoach", **labels}
    if writer:
        all_labels["stagecoach.dev/writer"] = writer
    return {"metadata": {"name": "p-a-1", "labels": all_labels,
                         "annotations": {"stagecoach.dev/key": "outputs/a/1.json"},
                         "ownerReferences": [{"uid": "u"}]}, "data": {"1.json": data}}


@pytest.mark.parametrize(("case", "operation", "pod", "old", "new", "allowed"), [
    ("its own output", "UPDATE", "p-a-1-1-x7k2q", _cm("p-a-1-1"), _cm("p-a-1-1", "y"), True),
    ("another attempt's", "UPDATE", "p-a-1-2-x7k2q", _cm("p-a-1-1"), _cm("p-a-1-1", "y"), False),
    ("a longer job name", "UPDATE", "p-a-1-1-1-x7k2q", _cm("p-a-1-1"), _cm("p-a-1-1", "y"),
     False),
    ("unlabelled (state)", "UPDATE", "p-a-1-1-x7k2q", _cm(None), _cm(None, "y"), False),
    ("relabel", "UPDATE", "p-a-1-1-x7k2q", _cm("p-a-1-1"), _cm("p-a-1-1", "y", extra="1"),
     False),
    ("no pod in the token", "UPDATE", None, _cm("p-a-1-1"), _cm("p-a-1-1", "y"), False),
    ("create", "CREATE", "p-a-1-1-x7k2q", None, _cm("p-a-1-1"), False),
    ("delete", "DELETE", "p-a-1-1-x7k2q", _cm("p-a-1-1"), None, False),
])
def test_what_a_stage_pod_may_write(case: str, operation: str, pod: str | None,
                                    old: dict[str, Any] | None, new: dict[str, Any] | None,
                                    allowed: bool) -> None:
    assert (_evaluate(operation, pod, old, new) == []) is allowed, case


def _approval_denials(username: str, spec: dict[str, Any]) -> list[str]:
    """The messages the approval policy answers a CREATE with (its CEL, evaluated)."""
    import cel

    [policy, _] = approval_policy()
    env = {"request": {"operation": "CREATE", "userInfo": {"username": username}},
           "object": {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "StageApproval",
                      "metadata": {"generateName": "p-sign-off-"}, "spec": spec}}
    return [cel.evaluate(rule["messageExpression"], env)
            for rule in policy["spec"]["validations"] if not cel.evaluate(rule["expression"], env)]


_DECISION = {"pipeline": "p", "stage": "sign-off", "decision": "Approve"}


@pytest.mark.parametrize(("case", "username", "approver", "denied"), [
    ("herself", "alice", "alice", None),
    ("someone else", "alice", "bob",
     "spec.approver must be the user who creates the StageApproval: it names bob but the "
     "request is from alice"),
    ("a prefix of her name", "alice", "alic",
     "spec.approver must be the user who creates the StageApproval: it names alic but the "
     "request is from alice"),
    ("a service account as itself", "system:serviceaccount:ci:deployer",
     "system:serviceaccount:ci:deployer", None),
    ("a service account as a person", "system:serviceaccount:ci:deployer", "alice",
     "spec.approver must be the user who creates the StageApproval: it names alice but the "
     "request is from system:serviceaccount:ci:deployer"),
    ("nobody named", "alice", None,
     "spec.approver must be the user who creates the StageApproval: it names (none) but the "
     "request is from alice"),
])
def test_an_approval_names_the_user_who_creates_it(case: str, username: str,
                                                   approver: str | None,
                                                   denied: str | None) -> None:
    spec = {**_DECISION, **({"approver": approver} if approver is not None else {})}
    assert _approval_denials(username, spec) == ([denied] if denied else []), case


def test_the_approval_policy_checks_creates_of_stageapprovals_only_and_denies() -> None:
    policy, binding = approval_policy()
    assert policy["metadata"]["name"] == binding["spec"]["policyName"] == APPROVAL_POLICY_NAME
    assert policy["spec"]["matchConstraints"] == {"resourceRules": [{
        "apiGroups": ["stagecoach.dev"], "apiVersions": ["*"], "resources": ["stageapprovals"],
        "operations": ["CREATE"]}]}  # UPDATEs of spec: the CRD's self == oldSelf rule
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace


async def test_the_operator_can_install_the_approval_policy_like_the_stage_policy() -> None:
    rest = FakeRest()
    kube = Kube(rest)  # type: ignore[arg-type]
    await kube.ensure_cluster_objects(approval_policy())
    base = "/apis/admissionregistration.k8s.io/v1"
    assert set(rest.objects) == {
        f"{base}/validatingadmissionpolicies/{APPROVAL_POLICY_NAME}",
        f"{base}/validatingadmissionpolicybindings/{APPROVAL_POLICY_NAME}"}
