"""The operator's one door to the Kubernetes API.

Every call the operator makes goes through :class:`Kube`: pipelines and their status,
templates, providers and their status, StageApprovals' status, Jobs, Pods, ConfigMaps
(it implements the :class:`~stagecoach.store.ConfigMapClient` seam, so the operator's
store uses it too), Events, and the stage ServiceAccount's RBAC. Bodies are plain
dicts; HTTP errors become :class:`KubeError` (``status`` kept) or
:class:`~stagecoach.store.Conflict` (409). The rest of the operator never sees a URL.
kopf only watches; it never writes for us.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import GROUP, VERSION
from ..store import Conflict, StoreError
from ..store.configmap import RestClient

__all__ = ["Kube", "KubeError"]

log = logging.getLogger("stagecoach.operator")

_CR = f"/apis/{GROUP}/{VERSION}/namespaces"
_MERGE = "application/merge-patch+json"
_LEASES = "/apis/coordination.k8s.io/v1/namespaces/{}/leases"
_seq = itertools.count()


class KubeError(StoreError):
    """An API call failed."""

    def __init__(self, message: str, status: int = 0, api_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.api_message = api_message or message
        """The API server's own message (``Status.message``)."""


def _fail(status: int, data: Any, what: str) -> KubeError:
    msg = data.get("message") if isinstance(data, dict) else str(data)
    if status == 409:
        return Conflict(f"{what}: {msg}")  # type: ignore[return-value]
    return KubeError(f"{what}: HTTP {status}: {msg}", status, str(msg))


def namespace_terminating(e: BaseException) -> bool:
    """Whether the API server refused a create because its namespace is being deleted
    (a 403 that is no permission problem: the namespace's objects go with it)."""
    return isinstance(e, KubeError) and e.status == 403 and "being terminated" in (
        e.api_message)


class Kube:
    """Typed-enough wrappers over :class:`~stagecoach.store.configmap.RestClient`."""

    def __init__(self, rest: RestClient) -> None:
        self.rest = rest
        self.requests = 0
        """API requests made (for the benchmark: requests per stage)."""
        self.on_write: Callable[[dict[str, Any]], None] | None = None
        """Called with the object a pipeline-status patch or a Job creation returns
        (the watch-fed caches of :mod:`.cache` keep it: never older than our write)."""

    def _wrote(self, data: Any) -> None:
        if self.on_write is not None and isinstance(data, dict) and data.get("metadata"):
            self.on_write(data)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster config in a pod, else ``kubeconfig`` / ``$KUBECONFIG``."""
        return cls(await RestClient.connect(kubeconfig))

    async def close(self) -> None:
        """Close connections."""
        await self.rest.close()

    async def _call(self, method: str, path: str, body: Any = None, *,
                    query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json", what: str = "",
                    missing_ok: bool = False) -> Any:
        self.requests += 1
        status, data = await self.rest.request(method, path, body, query, content_type)
        if status == 404 and missing_ok:
            return None
        if status >= 300:
            raise _fail(status, data, what or f"{method} {path}")
        return data

    # -- custom resources ----------------------------------------------------------------
    async def get_pipeline(self, ns: str, name: str) -> dict[str, Any] | None:
        """An AgentPipeline, or None."""
        data = await self._call("GET", f"{_CR}/{ns}/agentpipelines/{name}", missing_ok=True)
        return dict(data) if data else None

    async def patch_pipeline_status(self, ns: str, name: str,
                                    status: dict[str, Any]) -> str | None:
        """Merge-patch the status subresource; returns the new resourceVersion."""
        data = await self._call("PATCH", f"{_CR}/{ns}/agentpipelines/{name}/status",
                                {"status": status}, content_type=_MERGE, missing_ok=True)
        self._wrote(data)
        version = (data or {}).get("metadata", {}).get("resourceVersion")
        return str(version) if version else None

    async def delete_pipeline(self, ns: str, name: str, uid: str) -> None:
        """Delete an AgentPipeline (that one: a precondition on ``uid``); its Jobs, pods
        and ConfigMaps go with it (owner references, background propagation)."""
        with contextlib.suppress(Conflict):
            await self._call("DELETE", f"{_CR}/{ns}/agentpipelines/{name}",
                             {"propagationPolicy": "Background",
                              "preconditions": {"uid": uid}}, missing_ok=True)

    async def get_template(self, ns: str, name: str) -> dict[str, Any] | None:
        """An AgentPipelineTemplate, or None."""
        data = await self._call("GET", f"{_CR}/{ns}/agentpipelinetemplates/{name}",
                                missing_ok=True)
        return dict(data) if data else None

    async def list_providers(self, ns: str) -> list[dict[str, Any]]:
        """Every ModelProvider of the namespace."""
        data = await self._call("GET", f"{_CR}/{ns}/modelproviders")
        return list(data.get("items") or [])

    async def patch_provider_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a ModelProvider's status."""
        await self._call("PATCH", f"{_CR}/{ns}/modelproviders/{name}/status",
                         {"status": status}, content_type=_MERGE, missing_ok=True)

    async def patch_approval_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a StageApproval's status (gone already is fine)."""
        await self._call("PATCH", f"{_CR}/{ns}/stageapprovals/{name}/status",
                         {"status": status}, content_type=_MERGE, missing_ok=True)

    # -- Jobs and Pods -------------------------------------------------------------------
    async def list_jobs(self, ns: str | None, selector: str) -> list[dict[str, Any]]:
        """Jobs matching ``selector`` (``ns`` None: all namespaces)."""
        path = f"/apis/batch/v1/namespaces/{ns}/jobs" if ns else "/apis/batch/v1/jobs"
        data = await self._call("GET", path, query=[("labelSelector", selector)])
        return list(data.get("items") or [])

    async def list_jobs_at(self, ns: str, selector: str
                           ) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs of ``ns`` matching ``selector``, and the LIST's resourceVersion (each
        item gets ``kind``/``apiVersion``, as watch events carry them)."""
        data = await self._call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs",
                                query=[("labelSelector", selector)])
        items = [{"apiVersion": "batch/v1", "kind": "Job", **i}
                 for i in data.get("items") or []]
        return items, (data.get("metadata") or {}).get("resourceVersion")

    async def create_job(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Job; :class:`~stagecoach.store.Conflict` when it already exists."""
        data = dict(await self._call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", body,
                                     what=f"create job {body['metadata']['name']}"))
        self._wrote(data)
        return data

    async def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        """A Job, or None."""
        data = await self._call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                                missing_ok=True)
        return dict(data) if data else None

    async def delete_job(self, ns: str, name: str, uid: str | None = None) -> None:
        """Delete a Job and its pods (background propagation); gone already is fine.
        ``uid``: only that object (a precondition), not a newer one of the same name."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        # Conflict: the precondition failed, a different Job of that name: not ours.
        with contextlib.suppress(Conflict):
            await self._call("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                             body, missing_ok=True)

    async def delete_pod(self, ns: str, name: str, uid: str | None = None) -> None:
        """Delete a pod (``uid``: only that one); gone already is fine."""
        body: dict[str, Any] = {"preconditions": {"uid": uid}} if uid else {}
        with contextlib.suppress(Conflict):
            await self._call("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body or None,
                             missing_ok=True)

    async def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching ``selector``."""
        data = await self._call("GET", f"/api/v1/namespaces/{ns}/pods",
                                query=[("labelSelector", selector)])
        return list(data.get("items") or [])

    # -- ConfigMaps (the ConfigMapClient seam) --------------------------------------------
    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        data = await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                missing_ok=True)
        return dict(data) if data else None

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                     body, what=f"create configmap {body['metadata']['name']}"))

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return dict(await self._call("PUT", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                     body, what=f"replace configmap {name}"))

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        data = await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps",
                                query=[("labelSelector", selector)])
        return list(data.get("items") or [])

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        data = await self._call("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                                patch, content_type=_MERGE, what=f"patch configmap {name}",
                                missing_ok=True)
        return dict(data) if data else None

    async def delete_configmap(self, namespace: str, name: str) -> None:
        """Delete a ConfigMap (expired stage-cache entries); gone already is fine."""
        await self._call("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                         missing_ok=True, what=f"delete configmap {name}")

    # -- the leader-election Lease --------------------------------------------------------
    async def get_lease(self, ns: str, name: str) -> dict[str, Any] | None:
        """A coordination.k8s.io/v1 Lease, or None."""
        data = await self._call("GET", f"{_LEASES.format(ns)}/{name}", missing_ok=True)
        return dict(data) if data else None

    async def create_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Lease (:class:`~stagecoach.store.Conflict` when it exists)."""
        return dict(await self._call("POST", _LEASES.format(ns), body,
                                     what=f"create lease {body['metadata']['name']}"))

    async def replace_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a Lease at its resourceVersion (Conflict when someone wrote first)."""
        name = body["metadata"]["name"]
        return dict(await self._call("PUT", f"{_LEASES.format(ns)}/{name}", body,
                                     what=f"replace lease {name}"))

    # -- Events --------------------------------------------------------------------------
    async def post_event(self, ns: str, involved: dict[str, Any], type_: str, reason: str,
                         message: str) -> None:
        """A core/v1 Event on ``involved`` (errors are logged, never raised)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = involved.get("metadata", {})
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{datetime.now(UTC):%s%f}{next(_seq)}",
                         "namespace": ns},
            "involvedObject": {"apiVersion": involved.get("apiVersion"),
                               "kind": involved.get("kind"), "name": meta.get("name"),
                               "namespace": ns, "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "stagecoach-operator"},
            "reportingComponent": "stagecoach.dev/operator",
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{ns}/events", body)
        except StoreError as e:
            if namespace_terminating(e):
                log.info("no event %s on %s/%s: its namespace is being deleted", reason, ns,
                         meta.get("name"))
                return
            log.warning("cannot post event %s on %s: %s", reason, meta.get("name"), e)

    # -- the stage ServiceAccount --------------------------------------------------------
    async def ensure_stage_rbac(self, ns: str, account: str) -> None:
        """The stage ServiceAccount (no automounted token), its Role (read ConfigMaps,
        update the ones prepared for an attempt: :data:`~.policy.STAGE_RULES`) and
        RoleBinding. A Role left with other rules (an older version) is corrected."""
        from .policy import STAGE_RULES

        objects: list[tuple[str, str, dict[str, Any]]] = [
            ("/api/v1", "serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": account, "labels": {"app.kubernetes.io/managed-by":
                                                         "stagecoach"}},
                "automountServiceAccountToken": False}),
            ("/apis/rbac.authorization.k8s.io/v1", "roles", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": account},
                "rules": STAGE_RULES}),
            ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]}),
        ]
        for base, plural, body in objects:
            path = f"{base}/namespaces/{ns}/{plural}"
            got = await self._call("GET", f"{path}/{account}", missing_ok=True)
            if got is None:
                with contextlib.suppress(Conflict):
                    await self._call("POST", path, body)
            elif plural == "roles" and got.get("rules") != body["rules"]:
                await self._call("PATCH", f"{path}/{account}", {"rules": body["rules"]},
                                 content_type=_MERGE)

    # -- the stage-writes admission policy (cluster-scoped) ------------------------------
    async def ensure_cluster_objects(self, objects: list[dict[str, Any]]) -> None:
        """Create or update cluster-scoped admissionregistration objects (the stage
        policy and its binding) so that they equal ``objects``' specs."""
        for body in objects:
            plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
                      "ValidatingAdmissionPolicyBinding":
                          "validatingadmissionpolicybindings"}[body["kind"]]
            path = f"/apis/admissionregistration.k8s.io/v1/{plural}"
            name = body["metadata"]["name"]
            got = await self._call("GET", f"{path}/{name}", missing_ok=True)
            if got is None:
                with contextlib.suppress(Conflict):
                    await self._call("POST", path, body)
            elif got.get("spec") != body["spec"]:
                await self._call("PATCH", f"{path}/{name}", {"spec": body["spec"]},
                                 content_type=_MERGE)
