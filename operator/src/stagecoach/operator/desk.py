"""The apply side of run control (DESIGN §9), kept out of the reconcile cycle.

:class:`ControlDesk` carries out what :mod:`.approvals` and :mod:`.resume` decide: it
answers StageApprovals in their status (and refusals as a Warning Event on the
pipeline), refuses the approvals of pipelines that are gone, finished or not started,
stores approval decisions as their stages' outputs, holds a pipeline whose
``resumeFrom`` source is still running (``Pending``, reason ``WaitingForResumeSource``)
and remembers who waits for whom so the source's watch events wake the waiter. It holds
the index of unanswered approvals the watch feeds. All API calls go through
:class:`~.kube.Kube`; the reconciler decides when each is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..engine import ApprovalVerdict, RunState
from ..store import Store, encode_output
from .approvals import (
    ApprovalIndex,
    decision_outputs,
    finished_refusal,
    missing_refusal,
    status_patch,
)
from .kube import Kube
from .resume import ResumeWait

__all__ = ["SOURCE_RECHECK", "ControlDesk"]

log = logging.getLogger("stagecoach.operator")

PipelineKey = tuple[str, str]
TERMINAL = {"Succeeded", "Failed", "Cancelled", "Invalid"}
SOURCE_RECHECK = timedelta(seconds=30)
"""Backstop for a pipeline waiting on its ``resumeFrom`` source (its events wake it)."""


class ControlDesk:
    """StageApproval answers, decision outputs and ``resumeFrom`` waits."""

    def __init__(self, kube: Kube, clock: Callable[[], datetime],
                 wake: Callable[[PipelineKey, datetime], None]) -> None:
        self.kube = kube
        self.clock = clock
        self.wake = wake
        self.approvals = ApprovalIndex()
        """Unanswered StageApprovals, fed by the watch (:mod:`.approvals`)."""
        self.waiters: dict[PipelineKey, set[PipelineKey]] = {}
        """``resumeFrom`` source → the pipelines waiting for it to finish."""

    # -- StageApprovals ------------------------------------------------------------------
    async def answer(self, ns: str, body: dict[str, Any] | None,
                     verdicts: list[ApprovalVerdict]) -> None:
        """Patch each StageApproval's status with its verdict (refusals also as a Warning
        Event on the pipeline ``body``); answered ones leave the index."""
        if not verdicts:
            return
        now = self.clock()
        await asyncio.gather(*(self.kube.patch_approval_status(ns, v.name,
                                                               status_patch(v, now))
                               for v in verdicts))
        pipeline = (body or {}).get("metadata", {}).get("name")
        for v in verdicts:
            self.approvals.answered(ns, v.name)
            log.info("%s/%s: StageApproval %s %s: %s", ns, pipeline, v.name, v.phase,
                     v.message)
        if body is not None:
            await asyncio.gather(*(self.kube.post_event(
                ns, body, "Warning", "ApprovalRefused", f"StageApproval {v.name}: {v.message}")
                for v in verdicts if not v.accepted))

    async def refuse_missing(self, ns: str, name: str) -> None:
        """Refuse the approvals naming a pipeline that does not exist."""
        await self.answer(ns, None, missing_refusal(self.approvals.pending((ns, name)), ns,
                                                    name))

    async def refuse_idle(self, ns: str, body: dict[str, Any]) -> None:
        """Refuse the approvals of a pipeline that is not running (finished, Invalid,
        failed to start, or waiting for its ``resumeFrom`` source)."""
        key = (ns, body["metadata"]["name"])
        pending = self.approvals.pending(key)
        if not pending:
            return
        live = await self.kube.get_pipeline(ns, key[1]) or body  # the status just written
        status = live.get("status") or {}
        phase = status.get("phase") or "Pending"
        why = None if phase in TERMINAL else (status.get("message") or "it has not started")
        await self.answer(ns, live, finished_refusal(pending, key[1], phase, why))

    @staticmethod
    async def store_decisions(store: Store, state: RunState, written: set[str]) -> None:
        """Store the approval decisions of ``state`` as their stages' outputs, once per
        process (``written``: keys stored already; a restart writes them again, before
        any downstream Job is created)."""
        for key, value in decision_outputs(state).values():
            if key not in written:
                await store.put(key, encode_output(value, "json"))
                written.add(key)

    # -- resumeFrom ----------------------------------------------------------------------
    async def await_source(self, ns: str, body: dict[str, Any], source: str,
                           wait: ResumeWait) -> str | None:
        """Stay Pending until the ``resumeFrom`` source finishes (its events wake us, a
        timer is the backstop); returns the resourceVersion of a status patch made."""
        key = (ns, body["metadata"]["name"])
        self.waiters.setdefault((ns, source), set()).add(key)
        self.wake(key, self.clock() + SOURCE_RECHECK)
        status = {"phase": "Pending", "reason": wait.reason, "message": wait.message,
                  "observedGeneration": body["metadata"].get("generation")}
        if {k: (body.get("status") or {}).get(k) for k in status} == status:
            return None
        version = await self.kube.patch_pipeline_status(ns, key[1], status)
        await self.kube.post_event(ns, body, "Normal", wait.reason, wait.message)
        log.info("pipeline %s/%s: %s", ns, key[1], wait.message)
        return version

    def source_changed(self, key: PipelineKey) -> set[PipelineKey]:
        """Pipeline ``key`` finished or went: the pipelines waiting to resume from it."""
        return self.waiters.pop(key, set())

    def forget(self, key: PipelineKey) -> None:
        """A deleted pipeline waits for nothing any more."""
        for waiting in self.waiters.values():
            waiting.discard(key)
