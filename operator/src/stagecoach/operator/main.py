"""``stagecoach operator``: kopf watches, :class:`~.runtime.Runtime` schedules,
:class:`~.reconciler.Reconciler` reconciles.

kopf is used only for what it is good at: login, watching (one namespace, several, or
all) and dispatching events. Its handlers here are ``on.event`` only, so kopf writes
nothing to our objects (no finalizers, no progress annotations); the durable run state
is ours (:mod:`.record`). An AgentPipeline event triggers its reconcile (a change of
``spec.suspend``/``spec.shutdown`` too), and a finished or deleted one wakes the
pipelines waiting to ``resumeFrom`` it; a Job event (label
``app.kubernetes.io/managed-by=stagecoach``) triggers its owner pipeline's at once, and a
finished or deleted Job gives its provider slot back, waking the pipelines waiting for
it. A pod of ours that Succeeded triggers its pipeline too (the Job controller marks
the Job Complete up to a second later). A StageApproval event goes into the
reconciler's index of unanswered approvals (:mod:`.approvals`) and triggers the pipeline
it names. Pipeline, Job and pod events also feed the reconciler's caches (:mod:`.cache`,
:mod:`.gather`), so a pass reads none of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from .. import GROUP, VERSION, telemetry
from ..api import Storage
from ..store import StoreError
from ..store.s3 import load_client
from .jobs import MANAGED_BY, PROVIDER_LABEL, JobOptions
from .kube import Kube
from .metrics import Metrics, serve
from .outcomes import job_finished, pod_succeeded
from .reconciler import Reconciler
from .retention import default_ttl
from .runtime import Runtime
from .slots import ProviderSlots
from .storage import default_storage

__all__ = ["build_registry", "run_operator"]

log = logging.getLogger("stagecoach.operator")
FINISHED = {"Succeeded", "Failed", "Cancelled", "Invalid"}


class _Memo:
    http: Any = None
    kube: Kube | None = None
    reconciler: Reconciler | None = None
    runtime: Runtime | None = None


def build_registry(options: JobOptions, kubeconfig: str | None = None,
                   metrics_port: int | None = None,
                   storage: Storage | None = None, *, clusterwide: bool = True,
                   manage_stage_rbac: bool = True,
                   manage_stage_policy: bool = True,
                   metrics: Metrics | None = None) -> kopf.OperatorRegistry:
    """The kopf registry with Stagecoach's handlers. ``storage``: the default storage
    (``STAGECOACH_DEFAULT_STORAGE``). OpenTelemetry is on when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: scheduling spans, the pipelines' root spans,
    and ``TRACEPARENT`` plus the endpoint in every stage pod.

    Watching given namespaces (not ``clusterwide``) turns kopf's scanning off: it would
    list namespaces and watch CRDs cluster-wide, which a namespace-mode install may not.
    ``manage_stage_rbac``: create the stage ServiceAccount and Role where pipelines run.
    ``manage_stage_policy``: apply the stage-writes and the approval admission policies
    (:mod:`.policy`) at start; a refusal is logged as an error and the operator runs on
    (RBAC still holds).
    ``metrics``: served by the caller already (``metrics_port`` then None)."""
    registry = kopf.OperatorRegistry()
    memo = _Memo()
    metrics = metrics or Metrics()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        import os

        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return kopf.login_with_service_account(**kwargs)
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        settings.scanning.disabled = not clusterwide
        # Filtered by the API server, not here (kopf's labels= filters client-side): only
        # our Jobs and pods travel and, of the pods, only those that Succeeded (their
        # result ends an attempt early; failures come with their Job: :mod:`.gather`).
        ours = f"{MANAGED_BY}=stagecoach"
        settings.watching.label_selectors[("batch", "jobs")] = ours
        settings.watching.label_selectors[("v1", "pods")] = ours
        settings.watching.field_selectors[("v1", "pods")] = "status.phase=Succeeded"
        import os

        load_client()  # before any reconcile: importing it later would stall the loop
        memo.kube = await Kube.connect(kubeconfig)
        if manage_stage_policy:
            from .policy import approval_policy, stage_policy

            try:
                await memo.kube.ensure_cluster_objects(stage_policy(options.service_account))
            except StoreError as e:
                log.error("cannot apply the stage-writes admission policy (stage pods are "
                          "then limited by their Role only; install it with the chart or "
                          "grant the operator validatingadmissionpolicies): %s", e)
            try:
                await memo.kube.ensure_cluster_objects(approval_policy())
            except StoreError as e:
                log.error("cannot apply the approval admission policy (then anyone who may "
                          "create StageApprovals may name any approver; install it with the "
                          "chart or grant the operator validatingadmissionpolicies): %s", e)
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        tracing = bool(endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) \
            and telemetry.configure()
        slots = ProviderSlots()
        runtime = Runtime(lambda ns, name: reconciler.reconcile(ns, name),
                          observe=metrics.reconcile.observe)
        pod_gc = os.environ.get("STAGECOACH_POD_GC") or "OnPodCompletion"
        if pod_gc not in ("OnPodCompletion", "Never"):
            log.error("STAGECOACH_POD_GC=%s: use OnPodCompletion or Never; using "
                      "OnPodCompletion", pod_gc)
            pod_gc = "OnPodCompletion"
        try:
            ttl = default_ttl(os.environ)
        except ValueError as e:
            log.error("%s: finished pipelines are kept", e)
            ttl = None
        reconciler = Reconciler(memo.kube, slots, options=options, wake=runtime.wake,
                                manage_stage_rbac=manage_stage_rbac, pod_gc=pod_gc,
                                default_ttl=ttl,
                                trigger=runtime.trigger, metrics=metrics,
                                default_storage=storage, tracing=tracing,
                                otlp_endpoint=endpoint)
        reconciler.gather.watched = True  # the events below feed its caches
        memo.reconciler, memo.runtime = reconciler, runtime
        if metrics_port:
            memo.http = await serve(metrics, metrics_port)
        metrics.ready = True
        log.info("stagecoach operator started (image %s, default storage %s, tracing %s)",
                 options.image, storage.type if storage else "configmap",
                 "on" if tracing else "off")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if memo.runtime is not None:
            await memo.runtime.drain()
        if memo.kube is not None:
            await memo.kube.close()
        if memo.http is not None:
            await memo.http.cleanup()
        telemetry.flush()

    @kopf.on.event(GROUP, VERSION, "agentpipelines", registry=registry)
    async def pipeline_event(type: str, name: str, namespace: str | None, meta: kopf.Meta,
                             body: kopf.Body, event: kopf.RawEvent, **_: Any) -> None:
        if memo.runtime is None or memo.reconciler is None or namespace is None:
            return
        key = (namespace, name)
        memo.reconciler.gather.pipelines.observe(type, dict(event["object"]))
        if type == "DELETED" or (body.get("status") or {}).get("phase") in FINISHED:
            for waiter in memo.reconciler.desk.source_changed(key):
                memo.runtime.trigger(waiter)
        if type == "DELETED":
            memo.runtime.forget(key)
            memo.reconciler.forget(key)
            if memo.reconciler.desk.approvals.pending(key):
                memo.runtime.trigger(key)  # refuses them: the pipeline is gone
            return
        if meta.get("resourceVersion") == memo.reconciler.own_versions.get(key):
            return  # the echo of our own status patch
        memo.runtime.trigger(key)

    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: "stagecoach"},
                   registry=registry)
    async def job_event(type: str, body: kopf.Body, namespace: str | None,
                        event: kopf.RawEvent, **_: Any) -> None:
        if memo.runtime is None or memo.reconciler is None or namespace is None:
            return
        memo.reconciler.gather.jobs.observe(type, dict(event["object"]))
        owners = [o for o in body.get("metadata", {}).get("ownerReferences", [])
                  if o.get("kind") == "AgentPipeline"]
        if not owners:
            return
        key = (namespace, owners[0]["name"])
        if type != "DELETED" and not job_finished(dict(body)):
            return  # created or running: nothing for the engine to learn yet
        provider = body.get("metadata", {}).get("labels", {}).get(PROVIDER_LABEL)
        if provider:
            for waiter in memo.reconciler.slots.release((namespace, provider),
                                                        body["metadata"]["name"]):
                memo.runtime.trigger(waiter)
        memo.runtime.trigger(key)

    @kopf.on.event("", "v1", "pods", labels={MANAGED_BY: "stagecoach"}, registry=registry)
    async def pod_event(type: str, body: kopf.Body, event: kopf.RawEvent, **_: Any) -> None:
        if memo.runtime is None or memo.reconciler is None:
            return
        pod = dict(event["object"])
        memo.reconciler.gather.pod_cache.observe(type, pod)
        if type != "DELETED" and pod_succeeded(pod):  # ends its attempt (:mod:`.gather`)
            key = memo.reconciler.gather.pipeline_of_pod(pod)
            if key is not None:
                memo.runtime.trigger(key)

    @kopf.on.event(GROUP, VERSION, "stageapprovals", registry=registry)
    async def approval_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
        if memo.runtime is None or memo.reconciler is None:
            return
        key = memo.reconciler.desk.approvals.observe(type, dict(event["object"]))
        if key is not None:
            memo.runtime.trigger(key)

    @kopf.on.event(GROUP, VERSION, "modelproviders", registry=registry)
    async def provider_event(type: str, name: str, namespace: str | None, meta: kopf.Meta,
                             **_: Any) -> None:
        # A changed limit may free slots: wake the pipelines waiting for this provider.
        if memo.runtime is None or memo.reconciler is None or namespace is None:
            return
        generation = None if type == "DELETED" else meta.get("generation")
        memo.reconciler.providers_changed(namespace, name, generation)
        for waiter in list(memo.reconciler.slots.waiting.get((namespace, name), [])):
            memo.runtime.trigger(waiter)

    return registry


def run_operator(namespaces: list[str], all_namespaces: bool, options: JobOptions,
                 kubeconfig: str | None = None, liveness: str | None = None, *,
                 manage_stage_rbac: bool = True, manage_stage_policy: bool = True,
                 leader_elect: bool = False,
                 leader_election_namespace: str | None = None) -> int:
    """Run until interrupted; returns the exit code. ``STAGECOACH_METRICS_PORT`` serves
    /metrics, /healthz and /readyz (also while standing by); ``STAGECOACH_LOG_LEVEL``
    sets the log level. With ``leader_elect`` the operator reconciles only while it
    holds the Lease (:mod:`.leader`) and exits at once with 1 when it loses it (its
    Deployment restarts it as a standby)."""
    import os

    level = os.environ.get("STAGECOACH_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    port = os.environ.get("STAGECOACH_METRICS_PORT")
    try:
        storage = default_storage(os.environ)
    except ValueError as e:
        log.error("%s", e)
        return 2
    metrics = Metrics()
    registry = build_registry(options, kubeconfig, None, storage,
                              clusterwide=all_namespaces, manage_stage_rbac=manage_stage_rbac,
                              manage_stage_policy=manage_stage_policy, metrics=metrics)

    async def main() -> int:
        http = await serve(metrics, int(port)) if port else None
        from .leader import LeaderElector, identity

        guard: asyncio.Task[None] | None = None
        kube: Kube | None = None
        elector: LeaderElector | None = None
        try:
            if leader_elect:
                ns = leader_election_namespace or own_namespace()
                kube = await Kube.connect(kubeconfig)
                elector = LeaderElector(kube, ns, identity(),
                                        on_change=lambda leads: metrics.leader.set(int(leads)))
                metrics.ready = True  # a healthy standby
                await elector.acquire()

                async def hold(elector: LeaderElector) -> None:
                    await elector.hold()
                    # Lost: stop now, as client-go's leader election does (every write
                    # so far is durable; a graceful stop could hang on a frozen API
                    # server while another operator already leads). The Deployment
                    # restarts this process as a standby.
                    logging.shutdown()
                    os._exit(1)

                guard = asyncio.get_running_loop().create_task(hold(elector),
                                                               name="leader lease")
            else:
                metrics.leader.set(1)
            await kopf.operator(registry=registry, clusterwide=all_namespaces,
                                namespaces=namespaces, standalone=True,
                                liveness_endpoint=liveness)
        finally:
            if guard is not None and not guard.done():
                guard.cancel()
                if elector is not None:
                    await elector.release()  # a graceful stop: the standby need not wait
            if kube is not None:
                await kube.close()
            if http is not None:
                await http.cleanup()
        return 0

    return asyncio.run(main())


def own_namespace() -> str:
    """The namespace this process runs in: the pod's (ServiceAccount mount or
    ``POD_NAMESPACE``), else ``default``."""
    import os
    from pathlib import Path

    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"
