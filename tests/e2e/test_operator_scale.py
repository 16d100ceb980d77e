"""Scale on the real control plane: 200 concurrent 5-stage pipelines (1,000 Jobs) each
run every stage exactly once, and a pipeline's reconcile cost grows linearly with its
stage count (10, 100, 1,000 stages, all but one skipped).

Asserts only outcomes (phases, one Job creation per stage attempt, as the API server's
audit log counts them); every speed is printed with :func:`~tests.e2e.conftest.figure`
(requests per stage attempt per verb and resource, stage-transition latency, operator
CPU and peak RSS, ms per reconcile), never asserted. Stage pods start from the node
agent's warm fork (``tests/cluster/warmfork.py``), which keeps this under 15 minutes
on two cores.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.audit import AuditLog
from tests.cluster.controlplane import ControlPlane
from tests.e2e.conftest import (
    RELEASE_NAMESPACE,
    Kubectl,
    Operator,
    figure,
    operator_service_account,
)
from tests.e2e.test_operator_bench import CASSETTE, chain, proc_usage, scrape, watch_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.bench]  # ~8 min: `pytest -m bench tests/e2e`

PIPELINES = 200
STAGES = 5
DONE = {"Succeeded", "Failed", "Cancelled", "Invalid"}


def operator_user() -> str:
    """The audit log's name for the e2e operator (the chart's ServiceAccount)."""
    return f"system:serviceaccount:{RELEASE_NAMESPACE}:{operator_service_account()}"


@pytest.fixture
def metered(crds: ControlPlane, kube_namespace: str, kubectl: Kubectl, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Any:
    """An operator serving /metrics, and the replay provider the chains use."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STAGECOACH_METRICS_PORT", str(port))
    op = Operator(crds, kube_namespace, tmp_path)
    op.start()
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "data": {"cassette.yaml": CASSETTE}},
                  {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
                   "metadata": {"name": "replay"},
                   "spec": {"type": "replay", "cassette": {"configMapRef": {"name": "c"}}}})
    deadline = time.monotonic() + 60
    while True:  # /metrics answers once the operator is up
        try:
            scrape(port)
            break
        except OSError:
            assert time.monotonic() < deadline, "the operator serves no /metrics"
            time.sleep(0.5)
    try:
        yield op, port
    finally:
        op.kill()


def wait_all(kubectl: Kubectl, names: set[str], op: Operator, timeout: float
             ) -> dict[str, dict[str, Any]]:
    """Every pipeline of ``names`` once it reached a final phase."""
    deadline = time.monotonic() + timeout
    while True:
        items = {p["metadata"]["name"]: p for p in kubectl.items("agentpipelines")}
        done = {n: p for n, p in items.items()
                if n in names and (p.get("status") or {}).get("phase") in DONE}
        if len(done) == len(names):
            return done
        assert op.proc is not None and op.proc.poll() is None, "the operator died"
        assert time.monotonic() < deadline, f"{len(names) - len(done)} pipelines unfinished"
        time.sleep(2)


def test_200_pipelines_run_every_stage_exactly_once(metered: Any, crds: ControlPlane,
                                                    kube_namespace: str,
                                                    kubectl: Kubectl) -> None:
    op, port = metered
    audit: AuditLog = crds.audit_log
    seen: dict[str, dict[str, float]] = {"added": {}, "done": {}}
    loop = asyncio.new_event_loop()
    watcher = threading.Thread(target=loop.run_until_complete, daemon=True, args=(
        watch_jobs(str(crds.kubeconfig), kube_namespace, PIPELINES * STAGES, seen),))
    watcher.start()
    time.sleep(1)
    before, mark = scrape(port), audit.mark()
    started = time.monotonic()
    for first in range(0, PIPELINES, 25):  # one POST each (apply would GET first)
        text = "\n---\n".join(yaml.safe_dump(chain(f"p{i}", STAGES))
                               for i in range(first, min(first + 25, PIPELINES)))
        kubectl("create", "-f", "-", input=text)
    done = wait_all(kubectl, {f"p{i}" for i in range(PIPELINES)}, op, timeout=1500)
    wall = time.monotonic() - started
    after = scrape(port)
    assert op.proc is not None
    cpu, rss = proc_usage(op.proc.pid)
    watcher.join(30)
    time.sleep(1.5)  # the audit backend writes in batches
    for name, p in done.items():
        assert p["status"]["phase"] == "Succeeded", (name, p["status"])
        stages = p["status"].get("stages") or []
        assert [s.get("phase") for s in stages] == ["Succeeded"] * STAGES, (name, stages)
    jobs = kubectl.items("jobs")
    assert len(jobs) == PIPELINES * STAGES
    assert {j["metadata"]["labels"]["stagecoach.dev/attempt"] for j in jobs} == {"1"}
    counts = Counter({k: v for k, v in audit.count(since=mark, user=operator_user()).items()
                      if k[0] != "watch"})
    creates = [r for r in audit.requests(since=mark, user=operator_user())
               if (r.verb, r.resource) == ("create", "batch/jobs")]
    assert len(creates) == PIPELINES * STAGES, Counter(r.code for r in creates)
    attempts = PIPELINES * STAGES
    order: dict[str, list[str]] = {}
    for name in sorted(seen["added"], key=seen["added"].__getitem__):
        order.setdefault(name.rsplit("-", 3)[0], []).append(name)
    lat = sorted((seen["added"][b] - seen["done"][a]) * 1000 for names in order.values()
                 for a, b in zip(names, names[1:], strict=False)
                 if a in seen["done"] and b in seen["added"])
    passes = after["stagecoach_reconcile_duration_seconds_count"] - before.get(
        "stagecoach_reconcile_duration_seconds_count", 0)
    spent = after["stagecoach_reconcile_duration_seconds_sum"] - before.get(
        "stagecoach_reconcile_duration_seconds_sum", 0)
    figure(f"SCALE | {PIPELINES} pipelines x {STAGES} stages: {wall:.0f} s wall, "
           f"{attempts / wall:.1f} stages/s; {passes:.0f} reconcile passes, mean "
           f"{spent / max(passes, 1) * 1000:.1f} ms")
    if lat:
        figure(f"SCALE | stage transition (attempt done -> next Job ADDED) at "
               f"{PIPELINES} pipelines: p50 {statistics.median(lat):.0f} ms, p99 "
               f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.0f} ms (n={len(lat)})")
    figure(f"SCALE | operator: {cpu / attempts * 1000:.1f} ms CPU per stage attempt "
           f"({cpu:.1f} s total since start), peak RSS {rss / 1024:.0f} MiB")
    figure(f"SCALE | operator requests per stage attempt (audit log): "
           f"{sum(counts.values()) / attempts:.2f}\n" + AuditLog.table(counts)
           + "\nper attempt: " + ", ".join(f"{v} {r} {c / attempts:.2f}"
                                           for (v, r), c in counts.most_common()))


def skipping(name: str, n: int) -> dict[str, Any]:
    """``n`` stages: one agent stage, then ``n - 1`` that ``when: "false"`` skips."""
    stages: list[dict[str, Any]] = [{"name": "s0", "agent": {"prompt": "go"}}]
    stages += [{"name": f"k{i}", "dependsOn": ["s0"], "when": "false",
                "agent": {"prompt": "never"}} for i in range(1, n)]
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name},
            "spec": {"defaults": {"provider": "replay"}, "stages": stages}}


def test_reconcile_cost_is_linear_in_the_stage_count(metered: Any, kubectl: Kubectl) -> None:
    op, port = metered
    rows = []
    for n in (10, 100, 1000):
        quiet = scrape(port).get("stagecoach_reconcile_duration_seconds_count", 0)
        for _ in range(60):  # late events of earlier runs (Jobs completing, GC) first
            time.sleep(1)
            now = scrape(port).get("stagecoach_reconcile_duration_seconds_count", 0)
            if now == quiet:
                break
            quiet = now
        before = scrape(port)
        started = time.monotonic()
        kubectl.apply(skipping(f"k{n}", n))
        obj = kubectl.wait_phase(f"k{n}", DONE, timeout=300, operator=op)
        wall = time.monotonic() - started
        after = scrape(port)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        phases = Counter(s.get("phase") for s in obj["status"]["stages"])
        assert phases == {"Succeeded": 1, "Skipped": n - 1}, phases
        passes = after["stagecoach_reconcile_duration_seconds_count"] - before.get(
            "stagecoach_reconcile_duration_seconds_count", 0)
        spent = after["stagecoach_reconcile_duration_seconds_sum"] - before.get(
            "stagecoach_reconcile_duration_seconds_sum", 0)
        rows.append((n, passes, spent / max(passes, 1) * 1000, wall))
    assert len(kubectl.items("jobs")) == 3  # one per pipeline: the skipped ran nothing
    figure("SCALE | reconcile cost by stage count (one real stage, the rest skipped): "
           + "; ".join(f"{n} stages: {ms:.1f} ms per reconcile x {p:.0f} passes = "
                       f"{ms * p / n:.2f} ms of reconciling per stage, finished in {w:.1f} s"
                       for n, p, ms, w in rows))
