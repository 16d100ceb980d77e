"""Fixtures for the operator's end-to-end tests on the real control plane.

The CRDs from ``crds/`` are applied once per session; each test gets its own
namespace and its own operator subprocess (so a test may SIGKILL and restart it).

The operator runs under the Helm chart's RBAC, not as cluster admin: the chart is
rendered with its default values (cluster mode; release ``sc`` in ``stagecoach-system``),
its ServiceAccounts, (Cluster)Roles and (Cluster)RoleBindings are applied once per
cluster (the Deployment and Service are not: the operator is a local process), and each
start mints a TokenRequest token for the Deployment's ServiceAccount and hands the
operator a kubeconfig with only that bearer token, started with the Deployment's args
(``operator --all-namespaces``) and plain-value env. A 403, "forbidden" or a traceback
in its log is a chart bug or an operator bug, never a test artefact: the ``operator``
fixture fails the test (``@pytest.mark.operator_log_allows(text)`` exempts lines a test
provokes on purpose, such as a quota refusal). The chart's stage-writes admission
policy is installed with its RBAC. The test code itself keeps the admin kubeconfig
(``kube_cluster.kubeconfig``). Stage pods run the real ``stagecoach-runner`` through the
node agent.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.cluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
STAGECOACH = str(Path(sys.executable).parent / "stagecoach")
CHART = REPO / "charts" / "stagecoach"
RELEASE = "sc"
RELEASE_NAMESPACE = "stagecoach-system"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
              "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")  # "…:25,403 " is no 403
BAD_LOG = re.compile(r"\b403\b|forbidden|Traceback|Not enough permissions", re.IGNORECASE)
TOKEN_DURATION = "2h"


@pytest.fixture(scope="session")
def crds(kube_cluster: ControlPlane) -> ControlPlane:
    """The cluster with Stagecoach's CRDs established."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for name in ("agentpipelines", "agentpipelinetemplates", "modelproviders"):
        kube_cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                             f"crd/{name}.stagecoach.dev")
    kube_cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                         "crd/stageapprovals.stagecoach.dev")  # the operator watches them
    return kube_cluster


def render_chart(values: dict[str, Any], release: str = RELEASE
                 ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """The chart rendered with ``values``: (its RBAC and policy documents, the Deployment)."""
    rendered = helm.Chart.load(CHART).render(values, name=release, namespace=RELEASE_NAMESPACE,
                                             is_install=True)
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    return tuple(d for d in docs if d["kind"] in RBAC_KINDS), deployment


@functools.cache
def chart_release() -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """The chart rendered with default values (cluster mode)."""
    return render_chart({})


def operator_container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The operator container of the chart's Deployment."""
    dep = deployment or chart_release()[1]
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def bad_log_lines(log: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """Lines of an operator log that show a permission problem or a traceback."""
    return [line for line in log.splitlines()
            if BAD_LOG.search(_STAMP.sub("", line)) and not any(a in line for a in allowed)]


def operator_service_account() -> str:
    """The ServiceAccount the chart's Deployment runs the operator as."""
    return str(chart_release()[1]["spec"]["template"]["spec"]["serviceAccountName"])


_rbac_installed: set[str] = set()


def install_chart_rbac(cluster: ControlPlane) -> None:
    """Apply the chart's RBAC (and its namespace) to ``cluster`` once, as admin."""
    if cluster.server in _rbac_installed:
        return
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": RELEASE_NAMESPACE}}
    rbac, _ = chart_release()
    cluster.kubectl("apply", "-f", "-",
                    input="\n---\n".join(yaml.safe_dump(d) for d in (namespace, *rbac)))
    _rbac_installed.add(cluster.server)


def token_kubeconfig(cluster: ControlPlane, path: Path, user: str, token: str) -> Path:
    """A kubeconfig holding only ``token`` (no client certificate) for ``cluster``."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "stagecoach-test",
                      "cluster": {"server": cluster.server,
                                  "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "stagecoach-test", "user": user}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def write_operator_kubeconfig(cluster: ControlPlane, path: Path,
                              deployment: dict[str, Any] | None = None) -> Path:
    """A kubeconfig for the operator's ServiceAccount (of ``deployment``, default: the
    default chart's): a fresh TokenRequest token, the cluster's server and CA."""
    install_chart_rbac(cluster)  # the release namespace (once per cluster)
    account = str((deployment or chart_release()[1])["spec"]["template"]["spec"]
                  ["serviceAccountName"])
    token = cluster.kubectl("create", "token", account, "-n", RELEASE_NAMESPACE,
                            f"--duration={TOKEN_DURATION}").stdout.strip()
    return token_kubeconfig(cluster, path, f"system:serviceaccount:{RELEASE_NAMESPACE}:"
                            f"{account}", token)


class Operator:
    """A ``stagecoach operator`` subprocess started as the chart's Deployment starts it
    (its args, its plain env values), authenticated as the chart's operator
    ServiceAccount. ``namespace`` is the test's namespace; the operator watches all."""

    def __init__(self, cluster: ControlPlane, namespace: str, log_dir: Path,
                 deployment: dict[str, Any] | None = None, identity: str | None = None,
                 name: str = "operator") -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.name = name
        self.identity = identity or f"operator-{namespace}"
        """POD_NAME: the Lease holder identity. Stable across restarts, as a pod's name
        is when its container restarts (a restarted operator resumes its own lease)."""
        self.deployment = deployment
        """The chart's Deployment to start as (default: the default values' one)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.restarts_on_exit = 0
        """Times the process stopped by itself and was started again."""

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    @property
    def kubeconfig(self) -> Path:
        """The operator's own (ServiceAccount token) kubeconfig."""
        return self.log_dir / f"{self.name}.kubeconfig"

    def start(self) -> None:
        if self not in _operators:
            _operators.append(self)
        self.starts += 1
        write_operator_kubeconfig(self.cluster, self.kubeconfig, self.deployment)
        container = operator_container(self.deployment)
        # The metrics port is left to the test (STAGECOACH_METRICS_PORT): a fixed 9090
        # could clash on the host.
        chart_env = {e["name"]: e["value"] for e in container.get("env", [])
                     if "value" in e and e["name"] != "STAGECOACH_METRICS_PORT"}
        env = {**chart_env, **os.environ, "KUBECONFIG": str(self.kubeconfig),
               "PYTHONUNBUFFERED": "1", "POD_NAME": self.identity}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [STAGECOACH, *container["args"]],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        threading.Thread(target=self._restart_on_exit, args=(self.proc,), daemon=True).start()

    def _restart_on_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """What the Deployment's restartPolicy: Always does: an operator that stops by
        itself (a leader that could not renew its Lease exits) is started again."""
        proc.wait()
        time.sleep(1)
        if self.proc is not proc:
            return  # killed by the test
        self.restarts_on_exit += 1
        for _ in range(60):  # the API server may be down too: keep trying, as kubelet does
            try:
                self.start()
                return
            except Exception:
                time.sleep(2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the operator (the restart watcher sees ``proc`` cleared within its 1 s
        grace and leaves it stopped)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return "\n".join((self.log_dir / f"{self.name}-{i}.log").read_text(errors="replace")
                         for i in range(1, self.starts + 1)
                         if (self.log_dir / f"{self.name}-{i}.log").exists())


_config: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _config.append(config)


def figure(line: str) -> None:
    """Print a measured figure past pytest's output capture, so CI's log keeps it."""
    capman = _config[0].pluginmanager.getplugin("capturemanager") if _config else None
    if capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        print(f"\n{line}", flush=True)


_operators: list[Operator] = []
"""Every operator a test started (fixture or not): their logs are checked after it."""


@pytest.fixture(autouse=True)
def operator_logs_are_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when any operator it ran logged a 403, "forbidden" or a traceback."""
    _operators.clear()
    yield
    allowed = tuple(m.args[0] for m in request.node.iter_markers("operator_log_allows"))
    bad = [line for op in _operators for line in bad_log_lines(op.logs(), allowed)]
    for cluster in {op.cluster.server: op.cluster for op in _operators}.values():
        # The chart runs with leader election: hand the Lease on to the next test.
        cluster.kubectl("-n", RELEASE_NAMESPACE, "delete", "lease", "stagecoach-operator",
                        "--ignore-not-found", check=False)
    _operators.clear()
    if bad:
        pytest.fail("the operator's log shows permission problems or tracebacks:\n"
                    + "\n".join(bad[:20]), pytrace=False)


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

    def operator_trace(self, name: str) -> list[dict[str, Any]]:
        """The operator's trace events of pipeline ``name`` as readers see them: its
        trace record plus the run state's events not appended yet (batched)."""
        from stagecoach.operator.record import outbox_of
        from stagecoach.store.trace import with_outbox
        cm = self("get", "configmap", f"{name}-trace-operator", "-o", "json", check=False)
        data = json.loads(cm.stdout)["data"]["operator.jsonl"] if cm.returncode == 0 else ""
        events = [json.loads(line) for line in data.splitlines()]
        state = self("get", "configmap", f"{name}-state", "-o", "json", check=False)
        return with_outbox(events, outbox_of(json.loads(state.stdout))
                           if state.returncode == 0 else [])

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
