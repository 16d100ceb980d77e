"""One reconcile of one pipeline: gather → ``engine.step`` → apply → status on a diff.

Gather: the pipeline, its run record (memory, else the ``<pipeline>-state`` ConfigMap,
else a fresh start: resolve and validate, ``Invalid`` without any Job on a problem),
the providers, the pipeline's Jobs (and, for finished ones, their pods). Facts become
:class:`~stagecoach.engine.AttemptOutcome` values: a finished Job's result
(:mod:`.outcomes`), a Running attempt whose created Job is gone (``Error``, "Job
deleted"), the run-control fields of the live spec and the unanswered StageApprovals
(:mod:`.approvals`; a ``resumeFrom`` start gathers the earlier run, :mod:`.resume`).
Decide: ``engine.step`` with the provider slots :mod:`.slots` grants. Apply,
in crash-safe order: append the trace (at least once: a crash before the state is saved
repeats events, never loses them), persist the record *before* creating Jobs, create Jobs
(AlreadyExists = adopt), delete stopped Jobs, then concurrently persist the names of
the created Jobs, post Events and patch status (only when it changed); the approvals
are answered right after the state write (:mod:`.desk`); finally ask for
a wake-up at the plan's ``wake_at``. All API calls go through :class:`~.kube.Kube`; all decisions
stay in the engine. The caller (:mod:`.runtime`) guarantees one reconcile per pipeline
at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .. import telemetry
from ..api import (
    AgentPipeline,
    AgentPipelineTemplate,
    AttemptResult,
    ModelProvider,
    PipelineStatus,
    ResolvedPipeline,
    Resources,
    Storage,
    StoreRef,
    cost_of,
    format_usd,
    parse_usd,
    resolve_pipeline,
)
from ..attempts import attempt_cost, build_attempt, outcome_from_result
from ..caching import answer, attempt_key, hit_cost, remember
from ..engine import (
    Action,
    AttemptOutcome,
    FinishPipeline,
    Plan,
    RunState,
    StageRun,
    StartAttempt,
    StopAttempt,
    dump_state,
    new_state,
    step,
    timestamp,
    to_status,
    trace_events,
    validate_pipeline,
)
from ..store import (
    TRACE,
    ConfigMapStore,
    Conflict,
    SpillStore,
    Store,
    StoreError,
    decode_output,
    open_store,
)
from ..store.cache import CLUSTER_PREFIX, StageCache
from ..store.spill import DEFAULT_SPILL_THRESHOLD
from .admission import ProviderAdmission
from .approvals import control_of, decision_outputs, invalid_refusals, with_decision_refs
from .desk import ControlDesk
from .events import EVENT_TYPES, describe
from .gather import Gatherer, running_jobs
from .jobs import (
    JobOptions,
    build_job,
    job_name,
)
from .kube import Kube, KubeError
from .metrics import Metrics
from .outcomes import attempt_result, job_finished, owned_by, pod_succeeded, writer_keys
from .record import RunRecord, parse_record, record_body, record_name
from .rejections import rejected_attempt
from .resume import ResumeFailed, ResumeWait, resume
from .retention import expires_at
from .slots import ProviderSlots
from .storage import cache_storage, run_storage

__all__ = ["Reconciler"]

log = logging.getLogger("stagecoach.operator")

PipelineKey = tuple[str, str]
CACHE_COLLECT_EVERY = timedelta(minutes=10)
"""How often the operator deletes a namespace's expired stage-cache entries."""
TERMINAL = {"Succeeded", "Failed", "Cancelled", "Invalid"}
WRITER = "operator"
OUTPUT_KEY = "output.txt"
CREATE_CONCURRENCY = 16
"""Job creations in flight at once (a 1,000-item forEach does not open 1,000 requests)."""
OUTBOX_FLUSH_BYTES = 8 * 1024
"""Unflushed trace events (JSON bytes) the run state carries before they are appended
to the trace record. Until then they ride along with the state writes a pass makes
anyway (readers merge them, :mod:`.fetch`): one append per ~20 events, not one per
pass. Small, because every state write re-encodes them. A finished run is always
flushed."""
STALE_RETRY = timedelta(seconds=1)
"""How soon to try again after deleting an earlier pipeline's Job of the same name."""


@dataclass
class _Run:
    """What the operator keeps in memory for a pipeline it is running."""

    record: RunRecord
    resolved: ResolvedPipeline
    store: Store
    store_ref: StoreRef
    trace_ref: str
    resources: dict[str, Resources | None] = field(default_factory=dict)
    store_secret: str | None = None
    """The bucket's ``credentialsSecret`` (``spec.storage.s3``, or the default's when it
    is the run's store or its overflow): mounted into the stage pods as AWS_* env."""
    metrics_name: str = ""
    """The ``pipeline`` metrics label: the template's name, or the pipeline's."""
    configmaps: ConfigMapStore | None = None
    """The ConfigMap store behind ``store`` (None in a bucket): where the objects a
    stage pod writes are prepared before its Job exists."""
    rejected: dict[str, AttemptResult] = field(default_factory=dict)
    """Attempts whose Job the API server refused for good, by Job name: they fail in
    the next pass (:mod:`.rejections`)."""
    decisions: set[str] = field(default_factory=set)
    """Store keys of the approval decisions written as outputs (:mod:`.approvals`)."""
    cache: StageCache | None = None
    """The namespace's stage cache as this run's storage sees it (:meth:`Reconciler._cache`)."""
    cache_keys: dict[str, str] = field(default_factory=dict)
    """Cache keys of running attempts of caching stages, by Job name."""
    answered: dict[str, tuple[AttemptResult, Any, dict[str, Any]]] = field(
        default_factory=dict)
    """Attempts the stage cache answered (no Job), by Job name: they succeed in the next
    pass with reason ``Cached``."""


def _json_size(events: list[dict[str, Any]]) -> int:
    """The encoded size of trace events (bounded: the outbox is flushed past 8 KiB)."""
    return sum(len(json.dumps(e, separators=(",", ":"), default=str)) for e in events)


class Reconciler:
    """Reconciles pipelines; holds only caches (the durable truth is in the API)."""

    def __init__(self, kube: Kube, slots: ProviderSlots, *,
                 options: JobOptions | None = None,
                 clock: Callable[[], datetime] | None = None,
                 wake: Callable[[PipelineKey, datetime], None] | None = None,
                 trigger: Callable[[PipelineKey], None] | None = None,
                 metrics: Metrics | None = None,
                 store_factory: Callable[[StoreRef], Store] | None = None,
                 default_storage: Storage | None = None,
                 tracing: bool = False,
                 otlp_endpoint: str | None = None,
                 manage_stage_rbac: bool = True,
                 pod_gc: str = "OnPodCompletion",
                 default_ttl: int | None = None) -> None:
        self.kube = kube
        self.default_ttl = default_ttl
        """Seconds a finished pipeline stays without ``spec.ttlSecondsAfterFinished``."""
        self.pod_gc = pod_gc
        """``OnPodCompletion``: delete an attempt's pod once its result is in the saved
        state (the Job stays until the pipeline goes); ``Never``: keep pods (logs)."""
        self.manage_stage_rbac = manage_stage_rbac
        """Create the stage ServiceAccount and Role in a namespace before its first Job
        (off when the installer did: the chart in namespace mode)."""
        self.default_storage = default_storage
        """Storage of pipelines without ``spec.storage``; its bucket is also the overflow
        of ConfigMap stores (:mod:`.storage`)."""
        self.tracing = tracing
        """OpenTelemetry on (:func:`stagecoach.telemetry.configure` returned True)."""
        self.otlp_endpoint = otlp_endpoint
        """``OTEL_EXPORTER_OTLP_ENDPOINT`` handed to stage pods."""
        self.store_factory = store_factory or (lambda ref: open_store(ref))
        self.metrics = metrics or Metrics()
        self.slots = slots
        self.options = options or JobOptions()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.wake = wake or (lambda key, at: None)
        self.trigger = trigger or (lambda key: None)
        self.runs: dict[PipelineKey, _Run] = {}
        self.last_status: dict[PipelineKey, dict[str, Any]] = {}
        self._rbac: set[str] = set()
        self.admission = ProviderAdmission(kube, slots, lambda key: self.trigger(key))
        self._providers_cache: dict[str, dict[str, ModelProvider]] = {}
        self.own_versions: dict[PipelineKey, str] = {}
        """resourceVersion of our latest status patch per pipeline: the watch event it
        causes is our own echo and needs no reconcile."""
        self.desk = ControlDesk(kube, self.clock, lambda key, at: self.wake(key, at))
        """StageApprovals and ``resumeFrom`` waits (:mod:`.desk`)."""
        self.gather = Gatherer(kube)
        """The watch-fed caches of pipelines and Jobs (:mod:`.gather`)."""
        self._records_seen: set[PipelineKey] = set()
        """Pipelines without a status whose record exists all the same (a crash between
        the first state write and the first status patch): read it, do not start anew."""
        self._caches: dict[tuple[str, str], StageCache] = {}
        self._collected: dict[tuple[str, str], datetime] = {}
        self._collecting: set[asyncio.Task[int]] = set()

    def providers_changed(self, ns: str, name: str, generation: int | None) -> None:
        """A ModelProvider event: read the providers again unless only status changed."""
        cached = self._providers_cache.get(ns)
        if cached is None:
            return
        known = cached.get(name)
        if known is None or generation is None or known.metadata.generation != generation:
            self._providers_cache.pop(ns, None)

    def forget(self, key: PipelineKey) -> None:
        """Drop caches for a deleted pipeline."""
        self.desk.forget(key)
        self.gather.forget(key)
        self._records_seen.discard(key)
        self.runs.pop(key, None)
        self.last_status.pop(key, None)
        self.own_versions.pop(key, None)
        self.slots.forget(key)
        self.metrics.pipeline_phase(key, None)

    # -- gather --------------------------------------------------------------------------
    async def _providers(self, ns: str) -> dict[str, ModelProvider]:
        cached = self._providers_cache.get(ns)
        if cached is not None:
            return cached
        out: dict[str, ModelProvider] = {}
        for item in await self.kube.list_providers(ns):
            try:
                provider = ModelProvider.model_validate(item)
            except ValidationError as e:
                log.warning("ModelProvider %s/%s is invalid: %s", ns,
                            item.get("metadata", {}).get("name"), e)
                continue
            out[provider.metadata.name] = provider
        self._providers_cache[ns] = out
        return out

    async def _invalid(self, ns: str, body: dict[str, Any], message: str) -> None:
        await self._end(ns, body, "Invalid", "Invalid", "Valid", message)

    async def _fail_run(self, ns: str, body: dict[str, Any], reason: str,
                        message: str) -> None:
        """End a pipeline the operator can no longer run (its state cannot be saved):
        phase Failed with ``reason`` and ``message`` in status and an Event; nothing
        new starts (a Failed pipeline is never loaded again)."""
        await self._end(ns, body, "Failed", reason, "Succeeded", message)

    async def _end(self, ns: str, body: dict[str, Any], phase: str, reason: str,
                   condition: str, message: str) -> None:
        """Publish a terminal phase the engine did not plan (Invalid, or a failure to
        save the run), with a False ``condition``, a Warning Event and the metric."""
        name = body["metadata"]["name"]
        now = timestamp(self.clock())
        status: dict[str, Any] = {
            "phase": phase, "reason": reason, "message": message[:2000],
            "observedGeneration": body["metadata"].get("generation"),
            "conditions": [{"type": condition, "status": "False", "reason": reason,
                            "message": message[:1000], "lastTransitionTime": now}]}
        if phase == "Failed":
            status["finishedAt"] = now
        run = self.runs.pop((ns, name), None)
        if run is not None:
            try:  # the saved state's events that are not in the trace yet
                await self._flush_outbox(run)
            except StoreError as e:
                log.warning("%s/%s: cannot append the trace: %s", ns, name, e)
        await self.kube.patch_pipeline_status(ns, name, status)
        await self.kube.post_event(ns, body, "Warning", reason, message)
        self.metrics.pipeline_phase((ns, name), phase)
        log.log(logging.INFO if phase == "Invalid" else logging.ERROR,
                "pipeline %s/%s: %s: %s", ns, name, phase, message)

    def _resolve(self, record: RunRecord, ns: str) -> tuple[ResolvedPipeline, dict[str, Any]]:
        templates = {record.template.metadata.name: record.template} if record.template else {}
        resolved, problems = resolve_pipeline(record.pipeline, templates)
        if resolved is None:
            raise StoreError("; ".join(p.render() for p in problems))
        resources: dict[str, Resources | None] = {}
        spec = record.pipeline.spec
        bodies = (record.template.spec.stages + (record.template.spec.finally_ or [])
                  if record.template else (spec.stages or []) + (spec.finally_ or []))
        for s in bodies:
            resources[s.name] = s.resources
        return resolved, resources

    async def _start_run(self, ns: str, body: dict[str, Any]) -> _Run | None:
        """First sight of a pipeline: validate, snapshot, persist. None when invalid."""
        body["metadata"]["name"]
        try:
            pipeline = AgentPipeline.model_validate({**body, "status": None})
        except ValidationError as e:
            await self._invalid(ns, body, f"spec: {e}")
            return None
        templates: dict[str, AgentPipelineTemplate] = {}
        template: AgentPipelineTemplate | None = None
        if pipeline.spec.template_ref is not None:
            tname = pipeline.spec.template_ref.name
            raw = await self.kube.get_template(ns, tname)
            if raw is None:
                await self._invalid(ns, body, f"spec.templateRef.name: template {tname!r} "
                                    f"not found in namespace {ns}")
                return None
            try:
                template = AgentPipelineTemplate.model_validate(raw)
            except ValidationError as e:
                await self._invalid(ns, body, f"template {tname}: {e}")
                return None
            templates[tname] = template
        providers = await self._providers(ns)
        resolved, problems = validate_pipeline(pipeline, templates, providers)
        if resolved is None:
            await self._invalid(ns, body, "; ".join(p.render() for p in problems)
                                or "invalid pipeline")
            return None
        record = RunRecord(pipeline, template, new_state(resolved))
        reuse: Plan | None = None
        if resolved.resume_from:
            now = self.clock()
            outcome = await resume(ns, resolved, record.state, now,
                                   get_pipeline=self.kube.get_pipeline,
                                   get_configmap=self.kube.get_configmap,
                                   open_store=lambda old: self._store(ns, old)[0],
                                   store=self._store(ns, record)[0])
            if isinstance(outcome, ResumeWait):
                version = await self.desk.await_source(ns, body, resolved.resume_from,
                                                        outcome)
                if version:
                    self.own_versions[(ns, resolved.name)] = version
                return None
            if isinstance(outcome, ResumeFailed):
                await self._fail_run(ns, body, outcome.reason, outcome.message)
                return None
            reuse = outcome
            record.state = reuse.state
            record.outbox = trace_events(reuse.actions, now, resolved.name, resolved.uid)
        await self._persist(ns, record)
        run = self._make_run(ns, record)
        if reuse is not None:
            await self._flush_outbox(run)
            await self._post_events(ns, body, run, reuse.actions)
            log.info("pipeline %s/%s: resumed from %s: reused %s", ns, resolved.name,
                     resolved.resume_from, ", ".join(a.stage or "" for a in reuse.actions
                                                     if a.stage) or "nothing")
        return run

    def _store(self, ns: str, record: RunRecord
               ) -> tuple[Store, StoreRef, str, str | None, ConfigMapStore | None]:
        """The run's output/trace store (:func:`.storage.run_storage`): a bucket, or
        ConfigMaps spilling to the default bucket when there is one (the operator uses
        its own AWS_* environment; pods get the credentialsSecret)."""
        meta = record.pipeline.metadata
        ref, secret = run_storage(ns, meta.name, meta.uid or "", record.pipeline.spec.storage,
                                  self.default_storage)
        if ref.type == "s3":
            trace_ref = f"s3://{ref.bucket}/{ref.prefix.strip('/')}/{TRACE}"
            return self.store_factory(ref), ref, trace_ref, secret, None
        cms = ConfigMapStore(self.kube, ns, meta.name, meta.uid or "")
        store: Store = cms
        if ref.overflow is not None:
            threshold = (ref.spill_threshold if ref.spill_threshold is not None
                         else DEFAULT_SPILL_THRESHOLD)
            store = SpillStore(cms, self.store_factory(ref.overflow), threshold=threshold)
        return store, ref, cms.trace_ref, secret, cms

    def _make_run(self, ns: str, record: RunRecord) -> _Run:
        resolved, resources = self._resolve(record, ns)
        store, ref, trace_ref, secret, cms = self._store(ns, record)
        tref = record.pipeline.spec.template_ref
        name = tref.name if tref is not None else record.pipeline.metadata.name
        return _Run(record, resolved, store, ref, trace_ref, resources, secret, name, cms)

    async def _load_run(self, ns: str, body: dict[str, Any]) -> _Run | None:
        """The run from memory, or from ``<pipeline>-state``, or a new start."""
        key = (ns, body["metadata"]["name"])
        uid = body["metadata"].get("uid")
        run = self.runs.get(key)
        if run is not None and run.record.pipeline.metadata.uid == uid:
            return run
        if (body.get("status") or {}).get("phase") in TERMINAL:
            return None  # finished and published: nothing to load (restarts stay cheap)
        if not body.get("status") and key not in self._records_seen:
            # Never published: its record is written before its first status, so there is
            # none to read (if a crash left one, creating ours conflicts and the retried
            # pass reads it: :meth:`_write_record`).
            cm = None
        else:
            cm = await self.kube.get_configmap(ns, record_name(key[1]))
        owners = [o.get("uid") for o in (cm or {}).get("metadata", {}).get("ownerReferences", [])]
        if cm is not None and uid in owners:
            try:
                live = AgentPipeline.model_validate({**body, "status": None})
            except ValidationError as e:
                await self._invalid(ns, body, f"spec: {e}")
                return None
            record, refs = parse_record(cm, live)
            store = self._store(ns, record)[0]
            values: dict[str, Any] = {}
            for ref in sorted(refs):
                try:
                    values[ref] = decode_output(await store.get(ref)).value
                except (StoreError, ValueError) as e:
                    log.warning("%s/%s: cannot reload output %s: %s", ns, key[1], ref, e)
            record, _ = parse_record(cm, live, values)
            run = self._make_run(ns, record)
            await self._flush_outbox(run)  # the last step's events may not have made it
            log.info("pipeline %s/%s: resumed from %s", ns, key[1], record_name(key[1]))
        elif (body.get("status") or {}).get("startedAt"):
            # It ran, so its record existed: a fresh start would run its stages again.
            await self._fail_run(ns, body, "StateLost",
                                 f"its run record ConfigMap {record_name(key[1])} is gone "
                                 "(deleted while the pipeline ran); nothing is run twice")
            return None
        else:
            run = await self._start_run(ns, body)
            if run is None:
                return None
        self.runs[key] = run
        return run

    async def _persist(self, ns: str, record: RunRecord) -> None:
        try:
            await self._write_record(ns, record)
        except Conflict:
            # Someone else changed <pipeline>-state (another operator instance): our copy is
            # stale. Forget it; the retried reconcile reloads the record from the API.
            self.runs.pop((ns, record.pipeline.metadata.name), None)
            raise

    async def _write_record(self, ns: str, record: RunRecord) -> None:
        body = record_body(record, ns)
        if record.resource_version is None:
            try:
                created = await self.kube.create_configmap(ns, body)
            except Conflict:
                old = await self.kube.get_configmap(ns, body["metadata"]["name"])
                if old is None or owned_by(old, record.pipeline.metadata.uid or ""):
                    # Another operator (or our crashed self) started this run first: the
                    # retried pass reloads its record.
                    self._records_seen.add((ns, record.pipeline.metadata.name))
                    raise
                # Left by an earlier pipeline of the same name: take it over.
                body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
                created = await self.kube.replace_configmap(ns, body)
        else:
            created = await self.kube.replace_configmap(ns, body)
        record.resource_version = created["metadata"]["resourceVersion"]

    # -- the cycle -----------------------------------------------------------------------
    async def reconcile(self, ns: str, name: str) -> None:
        """One gather → step → apply pass for ``ns/name``."""
        try:
            await self._reconcile(ns, name)
        except BaseException:
            self.gather.failed((ns, name))  # list again next time: trust no cache
            raise

    async def _reconcile(self, ns: str, name: str) -> None:
        key = (ns, name)
        body = await self.gather.pipeline(ns, name)
        if body is None:
            self.forget(key)
            await self.desk.refuse_missing(ns, name)
            return
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)  # being deleted: what it owns goes with it; never re-judge it
            return
        if (body.get("status") or {}).get("phase") in TERMINAL:
            due = expires_at(body, self.default_ttl)
            if due is not None and self.clock() >= due:
                log.info("pipeline %s/%s: deleted %s after it finished (TTL)", ns, name,
                         due - datetime.fromisoformat(
                             str(body["status"]["finishedAt"]).replace("Z", "+00:00")))
                await self.kube.delete_pipeline(ns, name, body["metadata"].get("uid", ""))
                self.forget(key)
                return
            if due is not None:
                self.wake(key, due)
        run = await self._load_run(ns, body)
        if run is None:
            self.slots.forget(key)
            await self.desk.refuse_idle(ns, body)
            return
        state = run.record.state
        pending = self.desk.approvals.pending(key)
        if state.terminal:
            verdicts = step(run.resolved, state, self.clock(), approvals=[
                p.decision for p in pending if p.decision]).verdicts
            await self.desk.answer(ns, body, [*verdicts, *invalid_refusals(pending)])
            await self._publish(ns, body, run)
            self.slots.forget(key)
            self._release_memory(key)
            return
        await self._ensure_rbac(ns)
        providers = await self._providers(ns)
        jobs = await self.gather.owned_jobs(key, run.resolved.uid)
        pods = await self.gather.pods(key, jobs, running_jobs(name, state))
        for job in jobs.values():
            if job_finished(job):  # a provider slot is held while its Job is active
                self.admission.release_job(ns, job)
        outcomes, missing = await self._observe(ns, run, jobs, pods, providers)
        now = self.clock()
        free, rate_wake = await self.admission.free(ns, key, run.resolved, providers, now)
        plan = step(run.resolved, state, now, outcomes, free_slots=free,
                    control=control_of(body),
                    approvals=[p.decision for p in pending if p.decision])
        starts = plan.starts()
        self._observe_metrics(run, outcomes, plan.actions, state, now, providers)
        self.admission.account(ns, key, run.resolved, plan.state, starts, providers, now)
        events = trace_events(plan.actions, now, run.resolved.name, run.resolved.uid)
        changed = dump_state(plan.state) != dump_state(state) or bool(missing) or bool(events)
        # The state first, with this step's trace events in its outbox: they are traced
        # only once the write won (a second operator's losing plan is never traced), and
        # a crash after the write re-appends them on restart (read exactly once).
        # Earlier passes' events stay in the outbox until worth an append.
        earlier = run.record.outbox
        run.record.state = plan.state
        run.record.outbox = [*earlier, *events]
        if changed:
            try:
                await self._persist(ns, run.record)  # before any Job exists
            except KubeError as e:
                if e.status not in (400, 413, 422):
                    raise
                size = len(json.dumps(record_body(run.record, ns), separators=(",", ":")))
                run.record.outbox = earlier  # what the last saved state holds (_end flushes)
                await self._fail_run(ns, body, "StateTooLarge",
                                     f"the API server refused the run state "
                                     f"{record_name(name)} ({size} bytes): {e.api_message}")
                return
        flush = plan.state.terminal or _json_size(run.record.outbox) >= OUTBOX_FLUSH_BYTES
        # The verdicts are in the saved state: answer the StageApprovals now (before a
        # terminal status is published, so a restart in between answers them the same).
        await self.desk.answer(ns, body, [*plan.verdicts, *invalid_refusals(pending)])
        await self.desk.store_decisions(run.store, run.record.state, run.decisions)
        # The trace append and the Jobs are independent (the events are in the saved
        # state's outbox until the append lands): one round trip, not two.
        _, created = await asyncio.gather(
            self._flush_outbox(run) if flush else asyncio.sleep(0),
            self._schedule(ns, run, [*missing, *starts], providers))
        for stop in plan.stops():
            await self._stop(ns, run, stop)
        if any(isinstance(a, FinishPipeline) for a in plan.actions):
            await self._finish(run, plan.actions)
            self._root_span(ns, run)
            self.slots.forget(key)
        # Independent writes, concurrently: the created Jobs' names, Events, the
        # pipeline's and the providers' status, and the pods whose results are saved.
        run.record.jobs.update(created)
        results = await asyncio.gather(
            self._persist(ns, run.record) if created else asyncio.sleep(0),
            self._post_events(ns, body, run, plan.actions),
            self._publish(ns, body, run),
            self.admission.publish(ns, providers),
            self._collect_pods(ns, run, jobs, pods),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if plan.state.terminal:
            self._release_memory(key)
            due = expires_at({"spec": body.get("spec"), "status": {
                "finishedAt": timestamp(plan.state.finished_at or now)}}, self.default_ttl)
            if due is not None:
                self.wake(key, due)  # the TTL (our own status echo wakes nobody)
        wake_at = min((t for t in (plan.wake_at, rate_wake) if t is not None), default=None)
        if wake_at is not None and not plan.state.terminal:
            self.wake(key, wake_at)
        if events:
            log.debug("pipeline %s/%s: %d trace events", ns, name, len(events))

    async def _collect_pods(self, ns: str, run: _Run, jobs: dict[str, dict[str, Any]],
                            pods: dict[str, list[dict[str, Any]]]) -> None:
        """The pods of finished Jobs, and the Succeeded pods, whose attempt is no longer
        Running in the state (its result is saved: the state was persisted before this
        runs) leave the pod cache, whatever the podGC (memory stays bounded), and with
        ``OnPodCompletion`` are deleted. A Succeeded pod may go before the Job controller
        marked its Job Complete: the controller's tracking finalizer keeps the pod until
        it is counted. A crash before this point leaves them for the next pass."""
        if not pods:
            return
        running = running_jobs(run.resolved.name, run.record.state)
        done = [p for jn, plist in pods.items()
                if jn not in running and jn in jobs
                for p in plist if job_finished(jobs[jn]) or pod_succeeded(p)]
        if self.pod_gc == "OnPodCompletion":
            await asyncio.gather(*(self.kube.delete_pod(ns, p["metadata"]["name"],
                                                        p["metadata"].get("uid"))
                                   for p in done))
        for p in done:  # no second DELETE before the watch says so (or ever, for a
            # Failed pod, which the pod watch does not carry); no pod kept for nothing
            self.gather.forget_pod(p)

    def _release_memory(self, key: PipelineKey) -> None:
        """A finished run needs nothing in memory: its state and outputs are saved and its
        status published (a later event finds the terminal phase and stops there)."""
        self.runs.pop(key, None)
        self.last_status.pop(key, None)

    async def _observe(self, ns: str, run: _Run, jobs: dict[str, dict[str, Any]],
                       pods: dict[str, list[dict[str, Any]]],
                       providers: dict[str, ModelProvider]
                       ) -> tuple[list[AttemptOutcome], list[StartAttempt]]:
        outcomes: list[AttemptOutcome] = []
        missing: list[StartAttempt] = []
        name = run.resolved.name
        for stage_run in run.record.state.stages.values():
            for inst in stage_run.instances:
                if inst.phase != "Running":
                    continue
                jn = job_name(name, stage_run.name, stage_run.iteration, inst.attempt,
                              inst.index)
                start = StartAttempt(stage_run.name, stage_run.iteration, inst.attempt,
                                     inst.index, item=inst.item, provider=inst.provider,
                                     previous_error=inst.previous_error,
                                     loop_from=stage_run.loop_from,
                                     loop_reason=stage_run.loop_reason)
                job = jobs.get(jn)
                if job is None and jn in run.record.jobs:  # deleted, or the cache lags?
                    job = await self.gather.confirm(ns, jn, run.resolved.uid)
                if job is None and jn in run.rejected:
                    if inst.provider:
                        self._release_name(ns, inst.provider, jn)
                    outcomes.append(outcome_from_result(start, run.rejected.pop(jn)))
                    continue
                if job is None and jn in run.answered:
                    if inst.provider:
                        self._release_name(ns, inst.provider, jn)
                    hit, value, facts = run.answered.pop(jn)
                    outcomes.append(outcome_from_result(start, hit, value, cached=facts,
                                                        cost=hit_cost(facts)))
                    continue
                if job is None:
                    if jn in run.record.jobs:
                        if inst.provider:
                            self._release_name(ns, inst.provider, jn)
                        outcomes.append(outcome_from_result(start, AttemptResult.failed(
                            "Error", f"Job {jn} was deleted before it finished")))
                    else:
                        missing.append(start)  # persisted, never created: create it now
                    continue
                result = attempt_result(job, pods.get(jn, []))
                if result is None:
                    continue
                output: Any = None
                fmt = "json"
                if result.ok and result.output_ref:
                    try:
                        raw = (result.output.encode() if result.output is not None
                               else await run.store.get(result.output_ref))
                        stored = decode_output(raw)
                        output, fmt = stored.value, stored.format
                    except (StoreError, ValueError) as e:
                        result = AttemptResult.failed(
                            "Error", f"cannot read the output: {e}", tokens=result.tokens,
                            usage=result.usage, duration_ms=result.duration_ms)
                cost = attempt_cost(result, providers)
                if result.ok and run.resolved.stage(start.stage or "").cache is not None:
                    await self._remember(ns, run, start, jn, result, fmt, output, cost,
                                         providers)
                outcomes.append(outcome_from_result(start, result, output, cost=cost))
        return outcomes, missing

    # -- the stage cache (DESIGN §11) ----------------------------------------------------
    def _cache(self, ns: str, run: _Run) -> StageCache:
        """The namespace's stage cache as the run's storage sees it: its bucket, or the
        namespace's cache ConfigMaps (spilling to the default bucket when there is one)."""
        if run.cache is not None:
            return run.cache
        in_bucket, ref = cache_storage(ns, run.record.pipeline.spec.storage,
                                       self.default_storage)
        ident = (ns, ref.model_dump_json() if ref is not None else "")
        cache = self._caches.get(ident)
        if cache is None:
            if in_bucket and ref is not None:
                store: Store = self.store_factory(ref)
            else:
                store = ConfigMapStore(self.kube, ns, CLUSTER_PREFIX)
                if ref is not None:
                    store = SpillStore(store, self.store_factory(ref),
                                       threshold=DEFAULT_SPILL_THRESHOLD)
            cache = self._caches[ident] = StageCache(store)
        run.cache = cache
        self._maybe_collect(ident, cache)
        return cache

    def _maybe_collect(self, ident: tuple[str, str], cache: StageCache) -> None:
        """Collect the cache's expired entries, in the background, at most every
        :data:`CACHE_COLLECT_EVERY` (only the leader reconciles, so only it collects)."""
        now = self.clock()
        last = self._collected.get(ident)
        if last is not None and now - last < CACHE_COLLECT_EVERY:
            return
        self._collected[ident] = now

        async def collect() -> int:
            try:
                gone = await cache.collect(self.clock())
            except Exception as e:  # a failed collection is retried at the next interval
                log.warning("stage cache %s: collection failed: %s", cache, e)
                return 0
            if gone:
                log.info("stage cache %s: %d expired entr%s deleted", cache, gone,
                         "y" if gone == 1 else "ies")
            return gone

        task = asyncio.get_running_loop().create_task(collect())
        self._collecting.add(task)
        task.add_done_callback(self._collecting.discard)

    async def _remember(self, ns: str, run: _Run, start: StartAttempt, jn: str,
                        result: AttemptResult, fmt: str, output: Any, cost: Any,
                        providers: dict[str, ModelProvider]) -> None:
        key = run.cache_keys.pop(jn, None)
        if key is None:  # started before a restart: key it again (its inputs are done)
            state = with_decision_refs(run.record.state, decision_outputs(run.record.state))
            spec = build_attempt(run.resolved, state, start, providers, run.store_ref)
            key = attempt_key(run.resolved, state, start, spec, providers)
        if key is not None:
            await remember(self._cache(ns, run), key, run.resolved, start, result, fmt,
                           output, cost, self.clock())

    def _observe_metrics(self, run: _Run, outcomes: list[AttemptOutcome],
                         actions: list[Action], before: RunState, now: datetime,
                         providers: dict[str, ModelProvider]) -> None:
        self.metrics.observe_actions(actions, run.metrics_name)
        specs = {n: p.spec for n, p in providers.items()}
        for o in outcomes:
            stage = run.resolved.stage(o.stage)
            provider = stage.provider or "none"
            model = (stage.agent.model if stage.agent else None) or "none"
            self.metrics.tokens.labels(provider, model, "input").inc(o.tokens.input)
            self.metrics.tokens.labels(provider, model, "output").inc(o.tokens.output)
            for u in o.usage:  # each provider/model at its own price (fallbacks too)
                cost = cost_of([u], specs)
                if cost is not None and cost > 0:
                    self.metrics.cost.labels(u.provider, u.model).inc(float(cost))
            if run.resolved.stage(o.stage).cache is not None and o.ok:
                self.metrics.cache.labels("hit" if o.cached else "miss").inc()
        for a in actions:
            if isinstance(a, StartAttempt) and a.stage in before.stages:
                inst = next((i for i in before.stages[a.stage].instances
                             if i.index == a.index), None)
                if inst is not None and inst.phase == "Queued" and run.record.state:
                    since = before.stages[a.stage].started_at
                    if since is not None:
                        self.metrics.queue_wait.labels(a.provider or "none").observe(
                            (now - since).total_seconds())
        self.metrics.api_requests.set(self.kube.requests)

    def _release_name(self, ns: str, provider: str, jn: str) -> None:
        self.admission.release(ns, provider, jn)

    # -- apply ---------------------------------------------------------------------------
    async def _ensure_rbac(self, ns: str) -> None:
        if self.manage_stage_rbac and ns not in self._rbac:
            await self.kube.ensure_stage_rbac(ns, self.options.service_account)
            self._rbac.add(ns)

    # -- tracing -------------------------------------------------------------------------
    def _job_env(self, run: _Run) -> dict[str, str]:
        """Plain env for the stage pods: the run's TRACEPARENT and the OTLP endpoint."""
        if not self.tracing:
            return {}
        env: dict[str, str] = {}
        parent = telemetry.pipeline_traceparent(run.resolved.uid)
        if parent:
            env[telemetry.TRACEPARENT_ENV] = parent
        if self.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.otlp_endpoint
        return env

    async def _schedule(self, ns: str, run: _Run, starts: list[StartAttempt],
                        providers: dict[str, ModelProvider]) -> list[str]:
        """:meth:`_create_jobs`, inside a ``schedule`` span of the run's trace."""
        if not starts or not self.tracing:
            return await self._create_jobs(ns, run, starts, providers)
        attrs = {"stagecoach.pipeline": run.resolved.name, "k8s.namespace.name": ns,
                 "stagecoach.started": len(starts),
                 "stagecoach.stages": sorted({s.stage for s in starts if s.stage})}
        with telemetry.pipeline_child_span(run.resolved.uid, "schedule", attributes=attrs):
            return await self._create_jobs(ns, run, starts, providers)

    def _root_span(self, ns: str, run: _Run) -> None:
        """Emit the run's root span (ids from the UID, so the pods' attempt spans and our
        scheduling spans, exported earlier, are its children), backdated to its start."""
        if not self.tracing:
            return
        state = run.record.state
        try:
            with telemetry.start_pipeline_span(run.resolved.name, run.resolved.uid,
                                               namespace=ns,
                                               start_time=state.started_at) as span:
                telemetry.set_pipeline_outcome(span, state.phase, state.message,
                                               (state.tokens.input, state.tokens.output),
                                               format_usd(parse_usd(state.cost)))
        except Exception:  # tracing never fails a reconcile
            log.exception("%s/%s: cannot emit the pipeline span", ns, run.resolved.name)

    async def _create_jobs(self, ns: str, run: _Run, starts: list[StartAttempt],
                           providers: dict[str, ModelProvider]) -> list[str]:
        ref = run.store_ref
        env = self._job_env(run)
        state = with_decision_refs(run.record.state, decision_outputs(run.record.state))

        key = (ns, run.resolved.name)

        async def create(start: StartAttempt) -> str | None:
            spec = build_attempt(run.resolved, state, start, providers, ref)
            assert start.stage is not None
            if run.resolved.stage(start.stage).cache is not None:
                cache_key = attempt_key(run.resolved, state, start, spec, providers)
                if cache_key is not None:
                    jn = job_name(run.resolved.name, start.stage, start.iteration or 1,
                                  start.attempt or 1, start.index)
                    hit = await answer(self._cache(ns, run), cache_key, run.resolved, spec,
                                       run.store, self.clock())
                    if hit is not None:  # no Job: the next pass observes the answer
                        run.answered[jn] = hit
                        self.trigger(key)
                        return None
                    run.cache_keys[jn] = cache_key
            job = build_job(spec, providers, options=self.options,
                            resources=run.resources.get(start.stage),
                            store_secret=run.store_secret, extra_env=env)
            jn = str(job["metadata"]["name"])
            if run.configmaps is not None:
                await run.configmaps.prepare(writer_keys(spec), jn)
            try:
                await self.kube.create_job(ns, job)
            except Conflict:
                existing = await self.kube.get_job(ns, jn)
                if existing is not None and not owned_by(existing, run.resolved.uid):
                    # Left by an earlier pipeline of this name, still being collected:
                    # never adopt it; delete it and create ours once it is gone.
                    log.info("job %s belongs to an earlier pipeline %s: deleting it", jn,
                             run.resolved.name)
                    await self.kube.delete_job(ns, jn, existing["metadata"].get("uid"))
                    self.wake(key, self.clock() + STALE_RETRY)
                    return None
                log.info("job %s already exists: adopted", jn)
            except KubeError as e:
                size = len(json.dumps(job, separators=(",", ":")))
                result = rejected_attempt(e.status, e.api_message, jn, size)
                if result is None:
                    raise
                log.warning("%s/%s: %s", ns, run.resolved.name, result.message)
                run.rejected[jn] = result
                self.trigger(key)
                return None
            return jn

        limit = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def bounded(start: StartAttempt) -> str | None:
            async with limit:
                return await create(start)

        names = [n for n in await asyncio.gather(*(bounded(s) for s in starts)) if n]
        self.metrics.jobs_created.inc(len(names))
        return names

    async def _stop(self, ns: str, run: _Run, stop: StopAttempt) -> None:
        assert stop.stage is not None and stop.iteration is not None
        jn = job_name(run.resolved.name, stop.stage, stop.iteration, stop.attempt or 1,
                      stop.index)
        await self.kube.delete_job(ns, jn)
        stage = run.resolved.stage(stop.stage)
        if stage.provider:
            self._release_name(ns, stage.provider, jn)

    async def _flush_outbox(self, run: _Run) -> None:
        """Append the saved step's events to the trace; the next state write drops them."""
        if run.record.outbox:
            await run.store.append_trace(WRITER, run.record.outbox)
            run.record.outbox = []

    async def _post_events(self, ns: str, body: dict[str, Any], run: _Run,
                           actions: list[Action]) -> None:
        posts = []
        for a in actions:
            ev = a.event()
            if ev is None or ev["type"] not in EVENT_TYPES:
                continue
            type_, reason, message = describe(run.resolved.name, a, ev)
            posts.append(self.kube.post_event(ns, body, type_, reason, message))
        if posts:
            await asyncio.gather(*posts)

    async def _finish(self, run: _Run, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, FinishPipeline) and a.output is not None:
                try:
                    await run.store.put(OUTPUT_KEY, a.output.encode())
                except StoreError as e:
                    log.warning("%s: cannot store the final output: %s", run.resolved.name, e)

    def _job_of(self, run: _Run) -> Callable[[StageRun], str | None]:
        def job(stage_run: StageRun) -> str | None:
            started = [i for i in stage_run.instances if i.attempt > 0]
            if not started:
                return None
            inst = max(started, key=lambda i: (i.started_at or datetime.min.replace(tzinfo=UTC),
                                               i.index or 0))
            return job_name(run.resolved.name, stage_run.name, stage_run.iteration,
                            inst.attempt, inst.index)
        return job

    async def _publish(self, ns: str, body: dict[str, Any], run: _Run) -> None:
        key = (ns, run.resolved.name)
        state = run.record.state
        previous_raw = self.last_status.get(key, body.get("status") or {})
        try:
            previous = PipelineStatus.model_validate(previous_raw) if previous_raw else None
        except ValidationError:
            previous = None
        refs = {n: run.store.ref(r.output_ref) for n, r in state.stages.items() if r.output_ref}
        refs.update({n: run.store.ref(k) for n, (k, _) in decision_outputs(state).items()
                     if k in run.decisions})
        output_ref = run.store.ref(OUTPUT_KEY) if state.final_output is not None else None
        status = to_status(run.resolved, state, output_refs=refs, job_name=self._job_of(run),
                           trace_ref=run.trace_ref, output_ref=output_ref,
                           generation=body["metadata"].get("generation"), previous=previous)
        self.metrics.pipeline_phase(key, state.phase)
        dumped = status.dump()
        for fname, finfo in PipelineStatus.model_fields.items():
            alias = finfo.alias or fname
            dumped.setdefault(alias, None)
        if json.dumps(dumped, sort_keys=True) == json.dumps(_norm(previous_raw, dumped),
                                                            sort_keys=True):
            return
        version = await self.kube.patch_pipeline_status(ns, run.resolved.name, dumped)
        if version:
            self.own_versions[key] = version
        self.last_status[key] = {k: v for k, v in dumped.items() if v is not None}


def _norm(previous: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    out = {k: previous.get(k) for k in like}
    return out
