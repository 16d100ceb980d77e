"""What :func:`~stagecoach.engine.planner.plan` asks the shells to do, and the trace it leaves.

Actions are values. Two of them need a side effect (:class:`StartAttempt` starts a Job or
an in-process attempt; :class:`StopAttempt` stops one); every action also turns into a
trace event through :meth:`Action.event`, so both shells write the same trace. The new
run state returned alongside already reflects every action. No side effects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Action",
    "FinishPipeline",
    "RecordDecision",
    "ResetIteration",
    "ScheduleRetry",
    "SkipStage",
    "StageEvent",
    "StartAttempt",
    "StopAttempt",
    "timestamp",
    "trace_events",
]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts else None


@dataclass(frozen=True)
class Action:
    """Base: every action names its stage instance (or none, for pipeline actions)."""

    stage: str | None = None
    iteration: int | None = None
    attempt: int | None = None
    index: int | None = None

    def event(self) -> dict[str, Any] | None:
        """The trace event for this action (``type`` and ``data``), or None."""
        return None

    def _evt(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": type_,
            "stage": self.stage,
            "iteration": self.iteration,
            "attempt": self.attempt,
            "index": self.index,
            "data": data,
        }


@dataclass(frozen=True)
class StartAttempt(Action):
    """Start one attempt of a stage instance (a Job, or a coroutine locally)."""

    item: Any = None
    provider: str | None = None
    previous_error: str | None = None
    loop_from: str | None = None
    loop_reason: str | None = None

    def event(self) -> dict[str, Any]:
        """``StageStarted``."""
        return self._evt("StageStarted", {"provider": self.provider} if self.provider else {})


@dataclass(frozen=True)
class StopAttempt(Action):
    """Stop a running attempt (timeout, cancellation, pipeline deadline, superseded)."""

    reason: str = "Timeout"
    message: str = ""

    def event(self) -> None:
        """The attempt's end, ``StageFailed`` (class ``Timeout`` or ``Cancelled``), is a
        separate action the engine emits with every stop."""
        return None


@dataclass(frozen=True)
class ScheduleRetry(Action):
    """An attempt failed and will be retried at ``at``: records ``StageFailed``."""

    error_class: str = "Error"
    message: str = ""
    at: datetime | None = None
    duration_ms: int | None = None
    cost: str | None = None
    """USD of the failed attempt's tokens (they were billed), when priced."""

    def event(self) -> dict[str, Any]:
        """``StageFailed`` with ``willRetry: true``."""
        data = {
            "errorClass": self.error_class,
            "message": self.message,
            "willRetry": True,
            "nextAttemptAt": _iso(self.at),
            "durationMs": self.duration_ms,
        }
        if self.cost is not None:
            data["cost"] = self.cost
        return self._evt("StageFailed", data)


@dataclass(frozen=True)
class StageEvent(Action):
    """A pure trace record (StageReady, StageQueued, StageSucceeded, StageFailed...)."""

    type: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def event(self) -> dict[str, Any]:
        """The event as given."""
        return self._evt(self.type, dict(self.data))


@dataclass(frozen=True)
class SkipStage(Action):
    """A stage is skipped (condition false, dependencies skipped, pipeline stopping)."""

    reason: str = ""

    def event(self) -> dict[str, Any]:
        """``StageSkipped``."""
        return self._evt("StageSkipped", {"reason": self.reason})


@dataclass(frozen=True)
class RecordDecision(Action):
    """A CEL evaluation: the expression, the values it read, the result, the action."""

    kind: str = "when"  # when | forEach | route
    expression: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    action: str = "run"  # run | skip | goto | continue | fail
    target: str | None = None
    error: str | None = None
    note: str | None = None
    """Why the action differs from what the result asked for (an exhausted back-edge
    that continues), without being an error."""

    def event(self) -> dict[str, Any]:
        """``Decision``."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "expression": self.expression,
            "values": self.values,
            "result": self.result,
            "action": self.action,
        }
        if self.target:
            data["target"] = self.target
        if self.error:
            data["error"] = self.error
        if self.note:
            data["note"] = self.note
        return self._evt("Decision", data)


@dataclass(frozen=True)
class ResetIteration(Action):
    """A back-edge was taken: ``stages`` go back to Pending in a new iteration."""

    target: str = ""
    reset: tuple[str, ...] = ()

    def event(self) -> None:
        """Recorded through the Decision that caused it."""
        return None


@dataclass(frozen=True)
class FinishPipeline(Action):
    """The pipeline reached its final phase."""

    phase: str = "Succeeded"
    reason: str | None = None
    message: str | None = None
    output: str | None = None
    composed_of: tuple[str, ...] = ()

    def event(self) -> dict[str, Any]:
        """``PipelineSucceeded`` or ``PipelineFailed`` (also for Cancelled)."""
        kind = "PipelineSucceeded" if self.phase == "Succeeded" else "PipelineFailed"
        return self._evt(kind, {"phase": self.phase, "reason": self.reason,
                                "message": self.message})


def timestamp(ts: datetime) -> str:
    """Trace timestamp form: UTC, milliseconds, ``Z`` (DESIGN §5)."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_events(actions: Iterable[Action], now: datetime, pipeline: str,
                 uid: str) -> list[dict[str, Any]]:
    """The trace records of a plan's actions, stamped for one pipeline run; both shells
    append exactly these."""
    out = []
    for action in actions:
        ev = action.event()
        if ev is not None:
            out.append({"ts": timestamp(now), "pipeline": pipeline, "uid": uid, **ev})
    return out
