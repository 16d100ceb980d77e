"""The trust boundary on the real control plane (DESIGN §6, §10; issue 9): tested as an
attacker (a hostile stage container, a leaked stage token, a model that echoes its API
key), as the least-privileged install (namespace mode under exactly the chart's RBAC),
and with requests the API server refuses."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, find_kubectl
from tests.e2e.conftest import (
    STAGECOACH,
    Kubectl,
    Operator,
    bad_log_lines,
    cassette_configmap,
    install_chart_rbac,
    load_example,
    render_chart,
    replay_provider,
    token_kubeconfig,
)

pytestmark = pytest.mark.cluster

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Runs as the user's container of a run stage: looks for Kubernetes credentials and
# tries the API without them; reports what it found as its output.
HOSTILE = r"""
import glob, json, os, ssl, urllib.request, urllib.error
report = {"tokenFile": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
          "secretFiles": [p for p in glob.glob("/var/run/secrets/**", recursive=True)
                          if os.path.isfile(p)],
          "tokenEnv": [k for k, v in os.environ.items() if v.startswith("eyJ")]}
base = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
                          os.environ["KUBERNETES_SERVICE_PORT"])
ns = os.environ["POD_NAMESPACE"]
ctx = ssl._create_unverified_context()
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
report["listConfigMaps"] = call("GET", "/api/v1/namespaces/%s/configmaps" % ns)
report["createConfigMap"] = call("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                 {"metadata": {"name": "planted"}, "data": {"x": "1"}})
json.dump(report, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""


def hostile_pipeline(name: str) -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name},
            "spec": {"defaults": {"provider": "replay", "model": "smollm2-135m"},
                     "stages": [
                         {"name": "greet", "run": {
                             "image": "python:3.12-slim", "command": ["python3", "-c"],
                             "args": [HOSTILE], "output": {"format": "json"},
                             "env": [{"name": "POD_NAMESPACE", "valueFrom": {
                                 "fieldRef": {"fieldPath": "metadata.namespace"}}}]}},
                         {"name": "poem", "dependsOn": ["greet"],
                          "agent": {"prompt": "Write a poem about {{ stages.greet.output }}"}}],
                     "output": "{{ stages.poem.output }}"}}


def as_user(cluster: ControlPlane, kubeconfig: Path, *args: str,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_kubectl(cluster.bin_dir), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, input=input)


def test_a_hostile_stage_gets_no_credentials_and_a_leaked_token_writes_nothing_else(
        crds: ControlPlane, kubectl: Kubectl, kube_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the pods: a bound token dies with its pod, and this test leaks one on purpose.
    monkeypatch.setenv("STAGECOACH_POD_GC", "Never")
    operator = Operator(crds, kube_namespace, tmp_path)
    operator.start()
    try:
        _hostile(operator, kubectl, kube_namespace, tmp_path)
    finally:
        operator.kill(signal.SIGTERM)


def _hostile(operator: Operator, kubectl: Kubectl, kube_namespace: str,
             tmp_path: Path) -> None:
    # Stage pods must be admitted by the restricted Pod Security profile.
    kubectl.cluster.kubectl("label", "namespace", kube_namespace,
                            "pod-security.kubernetes.io/enforce=restricted")
    provider, _ = load_example("hello")
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"), hostile_pipeline("evil"),
                  hostile_pipeline("other"))
    for name in ("evil", "other"):
        obj = kubectl.wait_phase(name, {"Succeeded", "Failed", "Invalid"}, operator=operator)
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    # 1. The user's container had no Kubernetes credentials, and without them the API
    #    refused it everything.
    report = json.loads(kubectl.get("configmap", "evil-greet-1")["data"]["1.json"])["value"]
    assert report["tokenFile"] is False and report["secretFiles"] == []
    assert report["tokenEnv"] == []
    assert report["listConfigMaps"] in (401, 403) and report["createConfigMap"] in (401, 403)
    [job] = kubectl.items("jobs", "-l", "stagecoach.dev/stage=greet,stagecoach.dev/pipeline=evil")
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    [main] = pod_spec["containers"]
    assert all(m["mountPath"] != TOKEN_DIR for m in main.get("volumeMounts", []))
    # 2. A stage token that leaked anyway (the one the collector holds: bound to the
    #    pod) may update only the objects prepared for that pod, data only.
    [pod] = kubectl.items("pods", "-l", "batch.kubernetes.io/job-name=evil-greet-1-1")
    token = kubectl("create", "token", "stagecoach-stage", "--bound-object-kind", "Pod",
                    "--bound-object-name", pod["metadata"]["name"]).stdout.strip()
    leaked = token_kubeconfig(kubectl.cluster, tmp_path / "leaked.kubeconfig",
                              "stagecoach-stage", token)
    ns = ("-n", kube_namespace)
    before = {n: kubectl.get("configmap", n) for n in
              ("evil-state", "hello-cassette", "evil-poem-1", "other-greet-1")}

    def replaced(name: str, **changes: Any) -> str:
        obj = json.loads(json.dumps(before.get(name) or kubectl.get("configmap", name)))
        obj.pop("status", None)
        for path, value in changes.items():
            target = obj
            *parents, leaf = path.split("__")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
        return json.dumps(obj)

    denied = {
        "patch the run state": as_user(kubectl.cluster, leaked, *ns, "patch", "configmap",
                                       "evil-state", "-p", '{"data": {"x": "y"}}'),
        "replace the run state": as_user(kubectl.cluster, leaked, *ns, "replace", "-f", "-",
                                         input=replaced("evil-state", data={"x": "y"})),
        "overwrite the cassette": as_user(kubectl.cluster, leaked, *ns, "replace", "-f", "-",
                                          input=replaced("hello-cassette",
                                                         data={"cassette.yaml": "entries: []"})),
        "write another stage's output": as_user(
            kubectl.cluster, leaked, *ns, "replace", "-f", "-",
            input=replaced("evil-poem-1", data={"1.json": "{}"})),
        "write another pipeline's output": as_user(
            kubectl.cluster, leaked, *ns, "replace", "-f", "-",
            input=replaced("other-greet-1", data={"1.json": "{}"})),
        "relabel its own output": as_user(
            kubectl.cluster, leaked, *ns, "replace", "-f", "-",
            input=replaced("evil-greet-1", metadata__labels={"stagecoach.dev/writer": "x"})),
        "create a ConfigMap": as_user(kubectl.cluster, leaked, *ns, "create", "configmap",
                                      "planted", "--from-literal=x=1"),
        "patch another pipeline's output": as_user(
            kubectl.cluster, leaked, *ns, "patch", "configmap", "other-greet-1", "--type",
            "merge", "-p", '{"data": {"1.json": "{}"}}'),
        "pin its own output with a finalizer": as_user(
            kubectl.cluster, leaked, *ns, "patch", "configmap", "evil-greet-1", "--type",
            "merge", "-p", '{"metadata": {"finalizers": ["evil.example/keep"]}}'),
        "make its own output immutable": as_user(
            kubectl.cluster, leaked, *ns, "patch", "configmap", "evil-greet-1", "--type",
            "merge", "-p", '{"immutable": true}'),
        "create a ConfigMap by server-side apply": as_user(
            kubectl.cluster, leaked, *ns, "apply", "--server-side", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "planted-by-apply"},
                              "data": {"x": "1"}})),
        "delete its own output": as_user(kubectl.cluster, leaked, *ns, "delete", "configmap",
                                         "evil-greet-1"),
        "read a Secret": as_user(kubectl.cluster, leaked, *ns, "get", "secrets"),
        "create a pod": as_user(kubectl.cluster, leaked, *ns, "run", "x", "--image=busybox"),
    }
    for what, res in denied.items():
        assert res.returncode != 0, f"{what}: allowed!\n{res.stdout}"
        assert "forbidden" in res.stderr.lower(), f"{what}: {res.stderr}"
    assert "not prepared for pod" in denied["write another stage's output"].stderr
    assert "not its labels" in denied["relabel its own output"].stderr
    assert "not prepared for pod" in denied["patch the run state"].stderr
    for what in ("pin its own output with a finalizer", "make its own output immutable"):
        assert "not its labels" in denied[what].stderr, denied[what].stderr
    for name, obj in before.items():
        assert kubectl.get("configmap", name)["data"] == obj["data"], name
    # The control: the same token may write its own output's data (what the collector does).
    allowed = as_user(kubectl.cluster, leaked, *ns, "replace", "-f", "-",
                      input=replaced("evil-greet-1"))
    assert allowed.returncode == 0, allowed.stderr
    patched = as_user(kubectl.cluster, leaked, *ns, "patch", "configmap", "evil-greet-1",
                      "--type", "merge", "-p", '{"data": {"1.json": "{}"}}')
    assert patched.returncode == 0, patched.stderr


@pytest.mark.operator_log_allows("exceeded quota")
def test_refused_jobs_fail_visibly_and_validate_catches_what_it_can(
        operator: Operator, kubectl: Kubectl, tmp_path: Path) -> None:
    provider, pipeline = load_example("hello")
    # What the schema can express, `kubectl apply` refuses and `stagecoach validate`
    # names with the field path.
    bad = json.loads(json.dumps(pipeline))
    bad["metadata"]["name"] = "lots"
    bad["spec"]["stages"][0]["resources"] = {"limits": {"cpu": "lots"}}
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0 and "limits.cpu" in refused.stderr, refused.stderr
    manifest = tmp_path / "lots.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    res = subprocess.run([STAGECOACH, "validate", str(manifest)], capture_output=True,
                         text=True)
    assert res.returncode == 1
    assert "spec.stages[0].resources.limits.cpu: 'lots' is not a Kubernetes quantity" in (
        res.stdout + res.stderr)
    # What only the API server knows (a namespace quota) fails the attempt with its
    # message, retried per the stage's policy.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
             "spec": {"hard": {"count/jobs.batch": "0"}}}
    kubectl.apply(quota)
    kubectl.wait_for(("resourcequota", "no-jobs"),
                     lambda q: "hard" in (q.get("status") or {}), operator=operator)
    limited = json.loads(json.dumps(pipeline))
    limited["metadata"]["name"] = "quota"
    limited["spec"]["defaults"]["retry"] = {"limit": 1, "backoff": {"initial": "1s"}}
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"), limited)
    failed = kubectl.wait_phase("quota", {"Failed", "Succeeded"}, timeout=60,
                                operator=operator)["status"]
    stage = failed["stages"][0]
    assert (stage["phase"], stage["reason"], stage["attempt"]) == ("Failed", "Error", 2)
    assert "exceeded quota" in stage["message"] and "no-jobs" in stage["message"]
    assert kubectl.items("jobs") == []


def test_a_pipeline_recreated_at_once_never_sees_the_old_run(
        operator: Operator, kubectl: Kubectl) -> None:
    provider, pipeline = load_example("hello")
    slow = json.loads(json.dumps(pipeline))
    slow["spec"]["stages"][0]["run"]["args"] = [
        "import json, os, time\ntime.sleep(4)\n"
        "json.dump({'greeting': 'old'}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))"]
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"), slow)
    kubectl.wait_for(("jobs",), lambda jobs: any(
        j["metadata"]["name"] == "hello-greet-1-1" and j.get("status", {}).get("active")
        for j in jobs["items"]), operator=operator)
    old_uid = kubectl.get("agentpipeline", "hello")["metadata"]["uid"]
    kubectl("delete", "agentpipeline", "hello", "--wait=false")
    kubectl.apply(pipeline)  # the quick one, under the same name
    obj = kubectl.wait_phase("hello", {"Succeeded", "Failed"}, timeout=120, operator=operator)
    assert obj["metadata"]["uid"] != old_uid
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    greet = json.loads(kubectl.get("configmap", "hello-greet-1")["data"]["1.json"])
    assert greet["value"] == {"greeting": "hello world"}
    for job in kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=hello"):
        assert job["metadata"]["ownerReferences"][0]["uid"] in (obj["metadata"]["uid"],
                                                                old_uid)
    types = [e["type"] for e in trace_events(kubectl, "hello")]
    assert types.count("PipelineStarted") == 1 and types.count("PipelineSucceeded") == 1


def trace_events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    env = dict(os.environ, KUBECONFIG=str(kubectl.cluster.kubeconfig))
    out = subprocess.run([STAGECOACH, "trace", name, "-n", kubectl.ns, "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


class _EchoKey(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server that answers with the API key it was sent: a model
    answer is untrusted, and this one tries to leak the secret."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = f"the key I was given: {self.headers.get('Authorization')}"
        body = json.dumps({"id": "x", "object": "chat.completion", "model": "echo",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": answer}}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoKey)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def test_an_api_key_never_leaves_its_secret(operator: Operator, kubectl: Kubectl,
                                            echo_server: str) -> None:
    key = f"sk-test-{uuid.uuid4().hex}"
    kubectl("create", "secret", "generic", "llm-key", f"--from-literal=apiKey={key}")
    provider = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
                "metadata": {"name": "llm"},
                "spec": {"type": "openai", "baseURL": echo_server,
                         "apiKeySecretRef": {"name": "llm-key", "key": "apiKey"}}}
    pipeline = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
                "metadata": {"name": "leak"},
                "spec": {"defaults": {"provider": "llm", "model": "echo"},
                         "stages": [{"name": "ask", "agent": {"prompt": "hi"}},
                                    {"name": "again", "dependsOn": ["ask"],
                                     "agent": {"prompt": "{{ stages.ask.output }}"}}],
                         "output": "{{ stages.again.output }}"}}
    kubectl.apply(provider, pipeline)
    obj = kubectl.wait_phase("leak", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    output = json.loads(kubectl.get("configmap", "leak-ask-1")["data"]["1.json"])["value"]
    assert output == "the key I was given: Bearer ***"  # the echo was redacted
    places = {
        "status": json.dumps(obj),
        "trace": json.dumps(trace_events(kubectl, "leak")),
        "events": json.dumps(kubectl.items("events")),
        "jobs": json.dumps(kubectl.items("jobs")),
        "configmaps": json.dumps(kubectl.items("configmaps")),
        "operator log": operator.logs(),
    }
    for where, text in places.items():
        assert key not in text, f"the API key leaked into the {where}"
    for job in kubectl.items("jobs"):
        [runner] = job["spec"]["template"]["spec"]["containers"]
        [env] = [e for e in runner["env"] if e["name"] == "STAGECOACH_API_KEY_LLM"]
        assert env == {"name": "STAGECOACH_API_KEY_LLM", "valueFrom": {
            "secretKeyRef": {"name": "llm-key", "key": "apiKey"}}}


def test_namespace_mode_under_exactly_the_charts_rbac(crds: ControlPlane, kube_namespace: str,
                                                      tmp_path: Path) -> None:
    """`watch.mode=namespaces`: the chart's Roles and nothing cluster-wide, the
    Deployment's args; a pipeline in the watched namespace runs, one elsewhere is left
    alone, and the operator never needs a cluster-scope read."""
    cluster = crds
    install_chart_rbac(cluster)  # the release namespace (and the default install's RBAC)
    other = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", other)
    rbac, deployment = render_chart({"watch": {"mode": "namespaces",
                                               "namespaces": [kube_namespace]}},
                                    release="nsmode")
    assert not [d for d in rbac if d["kind"].startswith("Cluster")]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in rbac))
    op = Operator(cluster, kube_namespace, tmp_path, deployment=deployment)
    op.start()
    try:
        assert op.proc is not None
        assert list(op.proc.args)[1:5] == ["operator", f"--namespace={kube_namespace}",  # type: ignore[arg-type]
                                          "--no-manage-stage-rbac", "--no-manage-stage-policy"]
        provider, pipeline = load_example("hello")
        docs = "\n---\n".join(yaml.safe_dump(d) for d in (
            cassette_configmap("hello-cassette", "hello"),
            replay_provider(provider, "hello-cassette"), pipeline))
        for ns in (kube_namespace, other):
            cluster.kubectl("-n", ns, "apply", "-f", "-", input=docs)
        watched = Kubectl(cluster, kube_namespace)
        obj = watched.wait_phase("hello", {"Succeeded", "Failed", "Invalid"}, operator=op)
        assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
        time.sleep(1)
        unwatched = Kubectl(cluster, other).get("agentpipeline", "hello")
        assert not unwatched.get("status"), unwatched.get("status")
        assert Kubectl(cluster, other).items("jobs") == []
    finally:
        op.kill(signal.SIGTERM)
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
    assert bad_log_lines(op.logs()) == []  # (the autouse check would fail the test too)
