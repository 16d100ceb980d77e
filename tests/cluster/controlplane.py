"""Start and stop a real Kubernetes control plane (plus the node agent) for tests.

Why: Stagecoach's behaviour depends on real apiserver semantics (admission,
RBAC, the Job and garbage-collector controllers, TokenRequest), which fakes do
not reproduce. This module runs etcd, kube-apiserver, kube-controller-manager
and kube-scheduler built by `hack/cluster/build.sh`, all on 127.0.0.1 with free
ports and a fresh PKI in a temp dir, and optionally the node agent
(`nodeagent.py`) so pods actually run. Every process gets its own process group
and a parent-death signal, and `stop()` (also registered with atexit) kills the
groups, so no process outlives the harness.

CLI (used by `make cluster-up` / `make cluster-down`):
    python -m tests.cluster.controlplane up --state-dir .cluster   # foreground supervisor
    python -m tests.cluster.controlplane down --state-dir .cluster
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .audit import POLICY as AUDIT_POLICY
from .audit import AuditLog
from .kubeapi import ApiError, KubeAPI, write_kubeconfig
from .pki import TestPKI

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "cluster" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAME = "stagecoach-node"


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


def _log(msg: str) -> None:
    print(f"[stagecoach-cluster] {msg}", file=sys.stderr, flush=True)


def ensure_binaries(*, build: bool = True) -> Path:
    """Return the directory holding the control-plane binaries, building them if missing.

    `STAGECOACH_KUBE_BIN_DIR` overrides the location; otherwise it is the versioned
    cache dir that `hack/cluster/build.sh --bin-dir` prints.
    """
    override = os.environ.get("STAGECOACH_KUBE_BIN_DIR")
    if override:
        bin_dir = Path(override)
    else:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--bin-dir"], check=True, capture_output=True, text=True
        )
        bin_dir = Path(out.stdout.strip())
    if all((bin_dir / b).is_file() for b in BINARIES):
        return bin_dir
    if not build:
        raise ClusterError(f"control-plane binaries missing in {bin_dir}; run `make cluster-bins`")
    _log(
        f"control-plane binaries missing in {bin_dir}; building them with {BUILD_SCRIPT} "
        "(first build compiles Kubernetes from source and takes a long while on few cores)"
    )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    return bin_dir


def find_kubectl(bin_dir: Path | None) -> str:
    """The kubectl to use: the one built with the control plane, else the one on PATH."""
    if bin_dir is not None and (bin_dir / "kubectl").is_file():
        return str(bin_dir / "kubectl")
    found = shutil.which("kubectl")
    if not found:
        raise ClusterError("kubectl not found; run `make kubectl` or `make cluster-bins`")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reserve_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Component:
    """One supervised process, running in its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    argv: Sequence[str] = ()
    cwd: Path | None = None
    env: dict[str, str] | None = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # Leftovers in the group (e.g. pod processes of the node agent).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class ControlPlane:
    """A running test cluster. Use `start()`/`stop()` or as a context manager."""

    workdir: Path | None = None
    bin_dir: Path | None = None
    with_node: bool = True
    node_name: str = NODE_NAME
    components: list[Component] = field(default_factory=list)
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    kubelet_port: int = field(init=False)
    audit_log: AuditLog = field(init=False)
    """Every API request but the control plane's own (see :mod:`tests.cluster.audit`)."""
    _own_workdir: bool = field(init=False, default=False)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 120.0) -> ControlPlane:
        if self.bin_dir is None:
            self.bin_dir = ensure_binaries()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="stagecoach-cluster-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        assert self.workdir is not None and self.bin_dir is not None
        deadline = time.monotonic() + timeout
        etcd_client, etcd_peer, api_port, kcm_port, sched_port, kubelet_port = _reserve_ports(6)
        self.kubelet_port = kubelet_port
        self.server = f"https://127.0.0.1:{api_port}"
        pki = TestPKI(self.workdir / "pki")
        serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            ips=("127.0.0.1", SERVICE_IP),
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        admin = pki.issue(
            "admin", "stagecoach-admin", organizations=("system:masters",), client=True
        )
        kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        )
        kcm = pki.issue("controller-manager", "system:kube-controller-manager", client=True)
        sched = pki.issue("scheduler", "system:kube-scheduler", client=True)
        kubelet_serving = pki.issue(
            "kubelet",
            f"system:node:{self.node_name}",
            server=True,
            ips=("127.0.0.1",),
            dns=("localhost", self.node_name),
        )
        sa = pki.service_account_keys()
        # Separate CA for the aggregation layer's front proxy (requestheader auth).
        front = TestPKI(self.workdir / "pki" / "front-proxy", "stagecoach-front-proxy-ca")
        front_client = front.issue("front-proxy-client", "front-proxy-client", client=True)

        def kubeconfig(name: str, pair: object, user: str) -> Path:
            assert self.workdir is not None
            return write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                server=self.server,
                ca_cert=pki.ca.cert,
                client_cert=pair.cert,  # type: ignore[attr-defined]
                client_key=pair.key,  # type: ignore[attr-defined]
                user=user,
            )

        self.kubeconfig = kubeconfig("admin", admin, "admin")
        kcm_kc = kubeconfig("controller-manager", kcm, "system:kube-controller-manager")
        sched_kc = kubeconfig("scheduler", sched, "system:kube-scheduler")

        # etcd -------------------------------------------------------------------
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(
            "etcd",
            lambda: b'"health":"true"' in _http_get(f"http://127.0.0.1:{etcd_client}/health"),
            deadline,
        )

        # kube-apiserver ---------------------------------------------------------
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        self.audit_log = AuditLog(self.workdir / "audit.log")
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--api-audiences={ISSUER}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                # Loopback advertise address: no endpoints for the `kubernetes` service.
                "--endpoint-reconciler-type=none",
                f"--requestheader-client-ca-file={front.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_client.cert}",
                f"--proxy-client-key-file={front_client.key}",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log.path}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                "--audit-log-mode=blocking",
                "--v=1",
            ],
        )
        api = KubeAPI.from_kubeconfig(self.kubeconfig)

        def api_ready() -> bool:
            return api.request_raw("GET", "/readyz", timeout=5) == b"ok"

        self._wait("kube-apiserver", api_ready, deadline)

        # controller manager and scheduler ---------------------------------------
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                # Default set ("*") includes job, garbage-collector, ttl-after-finished,
                # namespace, serviceaccount, serviceaccount-token, root-ca-cert-publisher.
                "--controllers=*",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait("kube-controller-manager", lambda: _healthz(kcm_port), deadline)
        self._wait("kube-scheduler", lambda: _healthz(sched_port), deadline)

        def default_ns_ready() -> bool:
            try:
                api.get("/api/v1/namespaces/default/serviceaccounts/default")
                api.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            except ApiError as err:
                if err.status == 404:
                    return False
                raise
            return True

        self._wait(
            "default namespace (serviceaccount, kube-root-ca.crt)", default_ns_ready, deadline
        )

        # node agent -----------------------------------------------------------
        if self.with_node:
            self._spawn(
                "nodeagent",
                [
                    sys.executable,
                    "-m",
                    "tests.cluster.nodeagent",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--node-name={self.node_name}",
                    f"--port={kubelet_port}",
                    f"--tls-cert={kubelet_serving.cert}",
                    f"--tls-key={kubelet_serving.key}",
                    f"--client-ca={pki.ca.cert}",
                    f"--root-dir={self.workdir / 'node'}",
                ],
                cwd=REPO_ROOT,
                # Pods run host commands; put this interpreter's bin dir (the test venv)
                # first so `python3` in a pod sees the same packages as the tests.
                env=dict(
                    os.environ,
                    PATH=os.pathsep.join(
                        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
                    ),
                ),
            )

            def node_ready() -> bool:
                try:
                    node = api.get(f"/api/v1/nodes/{self.node_name}")
                except ApiError as err:
                    if err.status == 404:
                        return False
                    raise
                conds = node.get("status", {}).get("conditions", [])
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

            self._wait(f"node {self.node_name}", node_ready, deadline)
        _log(f"cluster ready at {self.server} (kubeconfig {self.kubeconfig})")

    def stop(self) -> None:
        """Kill every component (reverse start order) and remove an owned temp dir."""
        for comp in reversed(self.components):
            comp.stop()
        self.components.clear()
        if self._own_workdir and self.workdir is not None and self.workdir.exists():
            if os.environ.get("STAGECOACH_KEEP_CLUSTER_DIR"):
                _log(f"keeping {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.components]

    def api(self) -> KubeAPI:
        return KubeAPI.from_kubeconfig(self.kubeconfig)

    def wait_for_service_account(
        self, namespace: str, name: str = "default", timeout: float = 30.0
    ) -> None:
        """Wait until the ServiceAccount controller has created `name` in `namespace`.

        Pods using it are rejected by admission until then.
        """
        api = self.api()
        deadline = time.monotonic() + timeout
        while True:
            try:
                api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
                return
            except ApiError as err:
                if err.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster and capture its output."""
        cmd = [find_kubectl(self.bin_dir), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd[2:])!r} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Component:
        assert self.workdir is not None
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            # setpriv --pdeathsig: the component dies with us even if we are SIGKILLed.
            proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
                env=env,
            )
        comp = Component(name, proc, log, tuple(argv), cwd, env)
        self.components.append(comp)
        return comp

    # ------------------------------------------------------------------ faults
    def component(self, name: str) -> Component:
        """The running component ``name`` (etcd, kube-apiserver, nodeagent, ...)."""
        return next(c for c in self.components if c.name == name)

    def freeze(self, name: str) -> None:
        """SIGSTOP a component's process group: it stops answering, connections hang."""
        os.killpg(self.component(name).proc.pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        os.killpg(self.component(name).proc.pid, signal.SIGCONT)

    def restart(self, name: str, timeout: float = 90.0) -> None:
        """Stop a component (and whatever its process group ran) and start it again with
        the same command line; for the API server, wait until it is ready."""
        old = self.component(name)
        old.stop()
        self.components.remove(old)
        self._spawn(name, old.argv, cwd=old.cwd, env=old.env)
        deadline = time.monotonic() + timeout
        if name == "kube-apiserver":
            api = self.api()
            self._wait(name, lambda: api.request_raw("GET", "/readyz", timeout=5) == b"ok",
                       deadline)

    def _wait(self, what: str, probe: Callable[[], bool], deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            for comp in self.components:
                if comp.proc.poll() is not None:
                    raise ClusterError(
                        f"{comp.name} exited with {comp.proc.returncode} while waiting for "
                        f"{what}; last log lines:\n{comp.tail()}"
                    )
            try:
                if probe():
                    return
            except (OSError, ApiError, ValueError) as err:
                last = err
            time.sleep(0.2)
        logs = "\n".join(f"--- {c.name}\n{c.tail(15)}" for c in self.components)
        raise ClusterError(f"timed out waiting for {what} (last error: {last})\n{logs}")


def _http_get(url: str, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return bytes(resp.read())


def _healthz(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert of kcm/scheduler
    try:
        return _http_get(f"https://127.0.0.1:{port}/healthz", ctx) == b"ok"
    except urllib.error.HTTPError:
        return False


# ---------------------------------------------------------------------- CLI
def _cmd_up(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "supervisor.pid"
    for stale in ("kubeconfig", "ready", "failed"):
        (state_dir / stale).unlink(missing_ok=True)
    pid_file.write_text(str(os.getpid()))
    cluster = ControlPlane(workdir=state_dir / "run")
    if cluster.workdir is not None and cluster.workdir.exists():
        shutil.rmtree(cluster.workdir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except Exception as err:
        (state_dir / "failed").write_text(str(err))
        _log(f"cluster failed to start: {err}")
        pid_file.unlink(missing_ok=True)
        return 1
    shutil.copy(cluster.kubeconfig, state_dir / "kubeconfig")
    (state_dir / "ready").write_text(cluster.server + "\n")
    try:
        while not stopping:
            for comp in cluster.components:
                if comp.proc.poll() is not None:
                    _log(f"{comp.name} exited with {comp.proc.returncode}; stopping cluster")
                    stopping = True
            time.sleep(0.5)
    finally:
        cluster.stop()
        for name in ("ready", "supervisor.pid", "kubeconfig"):
            (state_dir / name).unlink(missing_ok=True)
    return 0


def _cmd_down(state_dir: Path, timeout: float = 60.0) -> int:
    pid_file = state_dir / "supervisor.pid"
    if not pid_file.exists():
        _log("no cluster running")
        return 0
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _log("cluster stopped")
            return 0
        time.sleep(0.2)
    _log(f"supervisor {pid} did not stop in {timeout}s")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "bin-dir"])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".cluster")
    args = parser.parse_args(argv)
    if args.command == "bin-dir":
        print(ensure_binaries())
        return 0
    if args.command == "up":
        return _cmd_up(args.state_dir.resolve())
    return _cmd_down(args.state_dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
