"""The Helm chart: lints, renders in both RBAC modes, and every rendered manifest is a
valid Kubernetes object (kubernetes-validate, strict). No helm binary: helm-python-sdk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts/stagecoach"
KUBE_VERSION = "1.37.0"


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values or {}, name="sc", namespace="stagecoach-system",
                            is_install=True)
    docs: list[dict[str, Any]] = []
    for text in rendered.values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_is_clean() -> None:
    report = helm.lint(CHART, strict=True, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert errors == []


@pytest.mark.parametrize("values", [
    {},
    {"watch": {"mode": "namespaces", "namespaces": ["team-a", "team-b"]}},
    {"metrics": {"serviceMonitor": {"enabled": True}}, "dashboard": {"enabled": True},
     "operator": {"defaultStorage": {"type": "s3", "s3": {
         "bucket": "b", "endpoint": "http://s3", "credentialsSecret": "s3-creds"}}}},
], ids=["cluster", "namespaces", "s3-monitoring"])
def test_rendered_manifests_are_valid(values: dict[str, Any]) -> None:
    docs = render(values)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # Prometheus Operator CRD: not part of Kubernetes' schemas
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_operator_deployment_is_restricted_and_highly_available() -> None:
    docs = render()
    [dep] = by_kind(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2 and "strategy" not in spec  # RollingUpdate, one leader
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["args"] == ["operator", "--all-namespaces", "--no-manage-stage-policy",
                         "--leader-elect", "--leader-election-namespace=stagecoach-system"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        c["env"])
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {p["httpGet"]["path"] for p in (c["livenessProbe"], c["readinessProbe"])} == {
        "/healthz", "/readyz"}
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    [leader] = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader")]
    assert leader["metadata"]["namespace"] == "stagecoach-system"
    assert leader["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["stagecoach-operator"], "verbs": ["get", "update"]}]


def test_without_leader_election_one_replica_recreated() -> None:
    docs = render({"operator": {"leaderElection": False}})
    [dep] = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert "--leader-elect" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert by_kind(docs, "PodDisruptionBudget") == []


def test_namespace_mode_grants_nothing_cluster_wide() -> None:
    docs = render({"watch": {"mode": "namespaces", "namespaces": ["team-a", "team-b"]}})
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    # (the leader-election Role is the release namespace's own)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    assert ("team-a", "sc-stagecoach") in roles and ("team-b", "sc-stagecoach") in roles
    assert ("team-a", "stagecoach-stage") in roles
    [dep] = by_kind(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][:5] == [
        "operator", "--namespace=team-a", "--namespace=team-b", "--no-manage-stage-rbac",
        "--no-manage-stage-policy"]


def test_stage_role_allows_only_reading_updating_and_patching_configmaps() -> None:
    from stagecoach.operator.policy import STAGE_RULES

    docs = render()
    stage_roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "stagecoach-stage"]
    assert stage_roles
    for role in stage_roles:
        assert role["rules"] == STAGE_RULES == [
            {"apiGroups": [""], "resources": ["configmaps"],
             "verbs": ["get", "list", "update", "patch"]}]
    for account in by_kind(docs, "ServiceAccount"):
        if account["metadata"]["name"] == "stagecoach-stage":
            assert account["automountServiceAccountToken"] is False
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"]
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_the_operator_holds_every_permission_it_grants_stage_pods() -> None:
    """The API server refuses a Role that grants what its creator lacks (RBAC escalation
    prevention): the operator's own rules cover the stage Role it creates."""
    from stagecoach.operator.policy import STAGE_RULES

    docs = render()
    [operator] = [r for r in by_kind(docs, "ClusterRole")
                  if any("agentpipelines" in rule["resources"] for rule in r["rules"])
                  and r["metadata"]["name"].endswith("stagecoach")]
    for wanted in STAGE_RULES:
        for resource in wanted["resources"]:
            held = {v for rule in operator["rules"] if resource in rule["resources"]
                    and rule["apiGroups"] == wanted["apiGroups"] for v in rule["verbs"]}
            assert set(wanted["verbs"]) <= held, (resource, held)


@pytest.mark.parametrize("account", ["stagecoach-stage", "runner"])
def test_chart_stage_policy_is_the_operators(account: str) -> None:
    """The chart's ValidatingAdmissionPolicy and binding are exactly what the operator
    applies in non-Helm installs (one policy, two ways to install it)."""
    from stagecoach.operator.policy import stage_policy

    docs = render({"stage": {"serviceAccountName": account}})
    assert _policy_objects(docs, "stagecoach-stage-writes") == [
        (d["kind"], d["metadata"]["name"], d["spec"]) for d in stage_policy(account)]


def _policy_objects(docs: list[dict[str, Any]], name: str) -> list[tuple[str, str, Any]]:
    """(kind, name, spec) of the chart's admission policy ``name`` and its binding."""
    return [(d["kind"], d["metadata"]["name"], d["spec"])
            for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
            for d in by_kind(docs, kind) if d["metadata"]["name"] == name]


@pytest.mark.parametrize("values", [{}, {"watch": {"mode": "namespaces",
                                                   "namespaces": ["team-a"]}}],
                         ids=["cluster", "namespaces"])
def test_chart_approval_policy_is_the_operators(values: dict[str, Any]) -> None:
    """One approval policy (DESIGN §9), shipped by the chart in every mode and applied by
    the operator outside Helm; nothing else in the chart is an admission policy."""
    from stagecoach.operator.policy import APPROVAL_POLICY_NAME, POLICY_NAME, approval_policy

    docs = render(values)
    assert _policy_objects(docs, APPROVAL_POLICY_NAME) == [
        (d["kind"], d["metadata"]["name"], d["spec"]) for d in approval_policy()]
    names = {d["metadata"]["name"] for kind in ("ValidatingAdmissionPolicy",
                                                "ValidatingAdmissionPolicyBinding")
             for d in by_kind(docs, kind)}
    assert names == {POLICY_NAME, APPROVAL_POLICY_NAME}


def test_values_schema_rejects_bad_values() -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError):
        chart.validate_schema({"watch": {"mode": "everywhere"}})
    with pytest.raises(helm.HelmError):
        chart.validate_schema({"watch": {"mode": "namespaces", "namespaces": []}})
    with pytest.raises(helm.HelmError):
        chart.validate_schema({"metrics": {"port": 0}})


def test_chart_crds_match_the_generated_ones() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_crds == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in chart_crds:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()


_APPROVER_RULES = [
    {"apiGroups": ["stagecoach.dev"], "resources": ["stageapprovals"],
     "verbs": ["create", "get", "list", "watch"]},
    {"apiGroups": ["stagecoach.dev"], "resources": ["agentpipelines"],
     "verbs": ["get", "list", "watch"]}]
_RUN_CONTROLLER_RULES = [
    {"apiGroups": ["stagecoach.dev"], "resources": ["agentpipelines"],
     "verbs": ["get", "list", "watch", "patch"]}]


def test_user_roles_are_cluster_roles_to_bind_per_namespace() -> None:
    """approve/reject need only create (and read) StageApprovals; suspend/stop only patch
    pipelines. Neither can decide in the operator's place (status), change a decision,
    or start a workload (create pipelines: retry is an author's right)."""
    docs = render()
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert roles["sc-stagecoach-approver"]["rules"] == _APPROVER_RULES
    assert roles["sc-stagecoach-run-controller"]["rules"] == _RUN_CONTROLLER_RULES
    # Bound by nobody: the chart grants people nothing by itself.
    bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")
             + by_kind(docs, "RoleBinding")}
    assert not bound & {"sc-stagecoach-approver", "sc-stagecoach-run-controller"}
    for name in ("sc-stagecoach-approver", "sc-stagecoach-run-controller"):
        for rule in roles[name]["rules"]:
            assert not any(r.endswith("/status") for r in rule["resources"])
            assert not set(rule["verbs"]) & {"update", "delete", "deletecollection", "*"}
            if "agentpipelines" in rule["resources"]:
                assert "create" not in rule["verbs"]


def test_user_roles_in_namespace_mode_are_roles_in_each_watched_namespace() -> None:
    docs = render({"watch": {"mode": "namespaces", "namespaces": ["team-a", "team-b"]}})
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"]
             for r in by_kind(docs, "Role")}
    for ns in ("team-a", "team-b"):
        assert roles[(ns, "sc-stagecoach-approver")] == _APPROVER_RULES
        assert roles[(ns, "sc-stagecoach-run-controller")] == _RUN_CONTROLLER_RULES
    assert ("stagecoach-system", "sc-stagecoach-approver") not in roles


def test_user_roles_can_be_left_out() -> None:
    docs = render({"userRoles": {"enabled": False}})
    names = {r["metadata"]["name"] for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")}
    assert not names & {"sc-stagecoach-approver", "sc-stagecoach-run-controller"}
    assert "sc-stagecoach" in names
    with pytest.raises(helm.HelmError):
        helm.Chart.load(CHART).validate_schema({"userRoles": {"enabled": "yes"}})
