"""A kubelet stand-in that registers one Node and really runs the pods bound to it.

Why: the test control plane has no kubelet or container runtime (no images, no
cgroups on this machine), yet Stagecoach tests need Jobs whose pods actually
execute, read their volumes, call the API with their service-account token and
produce logs. This agent does what a kubelet would, minus images and isolation:

* registers a Ready Node (capacity, InternalIP 127.0.0.1, kubelet endpoint port)
  and renews its coordination.k8s.io Lease;
* watches pods with `spec.nodeName=<node>` and runs each container's
  `command` + `args` as a host process inside its own mount namespace
  (`unshare --mount`), where volumes and the termination-message file are
  bind-mounted at their mount paths, and the agent's pod directories are hidden
  under an empty tmpfs (a container sees its own mounts, not another container's
  token). The image is never pulled; commands run from this machine's environment,
  as root: this is not a security boundary for anything outside the pod directories;
* materialises configMap, secret, emptyDir, downwardAPI, hostPath and projected
  volumes (service-account tokens via the TokenRequest API, bound to the pod);
* runs init containers in order, native sidecars (init containers with
  `restartPolicy: Always`) around the main containers, honours restartPolicy,
  activeDeadlineSeconds, graceful deletion and termination messages;
* reports pod status the way the kubelet does (phases, conditions,
  container statuses) and serves `/containerLogs` over TLS for `kubectl logs`.

Run: python -m tests.cluster.nodeagent --kubeconfig K --node-name N --port P \
        --tls-cert C --tls-key K --client-ca CA --root-dir D
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .kubeapi import JSON, ApiError, KubeAPI

log = logging.getLogger("stagecoach.nodeagent")
T = TypeVar("T")

DEFAULT_CAPACITY = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
# Host environment variables handed to every container (there is no image env).
DEFAULT_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
LEASE_SECONDS = 40
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def expand_refs(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion (`$$` escapes, unknown references stay verbatim)."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(repl, text)


class PodSetupError(Exception):
    """The pod cannot be set up; `retry` says whether a later attempt may succeed."""

    def __init__(self, reason: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry = retry


class ContainerRun:
    """One (re)start of a container: its process, log file and resulting state."""

    def __init__(self, name: str, kind: str, restart: int, log_path: Path, term_path: Path):
        self.name = name
        self.kind = kind  # "init", "sidecar" or "main"
        self.restart = restart
        self.log_path = log_path
        self.term_path = term_path
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.message: str | None = None
        self.done = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def signal(self, sig: int) -> None:
        """Like a container runtime: SIGTERM goes to the main process only (PID 1 in a
        container), SIGKILL to the whole process group (a cgroup kill)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            elif self.running:
                os.kill(self.proc.pid, sig)

    def state(self, container_id: str) -> JSON:
        if self.exit_code is not None:
            term: JSON = {
                "exitCode": self.exit_code,
                "reason": "Completed" if self.exit_code == 0 else "Error",
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
                "containerID": container_id,
            }
            if self.message:
                term["message"] = self.message
            return {"terminated": term}
        return {"running": {"startedAt": self.started_at}}


class PodWorker:
    """Drives one pod from Pending to a terminal phase, then deletes it when asked."""

    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = agent.root_dir / "pods" / self.uid
        self.spec: JSON = pod["spec"]
        self.runs: dict[str, list[ContainerRun]] = {}
        self.stopping = False
        self.stop_reason: tuple[str, str] | None = None  # pod (reason, message)
        self.terminating = asyncio.Event()
        self.phase = "Pending"
        self.initialized = False
        self.ready = False
        self.setup_error: tuple[str, str] | None = None
        self.start_time: str = pod.get("status", {}).get("startTime") or now()
        self.volumes: dict[str, Path] = {}
        self._status_lock = asyncio.Lock()
        self._transitions: dict[str, tuple[str, str]] = {}  # condition -> (status, since)
        self.task: asyncio.Task[None] | None = None
        self.finished = False

    # ---------------------------------------------------------------- events
    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.terminating.is_set():
            self.terminating.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"pod-{self.ns}/{self.name}")
        if self.pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()

    # ---------------------------------------------------------------- lifecycle
    async def _main(self) -> None:
        watcher = asyncio.create_task(self._watch_stop())
        try:
            await self._run()
        except asyncio.CancelledError:
            self._kill_all(signal.SIGKILL)
            raise
        except Exception as err:  # report instead of leaving the pod Pending forever
            log.exception("pod %s/%s: agent error", self.ns, self.name)
            self._kill_all(signal.SIGKILL)
            self.setup_error = ("NodeAgentError", f"stagecoach node agent error: {err}")
            self.phase = "Failed"
            with contextlib.suppress(Exception):
                await self.sync_status()
        finally:
            watcher.cancel()
            self.finished = True
        if self.pod["metadata"].get("deletionTimestamp"):
            await self.agent.delete_pod(self.pod)

    async def _watch_stop(self) -> None:
        """Turn deletion and activeDeadlineSeconds into a stop of all containers."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self.terminating.wait())]
        ads = self.spec.get("activeDeadlineSeconds")
        if ads is not None:
            started = parse_time(self.start_time)
            remaining = (started - dt.datetime.now(dt.UTC)).total_seconds() + float(ads)
            waits.append(asyncio.create_task(asyncio.sleep(max(0.0, remaining))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self.terminating.is_set():
            meta = self.pod["metadata"]
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.spec.get("terminationGracePeriodSeconds", 30)
            await self.stop(None, float(grace))
        else:
            msg = "Pod was active on the node longer than the specified deadline"
            await self.stop(("DeadlineExceeded", msg), 0.0)

    async def stop(self, reason: tuple[str, str] | None, grace: float) -> None:
        """SIGTERM every running container, SIGKILL after `grace` seconds."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        log.info("pod %s/%s: stopping (%s, grace %ss)", self.ns, self.name, reason, grace)
        self._kill_all(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_exited(), grace)
            self._kill_all(signal.SIGKILL)

    def _kill_all(self, sig: int) -> None:
        for runs in self.runs.values():
            if runs:
                runs[-1].signal(sig)

    async def _all_exited(self) -> None:
        for runs in list(self.runs.values()):
            if runs and runs[-1].proc is not None:
                await runs[-1].done.wait()

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        await self.sync_status()
        try:
            self._check_commands()
            while True:
                try:
                    await self._prepare_volumes()
                    break
                except PodSetupError as err:
                    if not err.retry or self.stopping:
                        raise
                    self.setup_error = (err.reason, err.message)
                    await self.sync_status()
                    await asyncio.sleep(1.0)
            self.setup_error = None
        except PodSetupError as err:
            self.setup_error = (err.reason, err.message)
            self.phase = "Failed"
            await self.sync_status()
            return
        if not self.stopping:
            await self._lifecycle()
        self.phase = self._final_phase()
        self.ready = False
        await self.sync_status()
        log.info("pod %s/%s: %s", self.ns, self.name, self.phase)

    def _check_commands(self) -> None:
        for c in self.spec.get("initContainers", []) + self.spec["containers"]:
            if not c.get("command"):
                raise PodSetupError(
                    "NoCommand",
                    f"container {c['name']!r} has no command: the stagecoach test node agent "
                    "does not pull or unpack images (image "
                    f"{c.get('image', '?')!r} is ignored), so every container must set "
                    "`command` (and optionally `args`) to run from the host environment",
                )

    async def _lifecycle(self) -> None:
        sidecars: list[asyncio.Task[None]] = []
        for c in self.spec.get("initContainers", []):
            if self.stopping:
                break
            if c.get("restartPolicy") == "Always":
                started = asyncio.Event()
                sidecars.append(asyncio.create_task(self._supervise(c, "sidecar", started)))
                await started.wait()
                continue
            ok = await self._run_to_completion(c)
            if not ok:
                self.stopping = True
        if not self.stopping:
            self.initialized = True
            mains = [
                asyncio.create_task(self._supervise(c, "main")) for c in self.spec["containers"]
            ]
            self.phase = "Running"
            await asyncio.gather(*mains)
        # Main containers are done: stop sidecars in reverse order, SIGTERM first.
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        sidecar_specs = [
            c for c in self.spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
        ]
        self.stopping = True
        for c in reversed(sidecar_specs):
            runs = self.runs.get(c["name"])
            if runs and runs[-1].running:
                runs[-1].signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(runs[-1].done.wait(), grace)
                except TimeoutError:
                    runs[-1].signal(signal.SIGKILL)
        await asyncio.gather(*sidecars, return_exceptions=True)

    async def _run_to_completion(self, c: JSON) -> bool:
        """Run a regular init container until it succeeds (restarting per restartPolicy)."""
        policy = self.spec.get("restartPolicy", "Always")
        backoff = 1.0
        while not self.stopping:
            run = await self._start(c, "init")
            await run.done.wait()
            if run.exit_code == 0:
                return True
            if policy == "Never" or self.stopping:
                return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        return False

    async def _supervise(self, c: JSON, kind: str, started: asyncio.Event | None = None) -> None:
        """Run a main container or sidecar, restarting it as restartPolicy demands."""
        policy = "Always" if kind == "sidecar" else self.spec.get("restartPolicy", "Always")
        backoff = 1.0
        while not self.stopping:
            run = await self._start(c, kind)
            if started is not None:
                started.set()
            await run.done.wait()
            if self.stopping or policy == "Never" or (policy == "OnFailure" and run.exit_code == 0):
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        if started is not None:
            started.set()

    def _final_phase(self) -> str:
        if self.stop_reason is not None:
            return "Failed"
        for c in self.spec.get("initContainers", []):
            if c.get("restartPolicy") == "Always":
                continue
            runs = self.runs.get(c["name"])
            if not runs or runs[-1].exit_code != 0:
                return "Failed"
        for c in self.spec["containers"]:
            runs = self.runs.get(c["name"])
            if not runs or runs[-1].exit_code != 0:
                return "Failed"
        return "Succeeded"

    # ---------------------------------------------------------------- containers
    async def _start(self, c: JSON, kind: str) -> ContainerRun:
        name = c["name"]
        runs = self.runs.setdefault(name, [])
        cdir = self.dir / "containers" / name
        cdir.mkdir(parents=True, exist_ok=True)
        run = ContainerRun(
            name, kind, len(runs), cdir / f"{len(runs)}.log", cdir / "termination-log"
        )
        run.term_path.write_bytes(b"")
        runs.append(run)
        try:
            env = await self._env(c)
            argv = [expand_refs(a, env) for a in c["command"] + c.get("args", [])]
            script = self._mount_script(c, run)
        except PodSetupError as err:
            run.started_at = run.finished_at = now()
            run.exit_code = 128
            run.message = err.message
            run.done.set()
            await self.sync_status()
            return run
        with open(run.log_path, "wb") as out:
            run.proc = await asyncio.create_subprocess_exec(
                "setpriv", "--pdeathsig", "KILL", "--",
                "unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", script, f"stagecoach-{name}", *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip
        run.started_at = now()
        log.info("pod %s/%s: started %s %s (pid %s)", self.ns, self.name, kind, name, run.proc.pid)
        self.agent.spawn(self._reap(run, c))
        await self.sync_status()
        return run

    async def _reap(self, run: ContainerRun, c: JSON) -> None:
        assert run.proc is not None
        code = await run.proc.wait()
        run.exit_code = 128 - code if code < 0 else code
        run.finished_at = now()
        run.message = self._termination_message(run, c)
        log.info("pod %s/%s: %s exited %s", self.ns, self.name, run.name, run.exit_code)
        run.done.set()
        if not (self.stopping and run.kind == "sidecar"):
            await self.sync_status()

    def _termination_message(self, run: ContainerRun, c: JSON) -> str | None:
        try:
            data = run.term_path.read_bytes()[:MAX_TERMINATION_MESSAGE]
        except OSError:
            data = b""
        if (
            not data.strip()
            and run.exit_code
            and (c.get("terminationMessagePolicy") == "FallbackToLogsOnError")
        ):
            try:
                lines = run.log_path.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
            except OSError:
                lines = []
            data = b"".join(lines)[-FALLBACK_LOG_BYTES:]
        text = data.decode(errors="replace")
        return text or None

    def _mount_script(self, c: JSON, run: ContainerRun) -> str:
        """Shell run inside the new mount namespace: bind mounts, cd, then exec the command."""
        mounts: list[tuple[Path, str, bool]] = []
        for m in c.get("volumeMounts", []):
            src = self.volumes.get(m["name"])
            if src is None:
                raise PodSetupError("VolumeMissing", f"volume {m['name']!r} is not defined")
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append((src, m["mountPath"], bool(m.get("readOnly"))))
        mounts.append(
            (run.term_path, c.get("terminationMessagePath", "/dev/termination-log"), False)
        )
        mounts.sort(key=lambda t: len(Path(t[1]).parts))
        q = shlex.quote
        lines = ["set -e"]
        for i, (src, dst, ro) in enumerate(mounts):
            nested = any(Path(dst).is_relative_to(outer) for _, outer, _ in mounts[:i])
            if not nested:
                # Mount points must exist on the host; remember the ones we create.
                self.agent.ensure_host_path(Path(dst), is_dir=src.is_dir())
            if src.is_dir():
                lines.append(f"mkdir -p {q(dst)}")
            else:
                lines.append(
                    f"mkdir -p {q(str(Path(dst).parent))}; [ -e {q(dst)} ] || : > {q(dst)}"
                )
            lines.append(f"mount --bind {q(str(src))} {q(dst)}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {q(dst)}")
        # Hide every pod's volumes (other containers' tokens, Secrets) from this one:
        # what it mounted stays visible at its mount paths, the sources do not.
        lines.append(f"mount -t tmpfs -o size=64k,mode=0755 stagecoach-pods "
                     f"{q(str(self.agent.root_dir / 'pods'))}")
        workdir = c.get("workingDir") or "/"
        lines.append(f"mkdir -p {q(workdir)} && cd {q(workdir)}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    async def _env(self, c: JSON) -> dict[str, str]:
        agent = self.agent
        env = {k: os.environ[k] for k in agent.pass_env if k in os.environ}
        if agent.warm_bin is not None:  # stagecoach-runner forks from a warm zygote
            env["PATH"] = f"{agent.warm_bin}:{env.get('PATH', '')}"
        env["HOSTNAME"] = self.name
        host, port = agent.api_host, agent.api_port
        env.update(
            KUBERNETES_SERVICE_HOST=host,
            KUBERNETES_SERVICE_PORT=port,
            KUBERNETES_SERVICE_PORT_HTTPS=port,
            KUBERNETES_PORT=f"tcp://{host}:{port}",
            KUBERNETES_PORT_443_TCP=f"tcp://{host}:{port}",
            KUBERNETES_PORT_443_TCP_PROTO="tcp",
            KUBERNETES_PORT_443_TCP_ADDR=host,
            KUBERNETES_PORT_443_TCP_PORT=port,
        )
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref = src["configMapRef"]
                data = await self._get_data("configmaps", ref["name"], ref.get("optional", False))
            else:
                ref = src["secretRef"]
                data = await self._get_data("secrets", ref["name"], ref.get("optional", False))
            env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
        for e in c.get("env", []):
            if "valueFrom" not in e:
                env[e["name"]] = expand_refs(e.get("value", ""), env)
                continue
            value = await self._value_from(e["valueFrom"], c)
            if value is not None:
                env[e["name"]] = value
        return env

    async def _value_from(self, src: JSON, c: JSON) -> str | None:
        for kind, resource in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if kind in src:
                ref = src[kind]
                optional = ref.get("optional", False)
                data = await self._get_data(resource, ref["name"], optional)
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise PodSetupError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {resource[:-1]} "
                        f"{self.ns}/{ref['name']}",
                    )
                return data[ref["key"]].decode(errors="replace")
        if "fieldRef" in src:
            return self.field_value(src["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in src:
            ref = src["resourceFieldRef"]
            target = c
            if ref.get("containerName"):
                all_c = self.spec.get("initContainers", []) + self.spec["containers"]
                target = next(x for x in all_c if x["name"] == ref["containerName"])
            kind, _, res = ref["resource"].partition(".")
            value = target.get("resources", {}).get(kind, {}).get(res)
            return str(value if value is not None else self.agent.capacity.get(res, "0"))
        raise PodSetupError("CreateContainerConfigError", f"unsupported valueFrom {src}")

    def field_value(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple: dict[str, str] = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.agent.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        m = _LABEL_REF.match(path)
        if m:
            return str(meta.get(m.group(1), {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1], {})
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        raise PodSetupError("CreateContainerConfigError", f"unsupported fieldPath {path!r}")

    # ---------------------------------------------------------------- volumes
    async def _get_data(self, resource: str, name: str, optional: bool) -> dict[str, bytes]:
        try:
            obj = await self.agent.call(
                self.agent.kube.get, f"/api/v1/namespaces/{self.ns}/{resource}/{name}"
            )
        except ApiError as err:
            if err.status == 404:
                if optional:
                    return {}
                raise PodSetupError(
                    "ContainerCreating", f'{resource[:-1]} "{name}" not found', retry=True
                ) from None
            raise
        out: dict[str, bytes] = {}
        if resource == "secrets":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    @staticmethod
    def _write_items(
        target: Path, data: dict[str, bytes], items: list[JSON] | None, mode: int, src: str
    ) -> None:
        if items:
            for item in items:
                if item["key"] not in data:
                    raise PodSetupError(
                        "ContainerCreating", f"key {item['key']} not in {src}", retry=True
                    )
                dest = target / item["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data[item["key"]])
                dest.chmod(item.get("mode", mode))
        else:
            for key, value in data.items():
                dest = target / key
                dest.write_bytes(value)
                dest.chmod(mode)

    async def _token(self, audience: str | None, expiration: int) -> bytes:
        sa = self.spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        resp = await self.agent.call(
            self.agent.kube.create, f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body
        )
        return str(resp["status"]["token"]).encode()

    async def _prepare_volumes(self) -> None:
        for v in self.spec.get("volumes", []):
            name = v["name"]
            target = self.dir / "volumes" / name
            if "hostPath" in v:
                path = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate",):
                    path.mkdir(parents=True, exist_ok=True)
                self.volumes[name] = path
                continue
            if target.exists() and "emptyDir" not in v:
                shutil.rmtree(target)
            target.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = target
            if "emptyDir" in v:
                continue
            if "configMap" in v or "secret" in v:
                is_cm = "configMap" in v
                src = v["configMap"] if is_cm else v["secret"]
                ref = src.get("name") if is_cm else src.get("secretName")
                resource = "configmaps" if is_cm else "secrets"
                data = await self._get_data(resource, ref, src.get("optional", False))
                self._write_items(
                    target,
                    data,
                    src.get("items"),
                    src.get("defaultMode", 0o644),
                    f"{resource[:-1]} {ref}",
                )
            elif "downwardAPI" in v:
                src = v["downwardAPI"]
                await self._write_downward(
                    target, src.get("items", []), src.get("defaultMode", 0o644)
                )
            elif "projected" in v:
                mode = v["projected"].get("defaultMode", 0o644)
                for source in v["projected"].get("sources", []):
                    await self._project(target, source, mode)
            else:
                kinds = sorted(k for k in v if k != "name")
                raise PodSetupError(
                    "UnsupportedVolume",
                    f"volume {name!r}: type {kinds} is not supported by the stagecoach node agent",
                )

    async def _project(self, target: Path, source: JSON, mode: int) -> None:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = await self._token(sat.get("audience"), sat.get("expirationSeconds", 3600))
            dest = target / sat["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(token)
            dest.chmod(mode)
        elif "configMap" in source or "secret" in source:
            is_cm = "configMap" in source
            src = source["configMap" if is_cm else "secret"]
            resource = "configmaps" if is_cm else "secrets"
            data = await self._get_data(resource, src["name"], src.get("optional", False))
            self._write_items(
                target, data, src.get("items"), mode, f"{resource[:-1]} {src['name']}"
            )
        elif "downwardAPI" in source:
            await self._write_downward(target, source["downwardAPI"].get("items", []), mode)
        else:
            raise PodSetupError("UnsupportedVolume", f"unsupported projected source {source}")

    async def _write_downward(self, target: Path, items: list[JSON], mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = self.field_value(item["fieldRef"]["fieldPath"])
            else:
                value = await self._value_from(item, self.spec["containers"][0]) or ""
            dest = target / item["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(value)
            dest.chmod(item.get("mode", mode))

    # ---------------------------------------------------------------- status
    def _container_statuses(self, specs: list[JSON], init: bool) -> list[JSON]:
        out = []
        for c in specs:
            runs = self.runs.get(c["name"], [])
            cid = f"stagecoach://{self.uid}/{c['name']}/{max(len(runs) - 1, 0)}"
            status: JSON = {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "restartCount": max(len(runs) - 1, 0),
                "ready": False,
                "started": False,
            }
            if not runs and self.phase in ("Succeeded", "Failed"):
                reason, message = self.setup_error or (
                    "ContainerStatusUnknown",
                    "the container never started",
                )
                status["state"] = {
                    "terminated": {"exitCode": 128, "reason": reason, "message": message}
                }
            elif not runs:
                if self.setup_error is not None:
                    reason, message = self.setup_error
                    status["state"] = {"waiting": {"reason": reason, "message": message}}
                else:
                    reason = (
                        "PodInitializing" if init or not self.initialized else ("ContainerCreating")
                    )
                    status["state"] = {"waiting": {"reason": reason}}
            else:
                last = runs[-1]
                status["containerID"] = cid
                status["state"] = last.state(cid)
                status["started"] = last.running
                status["ready"] = (last.running and not init) or (
                    last.running and c.get("restartPolicy") == "Always"
                )
                if len(runs) > 1:
                    prev = runs[-2]
                    status["lastState"] = prev.state(cid[: cid.rfind("/") + 1] + str(prev.restart))
            out.append(status)
        return out

    def _status(self) -> JSON:
        terminal = self.phase in ("Succeeded", "Failed")
        mains = self._container_statuses(self.spec["containers"], init=False)
        inits = self._container_statuses(self.spec.get("initContainers", []), init=True)
        all_ready = not terminal and self.phase == "Running" and all(s["ready"] for s in mains)
        t = now()

        def cond(ctype: str, ok: bool, reason: str | None = None) -> JSON:
            value = "True" if ok else "False"
            prev = self._transitions.get(ctype)
            if prev is None or prev[0] != value:
                self._transitions[ctype] = prev = (value, t)
            c: JSON = {
                "type": ctype,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": prev[1],
            }
            if not ok and reason:
                c["reason"] = reason
            return c

        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: JSON = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": mains,
            "conditions": [
                cond(
                    "PodReadyToStartContainers",
                    bool(self.volumes) or self.initialized or bool(self.runs),
                ),
                cond(
                    "Initialized",
                    self.initialized or (terminal and self.phase == "Succeeded"),
                    "ContainersNotInitialized",
                ),
                cond("ContainersReady", all_ready, not_ready),
                cond("Ready", all_ready, not_ready),
                cond("PodScheduled", True),
            ],
        }
        if inits:
            status["initContainerStatuses"] = inits
        if self.stop_reason is not None:
            status["reason"], status["message"] = self.stop_reason
        elif self.setup_error is not None and self.phase == "Failed":
            status["reason"], status["message"] = self.setup_error
        return status

    async def sync_status(self) -> None:
        """Patch the pod's status subresource with the current view (strategic merge)."""
        async with self._status_lock:
            status = self._status()
            if self.agent.is_terminal_reported(self.uid):
                return
            path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status"
            try:
                await self.agent.call(
                    self.agent.kube.patch, path, {"status": status}, strategic=True
                )
            except ApiError as err:
                if err.status == 404:
                    return
                log.warning("pod %s/%s: status patch failed: %s", self.ns, self.name, err)
                self._resync_later()
                return
            except Exception as err:  # the API server is down or restarting
                log.warning("pod %s/%s: status patch failed: %s", self.ns, self.name, err)
                self._resync_later()
                return
            if status["phase"] in ("Succeeded", "Failed"):
                self.agent.mark_terminal_reported(self.uid)

    def _resync_later(self, delay: float = 2.0) -> None:
        """Report the status again later, as the kubelet's status manager keeps doing
        until the API server has it (a lost final status would leave the pod Running)."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: self.agent.spawn(self.sync_status()))


class NodeAgent:
    """Registers the node, watches its pods and runs a PodWorker per pod."""

    def __init__(
        self,
        kube: KubeAPI,
        *,
        node_name: str,
        port: int,
        tls_cert: Path,
        tls_key: Path,
        client_ca: Path,
        root_dir: Path,
        capacity: dict[str, str] | None = None,
        pass_env: tuple[str, ...] = DEFAULT_PASS_ENV,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.port = port
        self.tls_cert, self.tls_key, self.client_ca = tls_cert, tls_key, client_ca
        self.root_dir = root_dir
        self.capacity = capacity or dict(DEFAULT_CAPACITY)
        self.pass_env = pass_env
        url = urllib.parse.urlsplit(kube.server)
        self.api_host = url.hostname or "127.0.0.1"
        self.api_port = str(url.port or 443)
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="kubeapi")
        self.workers: dict[str, PodWorker] = {}
        self.by_name: dict[tuple[str, str], PodWorker] = {}
        self._terminal_reported: set[str] = set()
        self._deleted: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.created_paths: list[Path] = []
        self._stop = asyncio.Event()
        self.warm_bin: Path | None = None
        """Directory of the warm-fork shim put first on containers' PATH (:mod:`.warmfork`)."""

    async def start_warm_fork(self) -> None:
        """Start the zygote that forks ``stagecoach-runner`` per container
        (``STAGECOACH_WARM_FORK=0``: off, every container execs its command)."""
        from .warmfork import ENTRYPOINT, shim_text

        real = shutil.which(ENTRYPOINT)
        if os.environ.get("STAGECOACH_WARM_FORK", "1") == "0" or real is None:
            return
        sock = Path(f"/tmp/stagecoach-warm-{os.getpid()}.sock")  # short: sun_path limit
        bin_dir = self.root_dir / "warm-bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / ENTRYPOINT
        shim.write_text(shim_text(sock, real))
        shim.chmod(0o755)
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.cluster.warmfork", str(sock),
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        self.warm_bin = bin_dir
        log.info("warm fork: %s runs from a zygote on %s", ENTRYPOINT, sock)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def ensure_host_path(self, path: Path, *, is_dir: bool) -> None:
        """Create a missing mount point on the host; `cleanup_host_paths` removes it later."""
        missing = []
        for p in [path, *path.parents]:
            if p.exists() or p.is_symlink():
                break
            missing.append(p)
        if not missing:
            return
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        self.created_paths.extend(reversed(missing))

    def cleanup_host_paths(self) -> None:
        """Remove created mount points again if nothing was written into them."""
        for p in reversed(self.created_paths):
            with contextlib.suppress(OSError):
                if p.is_dir():
                    p.rmdir()
                elif p.stat().st_size == 0:
                    p.unlink()
        self.created_paths.clear()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task, keeping a reference so it is not garbage collected."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def is_terminal_reported(self, uid: str) -> bool:
        return uid in self._terminal_reported

    def mark_terminal_reported(self, uid: str) -> None:
        self._terminal_reported.add(uid)

    # ---------------------------------------------------------------- node
    def _node_status(self) -> JSON:
        t = now()

        def cond(ctype: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }

        uname = platform.uname()
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "stagecoach node agent is posting ready"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "stagecoach",
                "systemUUID": "stagecoach",
                "bootID": "stagecoach",
                "kernelVersion": uname.release,
                "osImage": "stagecoach test node agent (host processes)",
                "containerRuntimeVersion": "stagecoach://0",
                "kubeletVersion": "v0.0.0-stagecoach",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64" if uname.machine == "x86_64" else uname.machine,
            },
        }

    async def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "stagecoach.dev/node-agent": "true",
                },
            },
        }
        try:
            await self.call(self.kube.create, "/api/v1/nodes", node)
        except ApiError as err:
            if err.status != 409:
                raise
        await self.post_node_status()

    async def post_node_status(self) -> None:
        await self.call(
            self.kube.patch,
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": self._node_status()},
        )

    async def _heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        tick = 0
        while True:
            try:
                try:
                    await self.call(
                        self.kube.patch,
                        path,
                        {"spec": {"renewTime": now_micro(), "holderIdentity": self.node_name}},
                    )
                except ApiError as err:
                    if err.status != 404:
                        raise
                    node = await self.call(self.kube.get, f"/api/v1/nodes/{self.node_name}")
                    lease = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": self.node_name,
                            "namespace": "kube-node-lease",
                            "ownerReferences": [
                                {
                                    "apiVersion": "v1",
                                    "kind": "Node",
                                    "name": self.node_name,
                                    "uid": node["metadata"]["uid"],
                                }
                            ],
                        },
                        "spec": {
                            "holderIdentity": self.node_name,
                            "leaseDurationSeconds": LEASE_SECONDS,
                            "renewTime": now_micro(),
                        },
                    }
                    await self.call(self.kube.create, path.rsplit("/", 1)[0], lease)
                if tick % 3 == 0:
                    await self.post_node_status()
            except Exception as err:
                log.warning("heartbeat failed: %s", err)
            tick += 1
            await asyncio.sleep(10)

    # ---------------------------------------------------------------- pods
    def _watch_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking list+watch of this node's pods, feeding events to the event loop."""
        selector = f"spec.nodeName={self.node_name}"
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    lst = self.kube.get("/api/v1/pods", fieldSelector=selector)
                    rv = lst["metadata"]["resourceVersion"]
                    for pod in lst["items"]:
                        loop.call_soon_threadsafe(self.on_pod, "ADDED", pod)
                for ev in self.kube.watch(
                    "/api/v1/pods", fieldSelector=selector, resourceVersion=rv, timeout_seconds=240
                ):
                    obj = ev.get("object", {})
                    if ev["type"] == "ERROR":
                        rv = None  # e.g. 410 Gone: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        loop.call_soon_threadsafe(self.on_pod, ev["type"], obj)
            except Exception as err:  # apiserver gone or restarted: back off and relist
                log.warning("pod watch failed: %s", err)
                rv = None
                self._stop_wait(1.0)

    def _stop_wait(self, seconds: float) -> None:
        threading.Event().wait(seconds)

    def on_pod(self, etype: str, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        key = (meta["namespace"], meta["name"])
        worker = self.workers.get(uid)
        if etype == "DELETED":
            if worker is not None:
                self.workers.pop(uid, None)
                if self.by_name.get(key) is worker:
                    self.by_name.pop(key, None)
                if worker.task is not None and not worker.finished:
                    worker.task.cancel()
                shutil.rmtree(worker.dir, ignore_errors=True)
            return
        if worker is not None:
            worker.update(pod)
            if worker.finished and meta.get("deletionTimestamp"):
                self.spawn(self.delete_pod(pod))
            return
        phase = pod.get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            # Finished before we (re)started: nothing to run, but honour deletion.
            if meta.get("deletionTimestamp"):
                self.spawn(self.delete_pod(pod))
            return
        if pod.get("status", {}).get("startTime") and pod["spec"].get(
                "restartPolicy", "Always") == "Never":
            # Started by an earlier agent process whose containers died with it (as
            # after a node reboot): a kubelet reports them lost, it never reruns them.
            self.spawn(self.mark_lost(pod))
            return
        worker = PodWorker(self, pod)
        self.workers[uid] = worker
        self.by_name[key] = worker
        worker.start()

    async def mark_lost(self, pod: JSON) -> None:
        """Fail a pod whose containers this node no longer has (ContainerStatusUnknown,
        exit 137, the kubelet's own wording)."""
        meta = pod["metadata"]
        term = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated"}
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                     "ready": False, "restartCount": 0, "started": False,
                     "state": {"terminated": term}} for c in pod["spec"].get("containers", [])]
        inits = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                  "ready": False, "restartCount": 0, "started": False,
                  "state": {"terminated": term}}
                 for c in pod["spec"].get("initContainers", [])]
        status = {"phase": "Failed", "reason": "ContainerStatusUnknown",
                  "message": "the node agent restarted; the pod's containers were lost",
                  "containerStatuses": statuses, "initContainerStatuses": inits}
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        log.info("pod %s/%s: lost in a node agent restart: Failed", meta["namespace"],
                 meta["name"])
        self.mark_terminal_reported(meta["uid"])
        try:
            await self.call(self.kube.patch, path, {"status": status}, strategic=True)
        except ApiError as err:
            if err.status != 404:
                log.warning("pod %s: status patch failed: %s", path, err)

    async def delete_pod(self, pod: JSON) -> None:
        """Final delete with grace 0, as the kubelet does once containers are gone."""
        meta = pod["metadata"]
        if meta["uid"] in self._deleted:
            return
        self._deleted.add(meta["uid"])
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            await self.call(self.kube.delete, path, body)
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("delete %s failed: %s", path, err)

    # ---------------------------------------------------------------- kubelet API
    async def _serve(self) -> asyncio.Server:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the apiserver (kubelet client cert)
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=ctx)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()).strip():
                pass
            parts = request.decode(errors="replace").split()
            if len(parts) < 2 or parts[0] != "GET":
                await self._respond(writer, 405, b"method not allowed\n")
                return
            url = urllib.parse.urlsplit(parts[1])
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            segs = [urllib.parse.unquote(s) for s in url.path.strip("/").split("/")]
            if segs == ["healthz"]:
                await self._respond(writer, 200, b"ok")
            elif len(segs) == 4 and segs[0] == "containerLogs":
                await self._logs(writer, segs[1], segs[2], segs[3], query)
            else:
                await self._respond(writer, 404, b"not supported by the stagecoach node agent\n")
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, code: int, body: bytes) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(code, "Error")
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    async def _logs(
        self, writer: asyncio.StreamWriter, ns: str, pod: str, container: str, q: dict[str, str]
    ) -> None:
        worker = self.by_name.get((ns, pod))
        runs = worker.runs.get(container) if worker else None
        if not runs:
            await self._respond(
                writer,
                404,
                f"container {container} in {ns}/{pod} not found or not started\n".encode(),
            )
            return
        if q.get("previous") in ("true", "1"):
            if len(runs) < 2:
                await self._respond(writer, 400, b"previous terminated container not found\n")
                return
            run = runs[-2]
        else:
            run = runs[-1]
        data = run.log_path.read_bytes() if run.log_path.exists() else b""
        if "tailLines" in q:
            n = int(q["tailLines"])
            data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
        limit = int(q["limitBytes"]) if "limitBytes" in q else None
        if limit is not None:
            data = data[:limit]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )

        async def chunk(b: bytes) -> None:
            if b:
                writer.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
                await writer.drain()

        await chunk(data)
        sent = len(data)
        if q.get("follow") in ("true", "1") and (limit is None or sent < limit):
            offset = run.log_path.stat().st_size if run.log_path.exists() else 0
            with open(run.log_path, "rb") as fh:
                fh.seek(offset)
                while True:
                    finished = run.done.is_set()
                    more = fh.read(65536)
                    if limit is not None:
                        more = more[: limit - sent]
                    await chunk(more)
                    sent += len(more)
                    if (limit is not None and sent >= limit) or (finished and not more):
                        break
                    if not more:
                        await asyncio.sleep(0.2)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    # ---------------------------------------------------------------- main
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        (self.root_dir / "pods").mkdir(parents=True, exist_ok=True)
        await self.start_warm_fork()
        server = await self._serve()
        await self.register()
        heartbeat = asyncio.create_task(self._heartbeat())
        threading.Thread(
            target=self._watch_thread, args=(loop,), daemon=True, name="pod-watch"
        ).start()
        log.info("node %s ready; kubelet endpoint https://127.0.0.1:%s", self.node_name, self.port)
        await self._stop.wait()
        log.info("shutting down: killing all pod processes")
        heartbeat.cancel()
        server.close()
        for worker in list(self.workers.values()):
            worker.stopping = True
            worker._kill_all(signal.SIGKILL)
            if worker.task is not None:
                worker.task.cancel()
        await asyncio.sleep(0.2)
        self.cleanup_host_paths()
        self.pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stagecoach test node agent")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--port", type=int, required=True, help="kubelet HTTPS port")
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--client-ca", type=Path, required=True)
    parser.add_argument("--root-dir", type=Path, required=True)
    parser.add_argument(
        "--pass-env",
        action="append",
        default=[],
        help="extra host environment variable to pass to containers",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s nodeagent %(levelname)s %(message)s",
    )
    agent = NodeAgent(
        KubeAPI.from_kubeconfig(args.kubeconfig),
        node_name=args.node_name,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        root_dir=args.root_dir,
        pass_env=DEFAULT_PASS_ENV + tuple(args.pass_env),
    )
    asyncio.run(agent.run())
    # The watch thread may be blocked in a read; do not wait for it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
