"""Stagecoach's column of the cluster bench (:mod:`cluster_peer`): the same workload as
the Argo column, on the same control plane and node agent, measured the same way.

The operator is started exactly as the e2e suite starts it (:class:`tests.e2e.conftest.
Operator`): the chart's RBAC, a TokenRequest token for the chart's operator
ServiceAccount (so the audit log can tell its requests apart), the Deployment's args
(``operator --all-namespaces``) and plain env. The 5-step DAG is an AgentPipeline of
run stages ``a → b, c → d → e``, each a ``main`` container running ``sleep 0.2``, the
Argo DAG's command; the same :class:`cluster_peer.Timeline` watches pods and pipelines,
so "transition" means the same thing in both columns: the next step's pod seen minus
the latest dependency's ``main`` container exited.

What differs, said plainly: a Stagecoach run-stage pod has two Stagecoach containers
around ``main`` (``prepare``, an init container, and ``collect``, a sidecar); Argo's has
``init`` and ``wait``. The test node agent forks Stagecoach's own entrypoints from a
warm interpreter (``tests/cluster/warmfork.py``; ``STAGECOACH_WARM_FORK=0`` turns it
off) where Argo's ``argoexec`` is a Go binary started by exec: both are cheap to start,
neither is what a kubelet with an image cache would cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cluster_peer import (
    DAG,
    STEP_COMMAND,
    Figures,
    ProcSampler,
    Timeline,
    _log,
    measure_workload,
)

from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubeapi import KubeAPI

__all__ = ["StagecoachPeer", "pipeline", "stagecoach_figures"]

NAMESPACE = "sc-bench"
PIPELINES = "/apis/stagecoach.dev/v1alpha1/namespaces/{ns}/agentpipelines"
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled", "Invalid"})
JSON = dict[str, Any]


def pipeline(name: str, command: list[str] = STEP_COMMAND) -> JSON:
    """The benchmark DAG as an AgentPipeline of run stages (the image is ignored by the
    node agent, which runs ``command`` on the host)."""
    stages = [{"name": task, **({"dependsOn": deps} if deps else {}),
               "run": {"image": "busybox:1.36", "command": list(command)}}
              for task, deps in DAG.items()]
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name}, "spec": {"stages": stages}}


def _stage_of(meta: JSON) -> str | None:
    return (meta.get("labels") or {}).get("stagecoach.dev/stage")


class StagecoachPeer:
    """Stagecoach's CRDs, the chart's RBAC and the operator (host process) on a cluster."""

    def __init__(self, cluster: ControlPlane, namespace: str = NAMESPACE) -> None:
        from tests.e2e.conftest import RELEASE_NAMESPACE, Operator, operator_service_account

        self.cluster = cluster
        self.ns = namespace
        self.controller_user = (f"system:serviceaccount:{RELEASE_NAMESPACE}:"
                                f"{operator_service_account()}")
        self.executor_user = f"system:serviceaccount:{namespace}:stagecoach-stage"
        self.log_dir = Path(tempfile.mkdtemp(prefix="operator-", dir=cluster.workdir))
        self.operator = Operator(cluster, namespace, self.log_dir, name="bench-operator")

    def start(self) -> StagecoachPeer:
        from tests.e2e.conftest import REPO

        self.cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("agentpipelines", "agentpipelinetemplates", "modelproviders",
                    "stageapprovals"):
            self.cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                                 f"crd/{crd}.stagecoach.dev")
        self.cluster.kubectl("create", "namespace", self.ns)
        self.cluster.wait_for_service_account(self.ns)
        self.operator.start()
        _log(f"stagecoach operator up (log {self.operator.log_path})")
        return self

    @property
    def pid(self) -> int:
        assert self.operator.proc is not None
        return self.operator.proc.pid

    def submit(self, api: KubeAPI, names: list[str]) -> dict[str, float]:
        submitted: dict[str, float] = {}
        for name in names:
            submitted[name] = time.monotonic()
            api.create(PIPELINES.format(ns=self.ns), pipeline(name))
        return submitted

    def failure(self, api: KubeAPI, name: str) -> str:
        obj = api.get(PIPELINES.format(ns=self.ns) + f"/{name}")
        status = obj.get("status") or {}
        lines = [f"pipeline {name}: phase {status.get('phase')}: {status.get('message', '')}"]
        for st in status.get("stages") or []:
            if st.get("phase") not in ("Succeeded", None):
                lines.append(f"  stage {st['name']}: {st.get('phase')} {st.get('reason')}: "
                             f"{st.get('message', '')}")
        return "\n".join(lines)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.operator.logs().splitlines()[-lines:])

    def stop(self) -> None:
        self.operator.kill()


def stagecoach_figures(cluster: ControlPlane, *, load: int = 50,
                       namespace: str = NAMESPACE, verbose: bool = True) -> Figures:
    """Run the DAG once and ``load`` DAGs at once under Stagecoach; the figures of
    :data:`cluster_peer.ROWS` (``{"blocker": ...}`` if it cannot run)."""
    from stagecoach import __version__

    try:
        peer = StagecoachPeer(cluster, namespace).start()
    except Exception as err:  # a peer that cannot start is a column, not a crash
        return {"blocker": f"stagecoach operator: {err}"}
    api = cluster.api()
    timeline = Timeline(api, namespace, runs=PIPELINES, run_label="stagecoach.dev/pipeline",
                        task_of=_stage_of, done_phases=TERMINAL)
    sampler = ProcSampler(peer.pid)
    return measure_workload(peer, cluster, timeline, sampler, load, __version__,
                            verbose=verbose)
