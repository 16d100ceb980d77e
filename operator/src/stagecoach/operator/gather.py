"""The gather step's reads, from the watch-fed caches (:mod:`.cache`) where it can.

A reconcile needs its pipeline, its Jobs and, for Jobs whose result it must read, their
pods. :class:`Gatherer` answers from the caches that kopf's watches feed (:mod:`.main`)
and goes to the API only when a cache cannot know:

* the pipeline: the cached object (watch events and our own status patches), a GET
  when the cache never saw it;
* its Jobs: one LIST on a pipeline's first pass (and every :data:`~.cache.RESYNC`, and
  after a failed pass), the cache afterwards; a Job the record says was created but the
  cache lacks is confirmed with a GET before it counts as deleted (:meth:`confirm`);
* pods: the cache of our Succeeded pods, by owning Job (the API server filters that
  watch: :mod:`.main`). An attempt's result is read from its pod's termination
  messages, and a Succeeded pod ends its attempt before the Job controller (which
  batches pod updates for up to a second) marks the Job Complete. A LIST on a run's
  first pass in this process when any of its Jobs finished (pods a crash left behind),
  and whenever a Running attempt's Job finished with no pod cached (a Failed pod, which
  the watch does not carry, or a lagging watch). Unwatched: a LIST only when a finished
  Job's attempt still runs.

All calls go through :class:`~.kube.Kube`; decisions stay in the engine.
"""

from __future__ import annotations

from typing import Any

from ..engine import RunState
from .cache import ObjectCache, owner_of
from .jobs import job_name, pipeline_selector
from .kube import Kube
from .outcomes import job_finished, owned_by, pod_succeeded

__all__ = ["Gatherer", "running_jobs"]

PipelineKey = tuple[str, str]


def running_jobs(pipeline: str, state: RunState) -> set[str]:
    """Names of the Jobs of the attempts ``state`` has Running. No side effects."""
    return {job_name(pipeline, sr.name, sr.iteration, i.attempt, i.index)
            for sr in state.stages.values() for i in sr.instances if i.phase == "Running"}


class Gatherer:
    """Cached reads of pipelines, Jobs and pods for the reconciler."""

    def __init__(self, kube: Kube, *, watched: bool = False) -> None:
        self.kube = kube
        self.watched = watched
        """The caches are fed by watches (the operator, :mod:`.main`); off (a reconciler
        driven by hand, as in unit tests): every pass reads the API."""
        self.pipelines = ObjectCache()
        """AgentPipelines, fed by the watch and our status patches."""
        self.jobs = ObjectCache(owner=owner_of)
        """Stagecoach's Jobs by owning pipeline, fed by the watch and our creations."""
        self.pod_cache = ObjectCache(owner=lambda o: owner_of(o, "Job"))
        """Stagecoach's pods by owning Job, fed by the watch and our LISTs."""
        self._swept: set[PipelineKey] = set()
        kube.on_write = self.wrote

    def wrote(self, obj: dict[str, Any]) -> None:
        """The object one of our writes returned."""
        kind = obj.get("kind")
        if kind == "AgentPipeline":
            self.pipelines.put(obj)
        elif kind == "Job":
            self.jobs.put(obj)

    async def pipeline(self, ns: str, name: str) -> dict[str, Any] | None:
        """The pipeline (do not mutate it), or None when it does not exist."""
        body = self.pipelines.get(ns, name) if self.watched else None
        if body is None:
            body = await self.kube.get_pipeline(ns, name)
            if body is not None:
                self.pipelines.put(body)
        return body

    async def owned_jobs(self, key: PipelineKey, uid: str) -> dict[str, dict[str, Any]]:
        """The pipeline's Jobs (of this ``uid``) by name."""
        if not self.watched or not self.jobs.seeded(key):
            items, version = await self.kube.list_jobs_at(key[0], pipeline_selector(key[1]))
            self.jobs.seed(key, items, version)
        return {j["metadata"]["name"]: j for j in self.jobs.owned(*key) if owned_by(j, uid)}

    async def confirm(self, ns: str, name: str, uid: str) -> dict[str, Any] | None:
        """A Job the cache lacks, from the API (a lagging watch is no deletion)."""
        job = await self.kube.get_job(ns, name)
        if job is None or not owned_by(job, uid):
            return None
        self.jobs.put({"apiVersion": "batch/v1", "kind": "Job", **job})
        return job

    def pipeline_of_pod(self, pod: dict[str, Any]) -> PipelineKey | None:
        """The pipeline whose Job owns ``pod`` (None: not a Job we know)."""
        ns = (pod.get("metadata") or {}).get("namespace")
        job = owner_of(pod, "Job")
        known = self.jobs.get(ns, job) if ns and job else None
        owner = owner_of(known) if known is not None else None
        return (ns, owner) if ns and owner else None

    async def pods(self, key: PipelineKey, jobs: dict[str, dict[str, Any]],
                   running: set[str]) -> dict[str, list[dict[str, Any]]]:
        """Pods per Job name: from the cache when watched; else listed only when a
        Running attempt's Job finished (or on this run's first pass here, when any Job
        finished), otherwise empty."""
        finished = {n for n, j in jobs.items() if job_finished(j)}
        if self.watched:
            cached = {jn: self.pod_cache.owned(key[0], jn) for jn in jobs}
            # The watch carries only Succeeded pods: a finished Job whose cached pod is not
            # Succeeded holds an older copy (listed while it ran), never its final status.
            lagging = any(not cached[jn] or not any(pod_succeeded(p) for p in cached[jn])
                          for jn in finished & running)
            if not (finished and (key not in self._swept or lagging)):
                return {jn: p for jn, p in cached.items() if p}
        elif not finished or (key in self._swept and not finished & running):
            return {}
        self._swept.add(key)
        job_uids = {j["metadata"].get("uid"): jn for jn, j in jobs.items()}
        pods: dict[str, list[dict[str, Any]]] = {}
        for pod in await self.kube.list_pods(key[0], pipeline_selector(key[1])):
            self.pod_cache.put(pod)
            owners = pod.get("metadata", {}).get("ownerReferences") or []
            jn = next((job_uids[o.get("uid")] for o in owners if o.get("uid") in job_uids),
                      None)
            if jn:
                pods.setdefault(jn, []).append(pod)
        return pods

    def forget_pod(self, pod: dict[str, Any]) -> None:
        """A pod we deleted: out of the cache (older copies never come back)."""
        meta = pod.get("metadata") or {}
        try:
            version: int | None = int(str(meta.get("resourceVersion")))
        except ValueError:
            version = None
        self.pod_cache.remove(str(meta.get("namespace")), str(meta.get("name")), version)

    def failed(self, key: PipelineKey) -> None:
        """A pass failed: list the Jobs and pods again on the next one."""
        self.jobs.unseed(key)
        self._swept.discard(key)

    def forget(self, key: PipelineKey) -> None:
        """A deleted pipeline."""
        self.pipelines.remove(*key)
        for job in self.jobs.owned(*key):
            self.pod_cache.forget((key[0], job["metadata"]["name"]))
        self.jobs.forget(key)
        self._swept.discard(key)
