"""Operator benchmark on the real control plane (``pytest -m bench tests/e2e -s``).

Measures, and prints (asserts nothing about speed):

* stage-transition latency: an attempt finished (its pod ``Succeeded`` or its Job
  ``Complete``, whichever a watch sees first) → the next Job's ``ADDED`` (p50, p99)
  over a chain of no-op agent stages;
* throughput: N concurrent 5-stage pipelines, wall time and stages per second;
* API requests per stage attempt, as the API server's audit log counts the operator's
  ServiceAccount (per verb and resource), and the operator's own counter (``/metrics``);
* operator CPU seconds and peak RSS (``/proc``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import time
import urllib.request
from typing import Any

import pytest
from stagecoach.store.configmap import RestClient

from tests.cluster.audit import AuditLog
from tests.cluster.controlplane import ControlPlane
from tests.e2e.conftest import (
    RELEASE_NAMESPACE,
    Kubectl,
    Operator,
    figure,
    operator_service_account,
)

pytestmark = [pytest.mark.cluster, pytest.mark.bench]

CASSETTE = """
apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
""" + "".join(f"  - {{stage: s{i}, response: {{content: ok, usage: {{input: 1, output: 1}}}}}}\n"
              for i in range(10))


def chain(name: str, n: int) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    for i in range(n):
        stage: dict[str, Any] = {"name": f"s{i}", "agent": {"prompt": "go"}}
        if i:
            stage["dependsOn"] = [f"s{i - 1}"]
        stages.append(stage)
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name},
            "spec": {"defaults": {"provider": "replay"}, "stages": stages}}


async def watch_jobs(kubeconfig: str, ns: str, expect: int,
                     out: dict[str, dict[str, float]]) -> None:
    """``out["added"]``: when each Job was first seen; ``out["done"]``: when its attempt
    was first seen finished: its pod Succeeded (the operator reacts to that) or the Job
    Complete (the Job controller says so up to a second later), whichever came first."""
    rest = await RestClient.connect(kubeconfig)

    async def watch(path: str, seen: Any) -> None:
        resp = await rest.api.call_api(
            path, "GET", query_params=[("watch", "true")],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True)
        while len(out["done"]) < expect:
            line = await asyncio.wait_for(resp.content.readline(), 300)
            if not line:
                break
            seen(json.loads(line)["object"], time.monotonic())

    def job(obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        out["added"].setdefault(name, now)
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Complete" and c["status"] == "True" for c in conds):
            out["done"].setdefault(name, now)

    def pod(obj: dict[str, Any], now: float) -> None:
        owner = (obj["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
        if owner and (obj.get("status") or {}).get("phase") == "Succeeded":
            out["done"].setdefault(owner, now)

    pods = asyncio.ensure_future(watch(f"/api/v1/namespaces/{ns}/pods", pod))
    try:
        await watch(f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    finally:
        pods.cancel()
        await asyncio.gather(pods, return_exceptions=True)
        await rest.close()


def proc_usage(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    return cpu, int(found.group(1)) if found else 0


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_operator_bench(crds: ControlPlane, kube_namespace: str, kubectl: Kubectl,
                        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STAGECOACH_METRICS_PORT", str(port))
    op = Operator(crds, kube_namespace, tmp_path)
    op.start()
    try:
        kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                       "data": {"cassette.yaml": CASSETTE}},
                      {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
                       "metadata": {"name": "replay"},
                       "spec": {"type": "replay", "cassette": {"configMapRef": {"name": "c"}}}})
        # 1. transition latency over a 10-stage chain
        seen: dict[str, dict[str, float]] = {"added": {}, "done": {}}
        watcher = asyncio.new_event_loop()
        task = watcher.create_task(watch_jobs(str(crds.kubeconfig), kube_namespace, 10, seen))
        watcher.run_until_complete(asyncio.sleep(0.5))
        kubectl.apply(chain("lat", 10))
        watcher.run_until_complete(task)
        watcher.close()
        order = sorted(seen["added"], key=seen["added"].__getitem__)
        pairs = zip(order, order[1:], strict=False)
        lat = [(seen["added"][b] - seen["done"][a]) * 1000 for a, b in pairs]
        kubectl.wait_phase("lat", {"Succeeded", "Failed"}, timeout=120, operator=op)
        # 2. throughput: N concurrent 5-stage pipelines
        n = int(os.environ.get("STAGECOACH_BENCH_PIPELINES", "10"))
        before = scrape(port)
        audit = crds.audit_log
        mark = audit.mark()
        started = time.monotonic()
        kubectl.apply(*[chain(f"t{i}", 5) for i in range(n)])
        for i in range(n):
            kubectl.wait_phase(f"t{i}", {"Succeeded", "Failed"}, timeout=600, operator=op)
        wall = time.monotonic() - started
        after = scrape(port)
        assert op.proc is not None
        cpu, rss = proc_usage(op.proc.pid)
        requests = after["stagecoach_api_requests"] - before["stagecoach_api_requests"]
        time.sleep(1)  # the audit log is written asynchronously (batch backend)
        counts = audit.count(since=mark, user=f"system:serviceaccount:{RELEASE_NAMESPACE}:"
                             f"{operator_service_account()}")
        counts = type(counts)({k: v for k, v in counts.items() if k[0] != "watch"})
        attempts = n * 5
        figure(f"BENCH | operator requests per stage attempt (audit log, {attempts} "
               f"attempts): {sum(counts.values()) / attempts:.2f}\n"
               + AuditLog.table(counts) + "\nper attempt: " + ", ".join(
                   f"{v} {r} {c / attempts:.2f}" for (v, r), c in counts.most_common()))
        lat_sorted = sorted(lat)
        print(f"\nstage transition (attempt done -> next Job ADDED, watch): "
              f"p50 {statistics.median(lat):.0f} ms, "
              f"p99 {lat_sorted[min(len(lat) - 1, int(len(lat) * 0.99))]:.0f} ms "
              f"(n={len(lat)}: {[round(x) for x in lat]})")
        print(f"throughput: {n} pipelines x 5 stages in {wall:.1f} s "
              f"= {n * 5 / wall:.2f} stages/s")
        print(f"API requests per stage: {requests / (n * 5):.1f}")
        print(f"operator: {cpu:.1f} CPU s total, peak RSS {rss / 1024:.0f} MiB")
        p50 = after.get('stagecoach_reconcile_duration_seconds_sum', 0) / max(
            1, after.get('stagecoach_reconcile_duration_seconds_count', 1))
        print(f"mean reconcile pass: {p50 * 1000:.1f} ms")
    finally:
        op.kill()
