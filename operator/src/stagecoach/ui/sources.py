"""Where the web UI's runs come from: local run directories and a cluster's pipelines.

Both answer the same questions (list, version, load, control) so the server does not
care which it asks. The local source reads the ``--runs`` directory the way ``stagecoach
trace RUN_DIR`` does and controls a run the way ``stagecoach approve RUN_DIR`` does (the
owning ``stagecoach run`` process decides). The cluster source lists and reads with the
user's own kubeconfig (:mod:`stagecoach.cli.kubecontrol`, :mod:`stagecoach.operator.fetch`)
and acts as the user: a verb the API refuses comes back as that refusal. Every call here
blocks (files, ``asyncio.run`` of the API clients); the server runs them in threads.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..api import PipelineStatus
from ..engine.control import ControlError
from ..report import RunData, load_run
from .views import summary

__all__ = ["ClusterRuns", "LocalRuns", "RunNotFound"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class RunNotFound(LookupError):
    """No such run (or a malformed id)."""


def _status(path: Path) -> PipelineStatus | None:
    try:
        return PipelineStatus.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


class LocalRuns:
    """The run directories of one ``--runs`` directory (what ``stagecoach run`` made)."""

    source = "local"
    controls = ["suspend", "resume", "stop", "terminate"]

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _dir(self, name: str) -> Path:
        if not _RUN_ID.match(name) or name.startswith("."):
            raise RunNotFound(name)
        path = self.root / name
        if not path.is_dir():
            raise RunNotFound(name)
        return path

    def names(self) -> list[str]:
        """Run directories, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                 and ((p / "status.json").exists() or (p / "pipeline.yaml").exists())]
        return [p.name for p in sorted(found, key=lambda p: p.name, reverse=True)]

    def list(self) -> list[dict[str, Any]]:
        """A row per run (from its ``status.json`` only: cheap for hundreds of runs)."""
        now = datetime.now(UTC)
        rows = []
        for name in self.names():
            status = _status(self.root / name / "status.json")
            pipeline = re.sub(r"-\d{8}T\d{6}(-\d+)?$", "", name)
            rows.append(summary(f"local:{name}", pipeline, status, source="local", now=now)
                        | {"run": name})
        return rows

    def version(self, name: str) -> int:
        """Changes whenever the run writes its status or trace (mtimes, in ns)."""
        path = self._dir(name)
        stamps = [0]
        trace = path / "trace"
        files = [path / "status.json", path / "trace.jsonl",
                 *(trace.iterdir() if trace.is_dir() else ())]
        for f in files:
            with contextlib.suppress(OSError):  # written or renamed just now
                stamps.append(f.stat().st_mtime_ns)
        return max(stamps)

    def load(self, name: str) -> RunData:
        return load_run(self._dir(name))

    def control(self, name: str, verb: str) -> str:
        from ..local.control import send_control

        if verb not in self.controls:
            raise ControlError(f"a local run cannot {verb}: use stagecoach run --resume")
        return send_control(self._dir(name), verb)

    def approve(self, name: str, stage: str, decision: str, inputs: dict[str, str],
                message: str | None) -> str:
        from ..local.control import send_approval

        return send_approval(self._dir(name), stage, decision, inputs, message)


class ClusterRuns:
    """The AgentPipelines the kubeconfig's user may list, read and act on as that user."""

    source = "cluster"
    controls = ["suspend", "resume", "stop", "terminate", "retry"]

    def __init__(self, kubeconfig: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.note: str | None = None
        self._versions: dict[str, str] = {}

    @staticmethod
    def split(name: str) -> tuple[str, str]:
        ns, _, pipeline = name.partition("/")
        if not _K8S_NAME.match(ns) or not _K8S_NAME.match(pipeline):
            raise RunNotFound(name)
        return ns, pipeline

    def list(self) -> list[dict[str, Any]]:
        from ..cli.kubecontrol import list_pipelines

        items, self.note = list_pipelines(kubeconfig=self.kubeconfig)
        now = datetime.now(UTC)
        rows = []
        versions = {}
        for obj in items:
            meta = obj.get("metadata") or {}
            ns, name = meta.get("namespace") or "default", meta.get("name") or "?"
            try:
                status = PipelineStatus.model_validate(obj.get("status") or {})
            except ValidationError:
                status = None
            key = f"{ns}/{name}"
            versions[key] = str(meta.get("resourceVersion") or "")
            rows.append(summary(f"k8s:{key}", name, status, source="cluster", namespace=ns,
                                now=now) | {"run": key})
        self._versions = versions
        return rows

    def version(self, name: str) -> str:
        return self._versions.get(name, "")

    def load(self, name: str) -> RunData:
        from ..operator.fetch import fetch_run

        ns, pipeline = self.split(name)
        try:
            return fetch_run(pipeline, ns, self.kubeconfig)
        except ValueError as e:
            raise RunNotFound(str(e)) from None

    def control(self, name: str, verb: str) -> str:
        from ..cli import kubecontrol

        ns, pipeline = self.split(name)
        if verb == "retry":
            return kubecontrol.retry(pipeline, namespace=ns, kubeconfig=self.kubeconfig)
        if verb not in self.controls:
            raise ControlError(f"unknown control {verb!r}")
        return kubecontrol.control(pipeline, verb, namespace=ns, kubeconfig=self.kubeconfig)

    def approve(self, name: str, stage: str, decision: str, inputs: dict[str, str],
                message: str | None) -> str:
        from ..cli import kubecontrol

        ns, pipeline = self.split(name)
        return kubecontrol.approve(pipeline, stage, decision, inputs, message, namespace=ns,
                                   kubeconfig=self.kubeconfig)
