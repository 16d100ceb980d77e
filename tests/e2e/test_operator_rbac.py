"""The e2e operator really runs under the chart's RBAC (issue #5): its kubeconfig is a
ServiceAccount token, and the API server grants it what the ClusterRole lists, no more."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, find_kubectl
from tests.e2e.conftest import RELEASE_NAMESPACE, Operator, operator_service_account

pytestmark = pytest.mark.cluster


def kubectl_as(cluster: ControlPlane, kubeconfig: str,
               *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with ``kubeconfig`` instead of the admin's."""
    return subprocess.run([find_kubectl(cluster.bin_dir), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60)


def can_i(cluster: ControlPlane, kubeconfig: str, *args: str) -> str:
    """``kubectl auth can-i ARGS`` as the holder of ``kubeconfig``: "yes" or "no"."""
    res = kubectl_as(cluster, kubeconfig, "auth", "can-i", *args)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stdout + res.stderr
    return answer


def test_operator_is_its_service_account_not_admin(operator: Operator,
                                                   kube_namespace: str) -> None:
    cluster, kc = operator.cluster, str(operator.kubeconfig)
    # The running operator is started as the chart's Deployment, with the token kubeconfig.
    deadline = time.monotonic() + 60
    while "stagecoach operator started" not in operator.logs():
        assert time.monotonic() < deadline, operator.logs()[-3000:]
        time.sleep(0.1)
    assert operator.proc is not None and operator.proc.poll() is None
    pid = operator.proc.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[-6:] == [b"operator", b"--all-namespaces", b"--no-manage-stage-policy",
                         b"--leader-elect",
                         f"--leader-election-namespace={RELEASE_NAMESPACE}".encode(), b""]
    environ = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes()
                   .split(b"\0") if b"=" in e)
    assert environ[b"KUBECONFIG"] == kc.encode()
    [user] = yaml.safe_load(Path(kc).read_text())["users"]
    assert set(user["user"]) == {"token"}  # no client certificate, no admin
    res = kubectl_as(cluster, kc, "auth", "whoami", "-o", "json")
    assert res.returncode == 0, res.stderr
    who = json.loads(res.stdout)
    assert who["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{RELEASE_NAMESPACE}:{operator_service_account()}")
    assert "system:masters" not in who["status"]["userInfo"].get("groups", [])
    # What the chart grants it ...
    granted = [("create", "jobs", "-n", kube_namespace),
               ("delete", "jobs", "-n", kube_namespace),
               ("watch", "jobs", "--all-namespaces"),
               ("patch", "agentpipelines.stagecoach.dev", "--subresource=status", "-n",
                kube_namespace),
               ("watch", "agentpipelines.stagecoach.dev", "--all-namespaces"),
               ("update", "configmaps", "-n", kube_namespace),
               # expired stage-cache entries, owned by no pipeline, are the operator's to
               # delete (it can already update any ConfigMap it could delete)
               ("delete", "configmaps", "-n", kube_namespace),
               ("delete", "agentpipelines.stagecoach.dev", "-n", kube_namespace),
               ("create", "serviceaccounts", "-n", kube_namespace),
               ("create", "rolebindings.rbac.authorization.k8s.io", "-n", kube_namespace),
               ("update", "leases.coordination.k8s.io/stagecoach-operator", "-n",
                RELEASE_NAMESPACE)]
    # ... and what it must not have.
    denied = [("create", "secrets", "--all-namespaces"),
              ("get", "secrets", "-n", kube_namespace),
              ("list", "secrets", "--all-namespaces"),
              ("create", "pods", "-n", kube_namespace),
              ("patch", "agentpipelines.stagecoach.dev", "-n", kube_namespace),
              ("list", "namespaces"),
              ("update", "leases.coordination.k8s.io/other", "-n", RELEASE_NAMESPACE),
              ("create", "leases.coordination.k8s.io", "-n", kube_namespace),
              ("create", "validatingadmissionpolicies.admissionregistration.k8s.io"),
              ("delete", "namespaces", "--all-namespaces"),
              ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
              ("escalate", "roles.rbac.authorization.k8s.io", "-n", kube_namespace),
              ("bind", "clusterroles.rbac.authorization.k8s.io"),
              ("*", "*", "--all-namespaces")]
    got = {args: can_i(cluster, kc, *args) for args in granted + denied}
    assert got == {**{a: "yes" for a in granted}, **{a: "no" for a in denied}}
    # The admin kubeconfig the tests use is still admin (the control for the above).
    assert can_i(cluster, str(cluster.kubeconfig), "create", "secrets",
                 "--all-namespaces") == "yes"
