"""Run control for cluster pipelines (DESIGN §9): the CLI's one door to the API for it.

``stagecoach suspend|resume|stop|terminate NAME`` merge-patches ``spec.suspend`` /
``spec.shutdown`` of the AgentPipeline (the only spec fields the CRD lets change);
``approve|reject NAME STAGE`` creates a ``StageApproval`` naming the user the API server
authenticated (a ``SelfSubjectReview`` says who that is; the chart's admission policy
refuses any other name) and waits for the operator's answer in its status; ``retry
NAME`` creates ``NAME-r<n>`` with OLD's spec and ``resumeFrom: {name: NAME}``.

Everything is done with the user's own credentials (``--kubeconfig``, ``$KUBECONFIG``,
or the in-cluster account), so RBAC decides what they may do: a refusal by the API
server (403, 404, a CRD rule's 422, the admission policy) comes back as a
:class:`ControlError` carrying the API server's own message, which the CLI prints on
one line and exits 1. The checks made before writing (a finished pipeline, a verb that
would change nothing, a stage that is not waiting) are pure functions here, so they
are tested without a cluster; for approvals they only save a round trip: the operator's
verdict in the StageApproval's status is the authority.

A verb whose result already holds (``resume`` of a pipeline that is not suspended,
``stop`` of one already stopping) and any verb on a finished pipeline is refused (exit
1) with a sentence saying so, as the local shell refuses them; ``stop`` after
``terminate`` goes to the API server, whose CRD rule says why it cannot be.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from .. import API_VERSION, GROUP, VERSION
from ..api import ApprovalSpec, name_problem
from ..engine.control import ControlError, approval_inputs
from ..store import StoreError
from ..store.configmap import RestClient, label_value

__all__ = [
    "approval_body",
    "approval_iteration",
    "approval_outcome",
    "approve",
    "control",
    "control_patch",
    "list_pipelines",
    "retry",
    "retry_base",
    "retry_body",
    "retry_name",
    "retry_refusal",
]

FINISHED = ("Succeeded", "Failed", "Cancelled", "Invalid")
_CR = f"/apis/{GROUP}/{VERSION}/namespaces"
_WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
_MERGE = "application/merge-patch+json"
_MAX_NAME = 253
_RETRY_TRIES = 100
_POLL = 0.25
_TRACKING_LABELS = ("app.kubernetes.io/instance",)
_TRACKING_PREFIXES = ("argocd.argoproj.io/",)
T = TypeVar("T")


# -- decisions (pure) ------------------------------------------------------------------

def _phase(body: Mapping[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def _finished(body: Mapping[str, Any]) -> str | None:
    phase = _phase(body)
    if phase not in FINISHED:
        return None
    reason = (body.get("status") or {}).get("reason")
    return f"{phase}, {reason}" if reason and reason != phase else str(phase)


def control_patch(verb: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The merge patch for ``verb`` on pipeline ``body`` and the line to print; a
    :class:`ControlError` when it cannot or would not change anything."""
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    suspended, shutdown = bool(spec.get("suspend")), spec.get("shutdown")
    ending = {"Stop": "stopping", "Terminate": "terminating"}.get(shutdown or "")
    finished = _finished(body)
    if finished:
        raise ControlError(f"agentpipeline/{name} already finished ({finished}): "
                           f"nothing to {verb}")
    if verb == "suspend":
        if suspended:
            raise ControlError(f"agentpipeline/{name} is already suspended")
        if ending:
            raise ControlError(f"agentpipeline/{name} is {ending}: suspend would change "
                               "nothing")
        return {"spec": {"suspend": True}}, f"agentpipeline/{name} suspended"
    if verb == "resume":
        if not suspended:
            raise ControlError(f"agentpipeline/{name} is not suspended")
        return {"spec": {"suspend": False}}, f"agentpipeline/{name} resumed"
    if verb in ("stop", "terminate"):
        mode = "Stop" if verb == "stop" else "Terminate"
        if shutdown == mode:
            raise ControlError(f"agentpipeline/{name} is already {ending}")
        # Terminate → Stop is the API server's to refuse (the CRD's shutdown rule).
        return {"spec": {"shutdown": mode}}, (
            f"agentpipeline/{name} stopping: nothing new starts; running attempts and "
            "finally finish" if mode == "Stop" else
            f"agentpipeline/{name} terminating: running attempts are stopped; finally is "
            "skipped")
    raise ControlError(f"unknown verb {verb!r} (suspend, resume, stop or terminate)")


def _stage_specs(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The inline stages and finally stages (None: the pipeline uses a template)."""
    spec = body.get("spec") or {}
    if spec.get("stages") is None:
        return None
    return [*(spec.get("stages") or []), *(spec.get("finally") or [])]


def approval_iteration(body: Mapping[str, Any], stage: str, decision: str,
                       inputs: Mapping[str, str]) -> int:
    """The iteration of ``stage`` that waits for a decision; a :class:`ControlError`
    when the pipeline's own spec and status already show the operator would refuse
    (finished, no such stage, not an approval stage, not waiting, bad inputs)."""
    name = body["metadata"]["name"]
    finished = _finished(body)
    if finished:
        raise ControlError(f"pipeline {name} already finished ({finished}); stage {stage} "
                           "is not waiting")
    specs = _stage_specs(body)
    if specs is not None:
        gates = ", ".join(s["name"] for s in specs if s.get("approval") is not None) or "none"
        found = next((s for s in specs if s.get("name") == stage), None)
        if found is None:
            raise ControlError(f"pipeline {name} has no stage {stage!r} (approval stages: "
                               f"{gates})")
        if found.get("approval") is None:
            raise ControlError(f"stage {stage} is not an approval stage (approval stages: "
                               f"{gates})")
        try:
            gate = ApprovalSpec.model_validate(found["approval"])
        except ValidationError:
            gate = None  # the operator judges it (and fails the pipeline Invalid)
        if gate is not None:
            _, problems = approval_inputs(gate, inputs, decision)
            if problems:
                raise ControlError(f"stage {stage}: " + "; ".join(problems))
    status = body.get("status") or {}
    run = next((s for s in status.get("stages") or [] if s.get("name") == stage), None)
    if run is None:
        if status.get("stages"):
            raise ControlError(f"pipeline {name} has no stage {stage!r}")
        raise ControlError(f"pipeline {name} has not started yet; stage {stage} is not "
                           "waiting")
    if run.get("phase") != "Waiting" or run.get("reason") != "AwaitingApproval":
        detail = f", {run['reason']}" if run.get("reason") else ""
        raise ControlError(f"stage {stage} is not waiting for approval (it is "
                           f"{run.get('phase', 'Pending')}{detail})")
    return int(run.get("iteration") or 1)


def approval_body(pipeline: str, stage: str, iteration: int | None, decision: str,
                  inputs: Mapping[str, str], message: str | None,
                  approver: str) -> dict[str, Any]:
    """The StageApproval to create (its name generated by the API server)."""
    labels = {"stagecoach.dev/pipeline": label_value(pipeline), "stagecoach.dev/stage": stage}
    if iteration is not None:
        labels["stagecoach.dev/iteration"] = str(iteration)
    spec: dict[str, Any] = {"pipeline": pipeline, "stage": stage, "decision": decision,
                            "inputs": dict(inputs), "approver": approver}
    if iteration is not None:
        spec["iteration"] = iteration
    if message:
        spec["message"] = message
    return {"apiVersion": API_VERSION, "kind": "StageApproval",
            "metadata": {"generateName": f"{pipeline}-{stage}-"[:_MAX_NAME - 5],
                         "labels": labels},
            "spec": spec}


def approval_outcome(name: str, status: Mapping[str, Any] | None) -> str | None:
    """The line to print for an answered StageApproval, None while unanswered; a
    :class:`ControlError` with the operator's message when it refused."""
    status = status or {}
    phase = status.get("phase")
    if phase == "Accepted":
        return f"stageapproval/{name}: {status.get('message') or 'accepted'}"
    if phase == "Refused":
        reason = f" ({status['reason']})" if status.get("reason") else ""
        raise ControlError(f"stageapproval/{name} refused{reason}: "
                           f"{status.get('message') or 'no reason given'}")
    return None


def retry_refusal(body: Mapping[str, Any]) -> None:
    """A :class:`ControlError` when ``body`` cannot be retried (yet)."""
    name = body["metadata"]["name"]
    phase = _phase(body) or "Pending"
    if phase == "Succeeded":
        raise ControlError(f"agentpipeline/{name} Succeeded: nothing to retry")
    if phase not in FINISHED:
        raise ControlError(f"agentpipeline/{name} is still {phase}: retry it once it has "
                           f"finished (stagecoach stop {name} ends it)")


def retry_base(body: Mapping[str, Any]) -> str:
    """The name retries count from: OLD itself, or, when OLD is ``X-r<n>`` and resumes
    from ``X``, ``X`` (a retry of a retry is ``X-r<n+1>``, not ``X-r1-r1``)."""
    name = str(body["metadata"]["name"])
    source = ((body.get("spec") or {}).get("resumeFrom") or {}).get("name")
    if source and re.fullmatch(re.escape(source) + r"-r\d+", name):
        return str(source)
    return name


def retry_name(base: str, n: int) -> str:
    """``<base>-r<n>``, ``base`` cut so that the name stays a valid object name."""
    suffix = f"-r{n}"
    return base[:_MAX_NAME - len(suffix)].rstrip("-.") + suffix


def retry_body(old: Mapping[str, Any], new_name: str) -> dict[str, Any]:
    """The pipeline that retries ``old``: its spec without the run-control fields, plus
    ``resumeFrom: old``; its labels but a GitOps tool's tracking labels (Argo CD would
    count the retry as part of its application and prune it), not its annotations
    (``kubectl apply``'s and Argo CD's would describe another object)."""
    spec = {k: v for k, v in (old.get("spec") or {}).items()
            if k not in ("suspend", "shutdown", "resumeFrom")}
    spec["resumeFrom"] = {"name": old["metadata"]["name"]}
    meta: dict[str, Any] = {"name": new_name}
    labels = {k: v for k, v in (old["metadata"].get("labels") or {}).items()
              if k not in _TRACKING_LABELS and not k.startswith(_TRACKING_PREFIXES)
              and ".fluxcd.io/" not in k}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": "AgentPipeline", "metadata": meta,
            "spec": spec}


# -- the shell --------------------------------------------------------------------------

class _Forbidden(ControlError):
    """The API server's 403: RBAC does not allow the request."""


class _Api:
    """The user's connection: each non-2xx answer becomes a ControlError with the API
    server's message (``missing`` phrases a 404 instead)."""

    def __init__(self, rest: RestClient, namespace: str) -> None:
        self.rest = rest
        self.ns = namespace

    async def call(self, method: str, path: str, body: Any = None, *,
                   content_type: str = "application/json",
                   missing: str | None = None, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        try:
            status, data = await self.rest.request(method, path, body,
                                                   content_type=content_type)
        except StoreError as e:
            raise ControlError(f"cannot reach the cluster: {e}") from None
        if status == 404 and missing is not None:
            raise ControlError(missing)
        if status >= 300 and status not in ok:
            msg = data.get("message") if isinstance(data, dict) else None
            error = _Forbidden if status == 403 else ControlError
            raise error(str(msg or f"HTTP {status} from the API server"))
        return status, data

    def path(self, plural: str, name: str | None = None) -> str:
        base = f"{_CR}/{self.ns}/{plural}"
        return f"{base}/{name}" if name else base

    async def pipeline(self, name: str) -> dict[str, Any]:
        _, body = await self.call("GET", self.path("agentpipelines", name),
                                  missing=f"no AgentPipeline {name!r} in namespace {self.ns}")
        return dict(body)

    async def whoami(self) -> str:
        _, review = await self.call("POST", _WHOAMI, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        user = ((review or {}).get("status") or {}).get("userInfo") or {}
        if not user.get("username"):
            raise ControlError("the API server did not say who you are (SelfSubjectReview "
                               "without a username)")
        return str(user["username"])


def _namespace(namespace: str | None, kubeconfig: str | None) -> str:
    """``-n``, else ``$STAGECOACH_NAMESPACE``, else the kubeconfig context's namespace
    (in a pod: its own), else ``default``."""
    if namespace:
        return namespace
    if os.environ.get("STAGECOACH_NAMESPACE"):
        return os.environ["STAGECOACH_NAMESPACE"]
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                return f.read().strip() or "default"
        except OSError:
            return "default"
    try:
        from kubernetes_asyncio import config

        _, active = config.list_kube_config_contexts(config_file=path)
        return str(((active or {}).get("context") or {}).get("namespace") or "default")
    except Exception:  # no kubeconfig: connecting says so
        return "default"


def _missing_kubeconfig(kubeconfig: str | None) -> str | None:
    """Why there is no kubeconfig to load (None: there is one, or we run in a pod)."""
    env = os.environ.get("KUBECONFIG")
    if kubeconfig is None and env is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    paths = [kubeconfig] if kubeconfig else [p for p in (env or "~/.kube/config")
                                             .split(os.pathsep) if p]
    if any(os.path.exists(os.path.expanduser(p)) for p in paths):
        return None
    return (f"no cluster to ask: no kubeconfig at {', '.join(paths)} (give --kubeconfig or "
            "set $KUBECONFIG)")


def _run(kubeconfig: str | None, namespace: str | None,
         work: Callable[[_Api], Awaitable[T]]) -> T:
    if missing := _missing_kubeconfig(kubeconfig):
        raise ControlError(missing)

    async def main() -> T:
        try:
            rest = await RestClient.connect(kubeconfig)
        except Exception as e:  # no kubeconfig, a broken one, no in-cluster config
            raise ControlError(f"no cluster to ask ({type(e).__name__}: {e})") from None
        try:
            return await work(_Api(rest, _namespace(namespace, kubeconfig)))
        finally:
            await rest.close()

    return asyncio.run(main())


def control(name: str, verb: str, *, namespace: str | None, kubeconfig: str | None) -> str:
    """Patch spec.suspend / spec.shutdown of AgentPipeline ``name``; the line to print."""
    async def work(api: _Api) -> str:
        patch, line = control_patch(verb, await api.pipeline(name))
        await api.call("PATCH", api.path("agentpipelines", name), patch, content_type=_MERGE,
                       missing=f"no AgentPipeline {name!r} in namespace {api.ns}")
        return line

    return _run(kubeconfig, namespace, work)


def approve(name: str, stage: str, decision: str, inputs: dict[str, str],
            message: str | None, *, namespace: str | None, kubeconfig: str | None,
            wait: float = 30.0) -> str:
    """Create a StageApproval as the current user and wait up to ``wait`` seconds for
    the operator's answer: its message when Accepted, a ControlError when Refused or
    unanswered (the object stays and is judged when the operator runs). A user who may
    create StageApprovals but not read pipelines decides without the checks made before
    writing (and without an iteration: whichever is waiting)."""
    if decision not in ("Approve", "Reject"):
        raise ControlError(f"decision must be Approve or Reject, got {decision!r}")

    async def work(api: _Api) -> str:
        approver = await api.whoami()
        try:
            body: dict[str, Any] | None = await api.pipeline(name)
        except _Forbidden:
            body = None  # may decide without reading pipelines: the operator checks alone
        iteration = (approval_iteration(body, stage, decision, inputs) if body is not None
                     else None)
        _, created = await api.call("POST", api.path("stageapprovals"), approval_body(
            name, stage, iteration, decision, inputs, message, approver))
        sapr = str(created["metadata"]["name"])
        deadline = time.monotonic() + max(wait, 0.0)
        status = created.get("status")
        while True:
            line = approval_outcome(sapr, status)
            if line is not None:
                return line
            if time.monotonic() >= deadline:
                raise ControlError(
                    f"stageapproval/{sapr} is pending: the operator did not answer within "
                    f"{wait:g}s; it stays and will be judged when the operator runs (kubectl "
                    f"get stageapproval {sapr} -n {api.ns})")
            await asyncio.sleep(_POLL)
            _, obj = await api.call(
                "GET", api.path("stageapprovals", sapr),
                missing=f"stageapproval/{sapr} was deleted before the operator answered")
            status = obj.get("status")

    return _run(kubeconfig, namespace, work)


def retry(source: str, *, namespace: str | None, new_name: str | None = None,
          kubeconfig: str | None) -> str:
    """Create ``NEW`` (default ``<source>-r<n>``, the first free n) with ``source``'s
    spec and ``resumeFrom: source``; the line to print."""
    if new_name is not None and (problem := name_problem(new_name)):
        raise ControlError(f"--name {problem}")

    async def work(api: _Api) -> str:
        old = await api.pipeline(source)
        retry_refusal(old)
        if new_name is not None:
            names = [new_name]
        else:
            base = retry_base(old)
            status, listed = await api.call("GET", api.path("agentpipelines"), ok=(403,))
            taken = {i["metadata"]["name"] for i in (listed or {}).get("items", [])
                     } if status < 300 else set()
            free = (n for n in map(functools.partial(retry_name, base), itertools.count(1))
                    if n not in taken)
            names = list(itertools.islice(free, _RETRY_TRIES))
        for candidate in names:
            status, _ = await api.call("POST", api.path("agentpipelines"),
                                       retry_body(old, candidate), ok=(409,))
            if status == 409:
                if new_name is not None:
                    raise ControlError(f"agentpipeline/{new_name} already exists")
                continue
            return f"agentpipeline/{candidate} created (resumes from {source})"
        raise ControlError(f"no free name for a retry of {source} (tried {names[0]} to "
                           f"{names[-1]}): give one with --name")

    return _run(kubeconfig, namespace, work)


def list_pipelines(*, kubeconfig: str | None,
                   namespace: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The AgentPipelines the user may list: across namespaces when allowed, else in
    ``namespace`` (default: the kubeconfig's). Returns ``(items, note)``; the note says
    why the list is narrower than the cluster (the API's refusal)."""
    async def work(api: _Api) -> tuple[list[dict[str, Any]], str | None]:
        try:
            _, data = await api.call("GET", "/apis/stagecoach.dev/v1alpha1/agentpipelines")
            return list(data.get("items") or []), None
        except _Forbidden as e:
            note = f"all namespaces: {e}; showing namespace {api.ns}"
        _, data = await api.call("GET", api.path("agentpipelines"))
        return list(data.get("items") or []), note

    return _run(kubeconfig, namespace, work)
