"""Tests proving the cluster harness: real controllers, real RBAC, pods that really run.

Why: everything built on the harness (Stagecoach's operator tests) trusts that a
Job here behaves like on a real cluster, so these checks use the real kubectl
and the real Job controller rather than poking the node agent directly.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .controlplane import BINARIES, ControlPlane

pytestmark = pytest.mark.cluster


def apply(cluster: ControlPlane, ns: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get(cluster: ControlPlane, ns: str, *what: str) -> dict[str, Any]:
    out = cluster.kubectl("-n", ns, "get", *what, "-o", "json").stdout
    return dict(json.loads(out))


def wait_pod_phase(
    cluster: ControlPlane, ns: str, name: str, phases: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = get(cluster, ns, "pod", name)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} not in {phases}: {json.dumps(pod['status'])}")
        time.sleep(0.2)


def job(name: str, script: str, *, backoff_limit: int = 6, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "python:3.11-slim",
                            "command": ["python3", "-c", script],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                    **pod_spec,
                }
            },
        },
    }


def test_job_completes_and_logs(kube_cluster: ControlPlane, kube_namespace: str) -> None:
    ns = kube_namespace
    apply(kube_cluster, ns, job("hello", "import os; print('hello from', os.environ['HOSTNAME'])"))
    kube_cluster.kubectl("-n", ns, "wait", "--for=condition=complete", "job/hello", "--timeout=60s")
    logs = kube_cluster.kubectl("-n", ns, "logs", "job/hello").stdout
    assert logs.startswith("hello from hello-")
    pods = get(kube_cluster, ns, "pods", "-l", "job-name=hello")["items"]
    assert len(pods) == 1
    status = pods[0]["status"]
    assert status["phase"] == "Succeeded"
    assert status["podIP"] == "127.0.0.1"
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert term["startedAt"] and term["finishedAt"]


def test_failing_job_reports_exit_code(kube_cluster: ControlPlane, kube_namespace: str) -> None:
    ns = kube_namespace
    script = "import sys; print('about to fail'); sys.exit(3)"
    apply(kube_cluster, ns, job("boom", script, backoff_limit=0))
    kube_cluster.kubectl("-n", ns, "wait", "--for=condition=failed", "job/boom", "--timeout=60s")
    pods = get(kube_cluster, ns, "pods", "-l", "job-name=boom")["items"]
    assert len(pods) == 1
    assert pods[0]["status"]["phase"] == "Failed"
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    # FallbackToLogsOnError: no termination-log written, so the log tail is the message.
    assert term["message"] == "about to fail\n"


PROBE = """\
import json, os, ssl, urllib.error, urllib.request

sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
ns = open(f"{sa}/namespace").read()
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
base = "https://{}:{}".format(
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
)

def call(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, context=ctx) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)

code, cm = call(f"/api/v1/namespaces/{ns}/configmaps/probe")
denied, _ = call(f"/api/v1/namespaces/{ns}/secrets")
result = {
    "configmap": [code, sorted(cm.get("data", {}))],
    "secrets": denied,
    "greeting": open("/etc/probe/greeting").read(),
    "password": open("/etc/secret/password").read(),
    "env": {k: os.environ[k] for k in ("POD_NAME", "POD_NS", "GREETING", "TEAM", "S_password")},
}
with open("/dev/termination-log", "w") as fh:
    json.dump(result, fh)
print(json.dumps(result))
"""


def test_configmap_volume_and_token_rbac(kube_cluster: ControlPlane, kube_namespace: str) -> None:
    ns = kube_namespace
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe"},
            "data": {"probe.py": PROBE, "greeting": "hi there"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    kube_cluster.wait_for_service_account(ns, "reader")
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "labels": {"team": "blue"}},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "reader",
                "containers": [
                    {
                        "name": "probe",
                        "image": "python:3.11-slim",
                        "command": ["python3", "/etc/probe/probe.py"],
                        "env": [
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {
                                "name": "POD_NS",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            {
                                "name": "TEAM",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}},
                            },
                            {
                                "name": "GREETING",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "probe", "key": "greeting"}
                                },
                            },
                        ],
                        "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "S_"}],
                        "volumeMounts": [
                            {"name": "cfg", "mountPath": "/etc/probe", "readOnly": True},
                            {"name": "creds", "mountPath": "/etc/secret", "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "probe"}},
                    {"name": "creds", "secret": {"secretName": "creds"}},
                ],
            },
        },
    )
    pod = wait_pod_phase(kube_cluster, ns, "probe", ("Succeeded", "Failed"))
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded", term
    result = json.loads(term["message"])
    assert result == {
        "configmap": [200, ["greeting", "probe.py"]],
        "secrets": 403,
        "greeting": "hi there",
        "password": "s3cret",
        "env": {
            "POD_NAME": "probe",
            "POD_NS": ns,
            "GREETING": "hi there",
            "TEAM": "blue",
            "S_password": "s3cret",
        },
    }
    # The token volume was injected by admission and really is projected.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert any(n.startswith("kube-api-access-") for n in volumes)


def test_init_container_and_native_sidecar_order(
    kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    sidecar = textwrap.dedent(
        """\
        grep -q '^init$' /work/order || { echo 'init did not run first'; exit 1; }
        echo sidecar-start >> /work/order
        trap 'echo sidecar-stop >> /work/order; echo got SIGTERM; exit 0' TERM
        while true; do sleep 0.1; done
        """
    )
    main = textwrap.dedent(
        """\
        for i in $(seq 100); do grep -q sidecar-start /work/order && break; sleep 0.1; done
        echo main >> /work/order
        cat /work/order
        """
    )
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "ordered"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 10,
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [
                    {
                        "name": "setup",
                        "image": "busybox",
                        "command": ["sh", "-c", "echo init > /work/order"],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    },
                    {
                        "name": "sidecar",
                        "image": "busybox",
                        "restartPolicy": "Always",
                        "command": ["sh", "-c", sidecar],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    },
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["sh", "-c", main],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    }
                ],
            },
        },
    )
    pod = wait_pod_phase(kube_cluster, ns, "ordered", ("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    main_log = kube_cluster.kubectl("-n", ns, "logs", "ordered", "-c", "main").stdout
    assert main_log.split() == ["init", "sidecar-start", "main"]
    sidecar_log = kube_cluster.kubectl("-n", ns, "logs", "ordered", "-c", "sidecar").stdout
    assert sidecar_log.strip() == "got SIGTERM"
    inits = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert inits["setup"]["state"]["terminated"]["exitCode"] == 0
    assert inits["sidecar"]["state"]["terminated"]["exitCode"] == 0
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "False"


def test_active_deadline_and_graceful_delete(
    kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace

    def pod(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "sleep",
                        "image": "busybox",
                        "command": [
                            "sh",
                            "-c",
                            "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
                        ],
                    }
                ],
                **spec,
            },
        }

    apply(kube_cluster, ns, pod("deadline", activeDeadlineSeconds=2), pod("victim"))
    failed = wait_pod_phase(kube_cluster, ns, "deadline", ("Succeeded", "Failed"), timeout=30)
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["reason"] == "DeadlineExceeded"
    wait_pod_phase(kube_cluster, ns, "victim", ("Running",))
    started = time.monotonic()
    kube_cluster.kubectl("-n", ns, "delete", "pod", "victim", "--timeout=30s")
    assert time.monotonic() - started < 20
    gone = kube_cluster.kubectl("-n", ns, "get", "pod", "victim", check=False)
    assert "NotFound" in gone.stderr


def test_restart_on_failure_and_follow_logs(
    kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    script = textwrap.dedent(
        """\
        if [ ! -f /state/tried ]; then touch /state/tried; echo first attempt fails; exit 1; fi
        for i in 1 2 3; do echo line $i; sleep 0.5; done
        """
    )
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "flaky"},
            "spec": {
                "restartPolicy": "OnFailure",
                "volumes": [{"name": "state", "emptyDir": {}}],
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "state", "mountPath": "/state"}],
                    }
                ],
            },
        },
    )
    deadline = time.monotonic() + 30
    while True:
        status = get(kube_cluster, ns, "pod", "flaky")["status"]
        cs = status.get("containerStatuses", [{}])[0]
        if cs.get("restartCount") == 1 and "running" in cs.get("state", {}):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    followed = kube_cluster.kubectl("-n", ns, "logs", "-f", "flaky").stdout
    assert followed.split("\n")[:3] == ["line 1", "line 2", "line 3"]
    pod = wait_pod_phase(kube_cluster, ns, "flaky", ("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded"
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    previous = kube_cluster.kubectl("-n", ns, "logs", "flaky", "--previous").stdout
    assert previous == "first attempt fails\n"


def test_pod_without_command_fails_clearly(kube_cluster: ControlPlane, kube_namespace: str) -> None:
    ns = kube_namespace
    apply(
        kube_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "imageonly"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "nginx"}]},
        },
    )
    pod = wait_pod_phase(kube_cluster, ns, "imageonly", ("Failed",))
    assert pod["status"]["reason"] == "NoCommand"
    assert "does not pull" in pod["status"]["message"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and ") Z " not in stat:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return ") Z " not in stat


def test_teardown_leaves_nothing_running(tmp_path: Path) -> None:
    cluster = ControlPlane(workdir=tmp_path / "cluster").start()
    try:
        pids = list(cluster.pids)
        cluster.kubectl("create", "namespace", "teardown")
        cluster.wait_for_service_account("teardown")
        cluster.kubectl(
            "-n", "teardown", "run", "sleeper", "--image=busybox", "--restart=Never",
            "--command", "--", "sh", "-c", "echo $$$$; exec sleep 300",  # $$ is kube escape
        )  # fmt: skip
        wait_pod_phase(cluster, "teardown", "sleeper", ("Running",))
        deadline = time.monotonic() + 10
        while not (log := cluster.kubectl("-n", "teardown", "logs", "sleeper").stdout.strip()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pod_pid = int(log)
        assert _alive(pod_pid)
        assert {c.name for c in cluster.components} >= set(BINARIES) | {"nodeagent"}
    finally:
        cluster.stop()
    assert [p for p in pids if _alive(p)] == []
    assert not _alive(pod_pid)
    assert _processes_mentioning(str(tmp_path / "cluster")) == []
    # Nothing is left in the process group of any component either.
    for pid in pids:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process group {pid} still has members")


def test_audit_log_counts_requests_per_user_verb_and_resource(
        kube_cluster: ControlPlane, kube_namespace: str) -> None:
    log = kube_cluster.audit_log
    mark = log.mark()
    for i in range(3):
        apply(kube_cluster, kube_namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": f"audit-{i}"}})
    get(kube_cluster, kube_namespace, "configmap", "audit-0")
    deadline = time.monotonic() + 10
    counts = log.count(since=mark, user="stagecoach-admin")
    while counts[("get", "configmaps")] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = log.count(since=mark, user="stagecoach-admin")
    # kubectl apply: a GET (not found) and a CREATE per object, then our GET
    assert counts[("create", "configmaps")] == 3
    assert counts[("get", "configmaps")] >= 4
    assert not [r for r in log.requests(since=mark) if r.user.startswith("system:node")]
    assert "total" in log.table(counts)
