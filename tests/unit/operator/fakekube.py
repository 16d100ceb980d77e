"""An in-memory stand-in for :class:`stagecoach.operator.kube.Kube` (same methods),
so reconciles run without a cluster."""

from __future__ import annotations

import copy
from typing import Any

from stagecoach.operator.kube import KubeError
from stagecoach.store import Conflict

from tests.unit.mergepatch import merge_data


class FakeKube:
    def __init__(self) -> None:
        self.pipelines: dict[tuple[str, str], dict[str, Any]] = {}
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.providers: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.job_creates: list[str] = []
        self.reject_jobs: dict[str, tuple[int, str]] = {}
        """Job name → (HTTP status, message) the API server answers its create with."""
        self.approvals: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests = 0
        self.rv = 0

    def _next(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def get_pipeline(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.pipelines.get((ns, name)))

    async def patch_pipeline_status(self, ns: str, name: str,
                                    status: dict[str, Any]) -> str | None:
        self.status_patches.append(status)
        obj = self.pipelines[(ns, name)]
        merged = dict(obj.get("status") or {})
        for k, v in status.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        obj["status"] = merged
        return self._next()

    async def patch_approval_status(self, ns: str, name: str,
                                    status: dict[str, Any]) -> None:
        obj = self.approvals.get((ns, name))
        if obj is not None:
            obj["status"] = {**(obj.get("status") or {}), **status}

    async def get_template(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.templates.get((ns, name)))

    async def list_providers(self, ns: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(v) for (n, _), v in self.providers.items() if n == ns]

    async def patch_provider_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        self.providers[(ns, name)]["status"] = status

    @staticmethod
    def _match(obj: dict[str, Any], selector: str) -> bool:
        labels = obj["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, v in
                   (part.split("=", 1) for part in selector.split(",") if part))

    async def list_jobs(self, ns: str | None, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(j) for (n, _), j in self.jobs.items()
                if (ns is None or n == ns) and self._match(j, selector)]

    async def list_jobs_at(self, ns: str, selector: str
                           ) -> tuple[list[dict[str, Any]], str | None]:
        return await self.list_jobs(ns, selector), str(self.rv)

    async def create_job(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (ns, body["metadata"]["name"])
        self.job_creates.append(key[1])
        if key[1] in self.reject_jobs:
            status, message = self.reject_jobs[key[1]]
            raise KubeError(f"create job {key[1]}: HTTP {status}: {message}", status, message)
        if key in self.jobs:
            raise Conflict("exists")
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = f"job-uid-{self._next()}"
        self.jobs[key] = obj
        return copy.deepcopy(obj)

    async def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get((ns, name)))

    async def delete_job(self, ns: str, name: str, uid: str | None = None) -> None:
        job = self.jobs.get((ns, name))
        if job is not None and (uid is None or job["metadata"].get("uid") == uid):
            self.jobs.pop((ns, name), None)

    async def delete_pod(self, ns: str, name: str, uid: str | None = None) -> None:
        self.pods.pop((ns, name), None)

    async def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for (n, _), p in self.pods.items()
                if n == ns and self._match(p, selector)]

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.configmaps.get((namespace, name)))

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.configmaps:
            raise Conflict("exists")
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = self._next()
        self.configmaps[key] = obj
        return copy.deepcopy(obj)

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        old = self.configmaps[key]
        if body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = self._next()
        self.configmaps[key] = obj
        return copy.deepcopy(obj)

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of ``data``/``binaryData`` (what the store sends)."""
        key = (namespace, name)
        old = self.configmaps.get(key)
        if old is None:
            return None
        obj = merge_data(old, patch)
        obj["metadata"]["resourceVersion"] = self._next()
        self.configmaps[key] = obj
        return copy.deepcopy(obj)

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(c) for (n, _), c in self.configmaps.items()
                if n == namespace and self._match(c, selector)]

    async def post_event(self, ns: str, involved: dict[str, Any], type_: str, reason: str,
                         message: str) -> None:
        self.events.append((type_, reason, message))

    async def ensure_stage_rbac(self, ns: str, account: str) -> None:
        pass

    # -- test helpers: what the Job controller and the kubelet would do ---------------
    def finish_job(self, ns: str, name: str, *, termination: str, container: str = "runner",
                   exit_code: int = 0) -> None:
        job = self.jobs[(ns, name)]
        cond = "Complete" if exit_code == 0 else "Failed"
        job["status"] = {"conditions": [{"type": cond, "status": "True"}],
                         "startTime": "2026-01-01T00:00:00Z",
                         "completionTime": "2026-01-01T00:00:01Z"}
        labels = {**job["spec"]["template"]["metadata"]["labels"],
                  "batch.kubernetes.io/job-name": name}
        self.pods[(ns, name + "-pod")] = {
            "metadata": {"name": name + "-pod", "namespace": ns, "labels": labels,
                         "resourceVersion": self._next(),
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "ownerReferences": [{"kind": "Job", "name": name,
                                              "uid": job["metadata"].get("uid")}]},
            "spec": {"containers": [{"name": container}]},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                       "containerStatuses": [{"name": container, "state": {"terminated": {
                           "exitCode": exit_code, "message": termination}}}]},
        }
