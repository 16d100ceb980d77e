"""Scheduling reconciles: one at a time per pipeline, many pipelines in parallel.

Watch events and timers call :meth:`Runtime.trigger`; a pipeline has at most one worker
task, which reconciles while the pipeline is marked dirty, so a burst of Job events
collapses into one or two passes and two passes of the same pipeline never overlap.
Timers (``loop.call_at``) exist only for the engine's ``wake_at``: backoff, attempt and
pipeline deadlines. A failed pass is retried with exponential backoff (capped at 30 s);
the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from ..store import StoreError
from .kube import namespace_terminating

__all__ = ["Runtime"]

log = logging.getLogger("stagecoach.operator")

PipelineKey = tuple[str, str]


class Runtime:
    """Per-pipeline serialisation, coalescing and timers around a reconcile function."""

    def __init__(self, reconcile: Callable[[str, str], Awaitable[None]],
                 observe: Callable[[float], None] | None = None) -> None:
        self.reconcile = reconcile
        self.observe = observe
        self._dirty: set[PipelineKey] = set()
        self._workers: dict[PipelineKey, asyncio.Task[None]] = {}
        self._timers: dict[PipelineKey, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[PipelineKey, int] = {}
        self.latencies: list[float] = []
        """Seconds per reconcile pass (for metrics and the benchmark)."""

    def trigger(self, key: PipelineKey) -> None:
        """Reconcile ``key`` soon (now, or right after the pass in progress)."""
        self._dirty.add(key)
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._work(key), name=f"reconcile {key[0]}/{key[1]}")

    def wake(self, key: PipelineKey, at: datetime) -> None:
        """Reconcile ``key`` at ``at`` (keeps only the earliest pending timer)."""
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.01
        when = loop.time() + delay
        old = self._timers.get(key)
        if old is not None and not old[1].cancelled() and old[0] <= when and old[0] > loop.time():
            return
        if old is not None:
            old[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: PipelineKey) -> None:
        self._timers.pop(key, None)
        self.trigger(key)

    def forget(self, key: PipelineKey) -> None:
        """Cancel the timer of a deleted pipeline."""
        old = self._timers.pop(key, None)
        if old is not None:
            old[1].cancel()

    async def _work(self, key: PipelineKey) -> None:
        while key in self._dirty:
            self._dirty.discard(key)
            started = time.monotonic()
            try:
                await self.reconcile(*key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if namespace_terminating(e):  # its deletion is under way: nothing to retry
                    log.info("%s/%s: its namespace is being deleted; not reconciled", *key)
                    continue
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                delay = min(30.0, 0.5 * 2 ** (n - 1))
                if isinstance(e, StoreError):  # the API said no (a conflict, a timeout)
                    log.warning("reconcile of %s/%s failed (retry in %.1fs): %s", *key, delay,
                                e)
                else:  # a bug: keep the traceback
                    log.exception("reconcile of %s/%s failed (retry in %.1fs)", *key, delay)
                loop = asyncio.get_running_loop()
                loop.call_later(delay, self.trigger, key)
            finally:
                elapsed = time.monotonic() - started
                self.latencies.append(elapsed)
                if self.observe is not None:
                    self.observe(elapsed)
                if len(self.latencies) > 10_000:
                    del self.latencies[:5_000]
        if self._workers.get(key) is asyncio.current_task():
            del self._workers[key]  # idle pipelines hold no task

    async def drain(self) -> None:
        """Wait for the reconciles in progress (shutdown)."""
        tasks = [t for t in self._workers.values() if not t.done()]
        for _, handle in self._timers.values():
            handle.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
