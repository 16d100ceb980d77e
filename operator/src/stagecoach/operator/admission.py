"""Provider limits at admission (DESIGN §3): which starts a pipeline may make now.

``maxConcurrency`` holds across all pipelines (slots held by running agent Jobs, queued
pipelines served round-robin, :class:`~.slots.ProviderSlots`), and ``requestsPerMinute``
by a sliding minute of admissions. After a start or a leader takeover both are rebuilt
from the cluster's Jobs (their provider label and creation time), so limits hold across
a restart. The ModelProvider status (``inUse``, ``queued``) is published on a change.
The reconciler asks :meth:`ProviderAdmission.free` before planning and reports the
plan's starts with :meth:`~ProviderAdmission.account`; API calls go through
:class:`~.kube.Kube`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..api import ModelProvider, ResolvedPipeline
from ..engine import RunState, StartAttempt
from .jobs import PROVIDER_LABEL, job_name
from .kube import Kube
from .outcomes import job_finished
from .slots import ProviderSlots

__all__ = ["ProviderAdmission"]

PipelineKey = tuple[str, str]


class ProviderAdmission:
    """Slots and rate windows of the providers, as the operator admits stages."""

    def __init__(self, kube: Kube, slots: ProviderSlots,
                 trigger: Callable[[PipelineKey], None]) -> None:
        self.kube = kube
        self.slots = slots
        self.trigger = trigger
        self._published: dict[tuple[str, str], tuple[int, int]] = {}

    @staticmethod
    def limit(providers: dict[str, ModelProvider], name: str) -> int | None:
        """The provider's ``maxConcurrency`` (None: unlimited or unknown)."""
        p = providers.get(name)
        return p.spec.limits.max_concurrency if p is not None else None

    async def free(self, ns: str, key: PipelineKey, resolved: ResolvedPipeline,
                   providers: dict[str, ModelProvider], now: datetime
                   ) -> tuple[dict[str, int], datetime | None]:
        """Starts pipeline ``key`` may make per provider now, and when a rate window
        frees the next one."""
        free: dict[str, int] = {}
        wake: datetime | None = None
        wanted = {s.provider for s in resolved.all_stages if s.provider}
        for name in sorted(wanted):
            p = providers.get(name)
            rpm = p.spec.limits.requests_per_minute if p is not None else None
            pkey = (ns, name)
            limit = self.limit(providers, name)
            if (rpm is not None and pkey not in self.slots.started) or (
                    limit is not None and not self.slots.known(pkey)):
                # First use since start or takeover: rebuild from the cluster's Jobs.
                jobs = await self.kube.list_jobs(ns, f"{PROVIDER_LABEL}={name}")
                if not self.slots.known(pkey):
                    self.slots.load(pkey, [j["metadata"]["name"] for j in jobs
                                           if not job_finished(j)])
                self.slots.load_started(pkey, [
                    t for t in (_created(j) for j in jobs)
                    if t is not None and t > now - timedelta(minutes=1)])
            if rpm is not None:
                left, at = self.slots.rate_free((ns, name), rpm, now)
                free[name] = left
                if at is not None:
                    wake = at if wake is None else min(wake, at)
            if limit is None:
                continue
            free[name] = min(free.get(name, limit), self.slots.free_for(pkey, key, limit))
        return free, wake

    def account(self, ns: str, key: PipelineKey, resolved: ResolvedPipeline,
                state: RunState, starts: list[StartAttempt],
                providers: dict[str, ModelProvider], now: datetime) -> None:
        """The plan's starts take their slots; waiting instances keep their queue place."""
        started: dict[str, int] = {}
        for s in starts:
            if s.provider and s.provider in providers:
                assert s.stage is not None and s.iteration is not None
                jn = job_name(resolved.name, s.stage, s.iteration, s.attempt or 1, s.index)
                if self.limit(providers, s.provider) is not None:
                    self.slots.take((ns, s.provider), jn, now)
                else:
                    self.slots.started.setdefault((ns, s.provider), deque()).append(now)
                started[s.provider] = started.get(s.provider, 0) + 1
        waiting: dict[str, int] = {}
        for st in resolved.all_stages:
            for inst in state.stages[st.name].instances:
                if inst.phase == "Queued" and inst.reason == "WaitingForProvider" and st.provider:
                    waiting[st.provider] = waiting.get(st.provider, 0) + 1
        for name in set(waiting) | set(started):
            self.slots.update((ns, name), key, waiting.get(name, 0), started.get(name, 0))

    async def publish(self, ns: str, providers: dict[str, ModelProvider]) -> None:
        """ModelProvider status (inUse, queued) for limited providers, on a change."""
        for name in sorted(providers):
            if self.limit(providers, name) is None or not self.slots.known((ns, name)):
                continue
            usage = self.slots.usage((ns, name))
            if self._published.get((ns, name)) == usage:
                continue
            self._published[(ns, name)] = usage
            await self.kube.patch_provider_status(ns, name, {"inUse": usage[0],
                                                             "queued": usage[1]})

    def release_job(self, ns: str, job: dict[str, Any]) -> None:
        """A finished or deleted Job gives its slot back."""
        provider = job["metadata"].get("labels", {}).get(PROVIDER_LABEL)
        if provider:
            self.release(ns, provider, job["metadata"]["name"])

    def release(self, ns: str, provider: str, jn: str) -> None:
        """Free ``jn``'s slot and wake the pipelines waiting for one."""
        for waiter in self.slots.release((ns, provider), jn):
            self.trigger(waiter)


def _created(obj: dict[str, Any]) -> datetime | None:
    raw = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
