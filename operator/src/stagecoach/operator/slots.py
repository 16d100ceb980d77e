"""Provider ``maxConcurrency`` across pipelines, shared fairly (DESIGN §3).

The engine admits new attempts of a provider only up to ``free_slots[provider]``; this
ledger decides that number per pipeline. It knows which Jobs hold a slot of each
``(namespace, provider)`` (rebuilt from the API on first use, then kept by the
reconciles: a started attempt takes a slot synchronously, right after planning, so two
pipelines reconciling concurrently never both take the last slot; a finished or deleted
Job gives it back), and which pipelines are waiting for one.

``requestsPerMinute`` is applied at admission too: at most that many attempts of the
provider start in any sliding minute (the runner also limits its own requests).

Fairness is round-robin: waiting pipelines form a queue per provider; a pipeline gets
``free - (pipelines waiting ahead of it)`` slots, and one that took a slot and still
waits goes to the back. So a pipeline whose Job just finished does not grab the slot it
freed while another has been waiting; the waiters are woken instead (:meth:`release`
returns them). In-memory only: after a restart the queue restarts empty. No I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

__all__ = ["ProviderSlots"]

Key = tuple[str, str]  # (namespace, provider)
PipelineKey = tuple[str, str]  # (namespace, pipeline)


class ProviderSlots:
    """Slot holders and waiters per provider."""

    def __init__(self) -> None:
        self.holders: dict[Key, set[str]] = {}
        self.waiting: dict[Key, list[PipelineKey]] = {}
        self.queued: dict[Key, dict[PipelineKey, int]] = {}
        self.started: dict[Key, deque[datetime]] = {}
        """Admission times in the last minute (``requestsPerMinute`` at admission)."""

    def known(self, key: Key) -> bool:
        """Whether the holders of ``key`` were loaded."""
        return key in self.holders

    def load(self, key: Key, jobs: Iterable[str]) -> None:
        """Set the holders from the API's view (first use only)."""
        self.holders.setdefault(key, set()).update(jobs)

    def load_started(self, key: Key, times: Iterable[datetime]) -> None:
        """Admissions the API shows (Jobs' creation times; first use only), so that a
        restarted or newly elected operator keeps ``requestsPerMinute`` across the
        switch instead of starting an empty minute."""
        if key not in self.started:
            self.started[key] = deque(sorted(times))

    def free_for(self, key: Key, pipeline: PipelineKey, limit: int) -> int:
        """Slots ``pipeline`` may take now."""
        free = limit - len(self.holders.get(key, ()))
        queue = self.waiting.get(key, [])
        ahead = queue.index(pipeline) if pipeline in queue else len(queue)
        return max(0, free - ahead)

    def take(self, key: Key, job: str, now: datetime | None = None) -> None:
        """A started attempt's Job holds a slot (and counts against the minute's rate)."""
        self.holders.setdefault(key, set()).add(job)
        if now is not None:
            self.started.setdefault(key, deque()).append(now)

    def rate_free(self, key: Key, per_minute: int,
                  now: datetime) -> tuple[int, datetime | None]:
        """Admissions left in the sliding minute, and when the next one frees up."""
        window = self.started.setdefault(key, deque())
        while window and window[0] <= now - timedelta(minutes=1):
            window.popleft()
        free = per_minute - len(window)
        return max(0, free), (window[0] + timedelta(minutes=1) if free <= 0 else None)

    def release(self, key: Key, job: str) -> list[PipelineKey]:
        """A Job ended: free its slot; returns the pipelines waiting for one."""
        held = self.holders.get(key)
        if held is None or job not in held:
            return []
        held.discard(job)
        return list(self.waiting.get(key, []))

    def update(self, key: Key, pipeline: PipelineKey, waiting: int, started: int) -> None:
        """After a plan: ``waiting`` instances still want a slot, ``started`` got one."""
        queue = self.waiting.setdefault(key, [])
        counts = self.queued.setdefault(key, {})
        if waiting:
            counts[pipeline] = waiting
        else:
            counts.pop(pipeline, None)
        if pipeline in queue and (started or not waiting):
            queue.remove(pipeline)
        if waiting and pipeline not in queue:
            queue.append(pipeline)

    def forget(self, pipeline: PipelineKey) -> None:
        """The pipeline ended or was deleted."""
        for queue in self.waiting.values():
            if pipeline in queue:
                queue.remove(pipeline)
        for counts in self.queued.values():
            counts.pop(pipeline, None)

    def usage(self, key: Key) -> tuple[int, int]:
        """``(in use, queued instances)`` for the provider's status."""
        return len(self.holders.get(key, ())), sum(self.queued.get(key, {}).values())
