"""A real peer on the test cluster: Argo Workflows next to Stagecoach, same workload.

Why: "fast" means nothing without a reference. This bench starts one test control plane
and node agent (``tests/cluster``), runs Argo Workflows' own ``workflow-controller``
(built from the Go module proxy by ``hack/argo/build.sh``, a host process with its own
ServiceAccount so the audit log can tell its requests apart) on it, and measures:

* one 5-step DAG (a → b, c → d → e; every step a container running ``sleep 0.2``):
  wall time, start latency (submitted → first pod), per-edge transition latency (the
  step's main container exited → the next step's pod exists, both as a watch on the
  API server saw them; the API's own timestamps have 1 s resolution), finish latency,
  API requests per step of the controller (and, apart, of the executor pods), the
  controller's CPU seconds and peak RSS (``/proc``);
* 50 such workflows submitted at once: throughput, latency p50/p99, the same counts.

Every peer is a function ``(ControlPlane) -> figures`` (a dict, see :data:`ROWS`), kept
in :data:`PEERS`; the table prints one column per peer. A peer that cannot run returns
``{"blocker": "<command>: <error>"}`` and the bench prints that instead of numbers.
Stagecoach's column is :mod:`cluster_stagecoach`'s (the operator on the same cluster).

Argo is a loopback-only benchmark peer here: never shipped, packaged or exposed.

Run (2 cores, shared machine: hold the heavy lock):
    flock /tmp/stagecoach-heavy.lock .venv/bin/python bench/cluster_peer.py [--load N]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.cluster.audit import AuditLog  # noqa: E402
from tests.cluster.controlplane import ControlPlane, ensure_binaries, find_kubectl  # noqa: E402
from tests.cluster.kubeapi import KubeAPI  # noqa: E402

__all__ = [
    "PEERS",
    "ROWS",
    "ArgoPeer",
    "PeerBlocked",
    "argo_figures",
    "batch_figures",
    "ensure_argo",
    "format_table",
    "main",
    "measure_workload",
    "run_peers",
    "start_cluster",
]

ARGO_BUILD = REPO / "hack" / "argo" / "build.sh"
NAMESPACE = "argo-bench"
CONTROLLER_SA = "argo-controller"
EXECUTOR_SA = "argo-executor"
# task -> its dependencies: a diamond plus a tail.
DAG: dict[str, list[str]] = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}
STEP_COMMAND = ["sleep", "0.2"]
CLUSTER_PARENT = "/var/tmp"
HEALTH_PORT = 6060  # hard-coded in cmd/workflow-controller/main.go
LEASES = "coordination.k8s.io/leases"
"""Leader election renews its Lease on a clock, not per step: counted apart."""

JSON = dict[str, Any]
Figures = dict[str, Any]

ROWS: list[tuple[str, str]] = [
    ("dag.wall_s", "5-step DAG: wall time (s)"),
    ("dag.start_s", "  submitted -> first pod (s)"),
    ("dag.transition_mean_s", "  transition latency, mean over 4 edges (s)"),
    ("dag.transition.a->b", "    a -> b (s)"),
    ("dag.transition.a->c", "    a -> c (s)"),
    ("dag.transition.b,c->d", "    b,c -> d (s)"),
    ("dag.transition.d->e", "    d -> e (s)"),
    ("dag.finish_s", "  last step exited -> workflow done (s)"),
    ("dag.requests_per_step", "  controller API requests / step (no Lease)"),
    ("dag.lease_requests", "  controller Lease requests (leader election)"),
    ("dag.pod_requests_per_step", "  executor-pod API requests / step"),
    ("dag.cpu_s", "  controller CPU (s)"),
    ("dag.rss_peak_mib", "  controller peak RSS (MiB)"),
    ("load.workflows", "load: workflows at once"),
    ("load.failed", "  not succeeded"),
    ("load.wall_s", "  wall time (s)"),
    ("load.throughput_wf_s", "  throughput (workflows/s)"),
    ("load.steps_s", "  throughput (steps/s)"),
    ("load.latency_p50_s", "  workflow latency p50 (s)"),
    ("load.latency_p99_s", "  workflow latency p99 (s)"),
    ("load.transition_p50_s", "  transition latency p50 (s)"),
    ("load.transition_p99_s", "  transition latency p99 (s)"),
    ("load.requests_per_step", "  controller API requests / step (no Lease)"),
    ("load.lease_requests", "  controller Lease requests (leader election)"),
    ("load.pod_requests_per_step", "  executor-pod API requests / step"),
    ("load.cpu_s", "  controller CPU (s)"),
    ("load.rss_peak_mib", "  controller peak RSS (MiB)"),
]
"""Figure keys (``section.name``) and their labels, in print order."""


class PeerBlocked(RuntimeError):
    """A peer cannot run on this control plane: the message names the command and error."""


def _log(msg: str) -> None:
    print(f"[cluster-peer] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], *, input: str | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PeerBlocked(
            f"`{' '.join(cmd)}` exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc.stdout


def ensure_argo(*, build: bool = True) -> Path:
    """The directory with ``workflow-controller``, ``argoexec`` and ``manifests/``."""
    # A shared 2-core machine: one compile job at a time, lowest priority.
    env = dict(os.environ)
    env.setdefault("STAGECOACH_BUILD_JOBS", "1")
    out = subprocess.run(
        ["nice", "-n", "19", "bash", str(ARGO_BUILD)]
        if build
        else ["bash", str(ARGO_BUILD), "--bin-dir"],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if out.returncode != 0:
        raise PeerBlocked(
            f"`bash {ARGO_BUILD.relative_to(REPO)}` exited {out.returncode}: "
            f"{out.stderr.strip()[-2000:]}"
        )
    return Path(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- process
class ProcSampler:
    """CPU seconds and peak RSS of one process, from /proc (RSS sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="proc-sampler")
        self._thread.start()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def reset_peak(self) -> None:
        self.peak_kib = self.rss_kib()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_kib = max(self.peak_kib, self.rss_kib())
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- timeline
def _argo_task(meta: JSON) -> str | None:
    node = meta.get("annotations", {}).get("workflows.argoproj.io/node-name", "")
    return node.rsplit(".", 1)[-1] if node else None


class Timeline:
    """When pods and runs (workflows, pipelines) appeared and finished, as seen by
    watches (monotonic s). The defaults read Argo's objects; another peer passes the
    path of its run objects, the pod label naming the run and how a pod names its task."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        *,
        runs: str = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows",
        run_label: str = "workflows.argoproj.io/workflow",
        task_of: Callable[[JSON], str | None] = _argo_task,
        done_phases: frozenset[str] = frozenset({"Succeeded", "Failed", "Error"}),
    ) -> None:
        self.api = api
        self.ns = namespace
        self.run_label = run_label
        self.task_of = task_of
        self.done_phases = done_phases
        self.pods: dict[str, JSON] = {}
        self.workflows: dict[str, JSON] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._stop = threading.Event()
        for path, handle in (
            (f"/api/v1/namespaces/{namespace}/pods", self._pod),
            (runs.format(ns=namespace), self._workflow),
        ):
            threading.Thread(
                target=self._watch,
                args=(path, handle),
                daemon=True,
                name=f"watch-{path.rsplit('/', 1)[1]}",
            ).start()

    def _watch(self, path: str, handle: Callable[[JSON, float], None]) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.get(path)
                now = time.monotonic()
                for item in listing.get("items", []):
                    handle(item, now)
                rv = listing["metadata"]["resourceVersion"]
                for ev in self.api.watch(path, resourceVersion=rv, timeout_seconds=60):
                    if self._stop.is_set():
                        return
                    if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        handle(ev["object"], time.monotonic())
            except Exception as err:  # a dropped watch is re-listed
                if not self._stop.is_set():
                    _log(f"watch {path}: {err}; re-listing")
                    time.sleep(0.2)

    def _pod(self, pod: JSON, now: float) -> None:
        meta = pod["metadata"]
        with self.changed:
            rec = self.pods.setdefault(meta["name"], {"seen": now})
            rec["workflow"] = meta.get("labels", {}).get(self.run_label)
            rec["task"] = self.task_of(meta)
            status = pod.get("status", {})
            for cs in status.get("containerStatuses", []):
                if cs["name"] == "main" and "terminated" in cs.get("state", {}):
                    rec.setdefault("main_done", now)
            if status.get("phase") in ("Succeeded", "Failed"):
                rec.setdefault("done", now)
            self.changed.notify_all()

    def _workflow(self, wf: JSON, now: float) -> None:
        with self.changed:
            rec = self.workflows.setdefault(wf["metadata"]["name"], {"seen": now})
            phase = wf.get("status", {}).get("phase")
            rec["phase"] = phase
            if phase in self.done_phases:
                rec.setdefault("done", now)
            self.changed.notify_all()

    def wait_done(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all("done" in self.workflows.get(n, {}) for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
        return True

    def stop(self) -> None:
        self._stop.set()


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no side effects)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def workflow_figures(submitted: float, wf: JSON, pods: list[JSON]) -> JSON:
    """Start, per-edge transition and finish latency of one run (no side effects).

    ``pods`` are the timeline records of the run's pods (``task``, ``seen``,
    ``main_done``); an edge's latency is "next pod seen − latest dependency exited"."""
    by_task = {p["task"]: p for p in pods if p.get("task") in DAG}
    out: JSON = {"wall_s": wf["done"] - submitted, "transition": {}}
    if "a" in by_task:
        out["start_s"] = by_task["a"]["seen"] - submitted
    for task, deps in DAG.items():
        if (
            not deps
            or task not in by_task
            or any("main_done" not in by_task.get(d, {}) for d in deps)
        ):
            continue
        ready = max(by_task[d]["main_done"] for d in deps)
        out["transition"][f"{','.join(deps)}->{task}"] = by_task[task]["seen"] - ready
    last = [by_task[t] for t in DAG if t in by_task and not any(t in d for d in DAG.values())]
    if last and "main_done" in last[0]:
        out["finish_s"] = wf["done"] - last[0]["main_done"]
    return out


# --------------------------------------------------------------------------- Argo
def dag_workflow(name: str, command: list[str] = STEP_COMMAND) -> JSON:
    """The benchmark DAG as an Argo Workflow (image is ignored by the node agent)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "labels": {"bench": "cluster-peer"}},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": EXECUTOR_SA,
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {
                                "name": t,
                                "template": "step",
                                **({"depends": " && ".join(deps)} if deps else {}),
                            }
                            for t, deps in DAG.items()
                        ]
                    },
                },
                {
                    "name": "step",
                    "container": {"image": "stagecoach.local/ignored:step", "command": command},
                },
            ],
        },
    }


def _token_kubeconfig(
    path: Path, admin_kubeconfig: Path, token: str, user: str, namespace: str
) -> Path:
    import yaml

    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": cluster["name"], "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _rbac(namespace: str) -> str:
    """The executor's Role (Argo docs: workflow-rbac, emissary) and both bindings."""
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {CONTROLLER_SA}, namespace: {namespace}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {EXECUTOR_SA}, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: argo-binding, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: argo-role}}
subjects: [{{kind: ServiceAccount, name: {CONTROLLER_SA}, namespace: {namespace}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: executor, namespace: {namespace}}}
rules:
  - apiGroups: [argoproj.io]
    resources: [workflowtaskresults]
    verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: executor, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: executor}}
subjects: [{{kind: ServiceAccount, name: {EXECUTOR_SA}, namespace: {namespace}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: workflow-controller-configmap, namespace: {namespace}}}
data:
  metricsConfig: |
    enabled: false
  telemetryConfig: |
    enabled: false
"""


class ArgoPeer:
    """Argo's CRDs, RBAC and workflow-controller (host process) on a test cluster."""

    def __init__(
        self,
        cluster: ControlPlane,
        bin_dir: Path,
        namespace: str = NAMESPACE,
        *,
        requeue: str | None = None,
    ) -> None:
        self.requeue = requeue
        self.cluster = cluster
        self.bin_dir = bin_dir
        self.ns = namespace
        self.proc: subprocess.Popen[bytes] | None = None
        assert cluster.workdir is not None
        self.log_path = cluster.workdir / "logs" / f"workflow-controller-{namespace}.log"
        self.controller_user = f"system:serviceaccount:{namespace}:{CONTROLLER_SA}"
        self.executor_user = f"system:serviceaccount:{namespace}:{EXECUTOR_SA}"

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return _run(
            [find_kubectl(self.cluster.bin_dir), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=input,
        )

    def start(self, timeout: float = 90) -> ArgoPeer:
        crds = self.bin_dir / "manifests" / "crds" / "minimal"
        self.kubectl("apply", "--server-side", "-k", str(crds))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workflows.argoproj.io",
            "crd/workflowtaskresults.argoproj.io",
        )
        self.kubectl("create", "namespace", self.ns)
        self.cluster.wait_for_service_account(self.ns)
        role = self.bin_dir / "manifests" / "namespace-install" / "workflow-controller-role.yaml"
        self.kubectl("-n", self.ns, "apply", "-f", str(role))
        self.kubectl("apply", "-f", "-", input=_rbac(self.ns))
        token = self.kubectl(
            "-n", self.ns, "create", "token", CONTROLLER_SA, "--duration=4h"
        ).strip()
        assert self.cluster.workdir is not None
        kubeconfig = _token_kubeconfig(
            self.cluster.workdir / "argo-controller.kubeconfig",
            self.cluster.kubeconfig,
            token,
            CONTROLLER_SA,
            self.ns,
        )
        argv = [
            str(self.bin_dir / "workflow-controller"),
            f"--kubeconfig={kubeconfig}",
            "--namespaced",
            f"--managed-namespace={self.ns}",
            "--executor-image=stagecoach.local/ignored:argoexec",
            "--loglevel=info",
        ]
        env = dict(os.environ, LEADER_ELECTION_DISABLE="true")
        if self.requeue:
            env["DEFAULT_REQUEUE_TIME"] = self.requeue
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PeerBlocked(
                    f"`{' '.join(argv)}` exited {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{HEALTH_PORT}/healthz", timeout=2
                ) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PeerBlocked(
                    f"workflow-controller not healthy after {timeout}s: {self.log_tail()}"
                )
            time.sleep(0.3)
        _log(f"workflow-controller up (pid {self.proc.pid}, log {self.log_path})")
        return self

    def submit(self, api: KubeAPI, names: list[str]) -> dict[str, float]:
        return _submit(api, self.ns, names)

    def failure(self, api: KubeAPI, name: str) -> str:
        return _failure(self, api, name)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _submit(api: KubeAPI, ns: str, names: list[str]) -> dict[str, float]:
    submitted: dict[str, float] = {}
    for name in names:
        submitted[name] = time.monotonic()
        api.create(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows", dag_workflow(name))
    return submitted


def _measure(
    peer: Any,
    api: KubeAPI,
    timeline: Timeline,
    sampler: ProcSampler,
    audit: AuditLog,
    names: list[str],
    timeout: float,
) -> JSON:
    """Submit ``names`` at once, wait for them, and return the figures of the batch.

    ``peer`` has ``submit(api, names) -> {name: monotonic submit time}``,
    ``failure(api, name) -> why it did not succeed``, ``log_tail()``, and the audit-log
    users ``controller_user`` and ``executor_user`` (its controller, its pods)."""
    mark = audit.mark()
    cpu0 = sampler.cpu_s()
    sampler.reset_peak()
    t0 = time.monotonic()
    submitted = peer.submit(api, names)
    finished = timeline.wait_done(names, timeout)
    t1 = time.monotonic()
    time.sleep(2.0)  # let trailing requests (pod labelling, status writes) land
    cpu = sampler.cpu_s() - cpu0
    with timeline.lock:
        wfs = {n: dict(timeline.workflows.get(n, {})) for n in names}
        pods = [dict(p) for p in timeline.pods.values() if p.get("workflow") in names]
    if not finished:
        pending = [n for n in names if "done" not in wfs[n]]
        raise PeerBlocked(
            f"{len(pending)} of {len(names)} workflows not done after "
            f"{timeout}s (e.g. {pending[0]}: phase {wfs[pending[0]].get('phase')});"
            f" controller log:\n{peer.log_tail()}"
        )
    failed = [n for n in names if wfs[n].get("phase") != "Succeeded"]
    if failed and len(names) == 1:
        raise PeerBlocked(peer.failure(api, failed[0]))
    steps = len(names) * len(DAG)
    ctl = audit.count(since=mark, user=peer.controller_user)
    refused = Counter(
        (r.verb, f"{r.resource} -> {r.code}")
        for r in audit.requests(since=mark, user=peer.controller_user)
        if r.code is not None and r.code >= 400
    )
    pod_reqs = audit.count(since=mark, user=peer.executor_user)
    per_wf = [
        workflow_figures(submitted[n], wfs[n], [p for p in pods if p.get("workflow") == n])
        for n in names
    ]
    transitions = [v for f in per_wf for v in f["transition"].values()]
    return {
        "names": names,
        "per_workflow": per_wf,
        "transitions": transitions,
        "wall_s": t1 - t0,
        "steps": steps,
        "failed": len(failed),
        "first_failure": peer.failure(api, failed[0]) if failed else None,
        "requests": ctl,
        "refused": refused,
        "pod_requests": pod_reqs,
        "requests_per_step": sum(n for (_, res), n in ctl.items() if res != LEASES) / steps,
        "lease_requests": sum(n for (_, res), n in ctl.items() if res == LEASES),
        "pod_requests_per_step": sum(pod_reqs.values()) / steps,
        "cpu_s": cpu,
        "rss_peak_mib": sampler.peak_kib / 1024,
    }


def _failure(peer: ArgoPeer, api: KubeAPI, name: str) -> str:
    """Why workflow ``name`` did not succeed: its message, failed nodes, container logs."""
    wf = api.get(f"/apis/argoproj.io/v1alpha1/namespaces/{peer.ns}/workflows/{name}")
    status = wf.get("status", {})
    lines = [f"workflow {name}: phase {status.get('phase')}: {status.get('message', '')}"]
    for node in status.get("nodes", {}).values():
        if node.get("type") == "Pod" and node.get("phase") not in ("Succeeded", None):
            lines.append(
                f"  step {node.get('displayName')}: {node.get('phase')}: {node.get('message', '')}"
            )
            pod = f"{name}-step-{node['id'].rsplit('-', 1)[-1]}"
            for container in ("init", "wait", "main"):
                try:
                    log = peer.kubectl("-n", peer.ns, "logs", pod, "-c", container, "--tail=3")
                except PeerBlocked as err:
                    log = str(err)
                lines.append(f"    {container} log: {log.strip()[-600:]}")
            break
    return "\n".join(lines)


def argo_figures(
    cluster: ControlPlane,
    *,
    load: int = 50,
    bin_dir: Path | None = None,
    requeue: str | None = None,
    namespace: str = NAMESPACE,
    verbose: bool = True,
) -> Figures:
    """Run the DAG once and ``load`` DAGs at once under Argo; the figures of :data:`ROWS`.

    ``requeue`` sets the controller's ``DEFAULT_REQUEUE_TIME`` (Argo's default: 10s, the
    fixed delay of every rate-limited requeue of a workflow, so also of the reaction to
    a finished pod). The cluster's node agent must have the argoexec directory on its
    PATH (see :func:`start_cluster`). Returns ``{"blocker": ...}`` if Argo cannot run."""
    try:
        bin_dir = bin_dir or ensure_argo()
        peer = ArgoPeer(cluster, bin_dir, namespace, requeue=requeue).start()
    except PeerBlocked as err:
        return {"blocker": str(err)}
    api = cluster.api()
    timeline = Timeline(api, peer.ns)
    assert peer.proc is not None
    sampler = ProcSampler(peer.proc.pid)
    return measure_workload(peer, cluster, timeline, sampler, load,
                            bin_dir.name + (f" requeue={requeue}" if requeue else ""),
                            verbose=verbose)


def measure_workload(peer: Any, cluster: ControlPlane, timeline: Timeline,
                     sampler: ProcSampler, load: int, version: str, *,
                     verbose: bool = True) -> Figures:
    """A warm-up run (informers, first-use paths; not counted), the DAG once, then
    ``load`` DAGs at once; stops ``peer``, its timeline and sampler; the figures of
    :data:`ROWS` (``{"blocker": ...}`` when the peer could not run them)."""
    api = cluster.api()
    try:
        _measure(peer, api, timeline, sampler, cluster.audit_log, ["warmup"], 180)
        dag = _measure(peer, api, timeline, sampler, cluster.audit_log, ["dag"], 180)
        batch = _measure(peer, api, timeline, sampler, cluster.audit_log,
                         [f"load-{i:03d}" for i in range(load)], 900)
    except PeerBlocked as err:
        return {"blocker": str(err)}
    finally:
        sampler.stop()
        timeline.stop()
        peer.stop()
    figures = batch_figures(dag, batch, load, version)
    if verbose:
        _log(
            json.dumps(
                {k: v for k, v in figures.items() if not k.startswith("detail.")},
                indent=1,
                default=str,
            )
        )
    return figures


def batch_figures(dag: JSON, batch: JSON, load: int, version: str) -> Figures:
    """The figures of :data:`ROWS` from a measured single run and a measured batch."""
    one = dag["per_workflow"][0]
    figures: Figures = {
        "version": version,
        "dag.wall_s": one["wall_s"],
        "dag.start_s": one.get("start_s"),
        "dag.transition_mean_s": (
            statistics.fmean(one["transition"].values()) if one["transition"] else None
        ),
        **{f"dag.transition.{k}": v for k, v in one["transition"].items()},
        "dag.finish_s": one.get("finish_s"),
        "dag.requests_per_step": dag["requests_per_step"],
        "dag.lease_requests": dag["lease_requests"],
        "dag.pod_requests_per_step": dag["pod_requests_per_step"],
        "dag.cpu_s": dag["cpu_s"],
        "dag.rss_peak_mib": dag["rss_peak_mib"],
        "load.workflows": load,
        "load.failed": batch["failed"],
        "detail.load_first_failure": batch["first_failure"],
        "load.wall_s": batch["wall_s"],
        "load.throughput_wf_s": load / batch["wall_s"],
        "load.steps_s": batch["steps"] / batch["wall_s"],
        "load.latency_p50_s": _percentile([f["wall_s"] for f in batch["per_workflow"]], 50),
        "load.latency_p99_s": _percentile([f["wall_s"] for f in batch["per_workflow"]], 99),
        "load.transition_p50_s": _percentile(batch["transitions"], 50),
        "load.transition_p99_s": _percentile(batch["transitions"], 99),
        "load.requests_per_step": batch["requests_per_step"],
        "load.lease_requests": batch["lease_requests"],
        "load.pod_requests_per_step": batch["pod_requests_per_step"],
        "load.cpu_s": batch["cpu_s"],
        "load.rss_peak_mib": batch["rss_peak_mib"],
        "detail.dag_requests": AuditLog.table(dag["requests"]),
        "detail.dag_pod_requests": AuditLog.table(dag["pod_requests"]),
        "detail.load_requests": AuditLog.table(batch["requests"]),
        "detail.load_refused_requests": (
            AuditLog.table(batch["refused"]) if batch["refused"] else None
        ),
    }
    return figures


PEERS: dict[str, Callable[..., Figures]] = {"Argo": argo_figures}
"""Column name -> ``f(cluster, *, load=N) -> figures``. :func:`main` puts Stagecoach's
(:mod:`cluster_stagecoach`) first."""


# --------------------------------------------------------------------------- output
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else (f"{value:.3f}" if value < 100 else f"{value:.0f}")
    return str(value)


def format_table(columns: dict[str, Figures]) -> str:
    """The side-by-side table of :data:`ROWS` (no side effects); blockers are listed below."""
    width = max(len(label) for _, label in ROWS)
    heads = [f"{name} {cols.get('version', '')}".strip() for name, cols in columns.items()]
    colw = [max(12, len(h)) for h in heads]
    lines = [f"{'':<{width}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, colw, strict=True))]
    for key, label in ROWS:
        cells = [
            "BLOCKED" if "blocker" in cols else _cell(cols.get(key)) for cols in columns.values()
        ]
        lines.append(
            f"{label:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, colw, strict=True))
        )
    for name, cols in columns.items():
        if "blocker" in cols:
            lines.append(f"\n{name} BLOCKED: {cols['blocker']}")
        for key in (
            "detail.load_first_failure",
            "detail.dag_requests",
            "detail.dag_pod_requests",
            "detail.load_requests",
            "detail.load_refused_requests",
        ):
            if cols.get(key):
                lines.append(f"\n{name} {key[7:].replace('_', ' ')} (audit log):\n{cols[key]}")
    return "\n".join(lines)


def start_cluster(argo_bin: Path | None) -> ControlPlane:
    """A fresh control plane whose node agent resolves ``argoexec`` from ``argo_bin``.

    Argo's pods run ``argoexec init|wait`` by bare name; the node agent gives containers
    its own PATH, which it inherits from this process. The cluster's directory is put
    under /var/tmp, not /tmp: Argo's wait container mounts an emptyDir at ``/tmp``,
    which would hide the node agent's pod directories (the sources of the container's
    later bind mounts) if they lived below /tmp."""
    saved = os.environ.get("PATH", "")
    if argo_bin is not None:
        os.environ["PATH"] = f"{argo_bin}{os.pathsep}{saved}"
    workdir = Path(tempfile.mkdtemp(prefix="stagecoach-peer-", dir=CLUSTER_PARENT))
    try:
        return ControlPlane(bin_dir=ensure_binaries(), workdir=workdir).start()
    finally:
        os.environ["PATH"] = saved


def run_peers(
    argo_bin: Path | None,
    build_blocker: str | None = None,
    *,
    load: int = 50,
    peers: dict[str, Callable[..., Figures]] | None = None,
) -> dict[str, Figures]:
    """Every peer (default :data:`PEERS`) on one fresh control plane, one after the other.

    ``argo_bin`` goes on the node agent's PATH; a ``build_blocker`` (Argo could not be
    built) becomes the column of every peer whose name starts with "Argo"."""
    columns: dict[str, Figures] = {}
    cluster = start_cluster(argo_bin)
    try:
        for name, peer in (peers or PEERS).items():
            if name.startswith("Argo") and (build_blocker or argo_bin is None):
                columns[name] = {"blocker": build_blocker or "argoexec is not built"}
            else:
                _log(f"running peer {name}")
                columns[name] = peer(cluster, load=load)
    finally:
        cluster.stop()
        if cluster.workdir is not None:
            if os.environ.get("STAGECOACH_KEEP_CLUSTER_DIR"):
                _log(f"keeping {cluster.workdir}")
            else:
                shutil.rmtree(cluster.workdir, ignore_errors=True)
    return columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=50, help="workflows at once (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--argo-requeue",
        action="append",
        default=[],
        metavar="DURATION",
        help="add an Argo column with DEFAULT_REQUEUE_TIME=DURATION (e.g. 1s); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        argo_bin: Path | None = ensure_argo()
        build_blocker = None
    except PeerBlocked as err:
        argo_bin, build_blocker = None, str(err)
    columns: dict[str, Figures] = {}
    from cluster_stagecoach import stagecoach_figures

    peers = {"Stagecoach": stagecoach_figures, **PEERS}
    for value in args.argo_requeue:
        peers[f"Argo rq={value}"] = functools.partial(
            argo_figures, requeue=value, namespace=f"argo-bench-rq{len(peers)}"
        )
    columns = run_peers(argo_bin, build_blocker, load=args.load, peers=peers)
    print(format_table(columns))
    print(
        "\nmachine: shared, 2 cores; one control plane + node agent for all columns; "
        "transition = next pod seen - latest dependency's main container exited "
        "(watch-observed, monotonic clock)"
    )
    if args.json:
        args.json.write_text(json.dumps(columns, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
