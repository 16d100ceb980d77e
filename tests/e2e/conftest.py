"""Fixtures for the operator's end-to-end tests on the real control plane.

The CRDs from ``crds/`` are applied once per session; each test gets its own
namespace and its own ``stagecoach operator --namespace NS`` subprocess (so a test may
SIGKILL and restart it), running against the admin kubeconfig. Stage pods run the
real ``stagecoach-runner`` through the node agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
STAGECOACH = str(Path(sys.executable).parent / "stagecoach")


@pytest.fixture(scope="session")
def crds(kube_cluster: ControlPlane) -> ControlPlane:
    """The cluster with Stagecoach's CRDs established."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for name in ("agentpipelines", "agentpipelinetemplates", "modelproviders"):
        kube_cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                             f"crd/{name}.stagecoach.dev")
    return kube_cluster


class Operator:
    """A ``stagecoach operator`` subprocess for one namespace."""

    def __init__(self, cluster: ControlPlane, namespace: str, log_dir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ, KUBECONFIG=str(self.cluster.kubeconfig),
                   PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [STAGECOACH, "operator", "--namespace", self.namespace],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return "\n".join((self.log_dir / f"operator-{i}.log").read_text(errors="replace")
                         for i in range(1, self.starts + 1)
                         if (self.log_dir / f"operator-{i}.log").exists())


@pytest.fixture
def operator(crds: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(crds, kube_namespace, tmp_path)
    op.start()
    try:
        yield op
    finally:
        op.kill(signal.SIGTERM)
        if os.environ.get("STAGECOACH_SHOW_OPERATOR_LOG"):
            print(op.logs())


class Kubectl:
    """kubectl in the test namespace, with JSON helpers."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def __call__(self, *args: str, input: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.ns, *args, input=input, check=check)

    def apply(self, *docs: dict[str, Any] | str) -> None:
        text = "\n---\n".join(d if isinstance(d, str) else yaml.safe_dump(d) for d in docs)
        self("apply", "-f", "-", input=text)

    def get(self, *what: str) -> dict[str, Any]:
        return dict(json.loads(self("get", *what, "-o", "json").stdout))

    def items(self, *what: str) -> list[dict[str, Any]]:
        return list(self.get(*what)["items"])

    def wait_for(self, what: tuple[str, ...], cond: Callable[[dict[str, Any]], bool],
                 timeout: float = 90, operator: Operator | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(*what)
            if cond(obj):
                return obj
            time.sleep(0.25)
        extra = f"\noperator log:\n{operator.logs()[-6000:]}" if operator else ""
        raise AssertionError(f"timed out waiting on {what}: "
                             f"{json.dumps(obj.get('status'), indent=1)[:4000]}{extra}")

    def wait_phase(self, name: str, phases: set[str], timeout: float = 90,
                   operator: Operator | None = None) -> dict[str, Any]:
        return self.wait_for(("agentpipeline", name),
                             lambda o: (o.get("status") or {}).get("phase") in phases,
                             timeout, operator)


@pytest.fixture
def kubectl(kube_cluster: ControlPlane, kube_namespace: str) -> Kubectl:
    return Kubectl(kube_cluster, kube_namespace)


def load_example(name: str) -> list[dict[str, Any]]:
    """The documents of ``examples/<name>/pipeline.yaml``."""
    return [d for d in yaml.safe_load_all((REPO / "examples" / name / "pipeline.yaml")
                                          .read_text()) if d]


def cassette_configmap(name: str, example: str) -> dict[str, Any]:
    """A ConfigMap holding ``examples/<example>/cassette.yaml`` under ``cassette.yaml``."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"cassette.yaml": (REPO / "examples" / example / "cassette.yaml")
                     .read_text()}}


def replay_provider(doc: dict[str, Any], configmap: str) -> dict[str, Any]:
    """A replay ModelProvider document switched from a file to the cassette ConfigMap."""
    doc = json.loads(json.dumps(doc))
    doc["spec"]["cassette"] = {"configMapRef": {"name": configmap}}
    return doc
