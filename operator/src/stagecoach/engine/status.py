"""Run state → ``status`` (DESIGN §4): the shape both shells publish.

The operator patches it into the CR's status subresource; the local executor writes it
to ``status.json``. Only references and counters, never payloads, so a 1,000-stage
pipeline stays far below etcd's request limit. No side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from ..api import (
    Condition,
    InstanceCounts,
    PipelineStatus,
    ResolvedPipeline,
    StageStatus,
    TokenUsage,
    format_usd,
    parse_usd,
)
from .state import RunState, StageRun

__all__ = ["to_status"]

_MAX_MESSAGE = 512


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= _MAX_MESSAGE:
        return text
    return text[: _MAX_MESSAGE - 1] + "…"


def _stage_status(run: StageRun, job_name: Callable[[StageRun], str | None] | None,
                  output_ref: str | None) -> StageStatus:
    waiting = [i.next_attempt_at for i in run.instances
               if i.phase == "Waiting" and i.next_attempt_at is not None]
    started = [i.started_at for i in run.instances if i.started_at is not None]
    counts = None
    if run.fan_out:
        counts = InstanceCounts(
            total=len(run.instances),
            succeeded=sum(1 for i in run.instances if i.phase == "Succeeded"),
            failed=sum(1 for i in run.instances if i.phase == "Failed"),
            running=sum(1 for i in run.instances if i.phase == "Running"),
        )
    reason = run.reason
    message = run.message
    if reason is None:
        pending = next((i for i in run.instances if i.reason), None)
        if pending is not None:
            reason, message = pending.reason, pending.message
    return StageStatus(
        name=run.name,
        phase=run.phase,
        iteration=run.iteration,
        attempt=run.attempt,
        job=job_name(run) if job_name else None,
        started_at=min(started) if started else run.started_at,
        finished_at=run.finished_at,
        next_attempt_at=min(waiting) if waiting else None,
        reason=reason,
        message=_short(message),
        output_ref=output_ref,
        tokens=TokenUsage(input=run.tokens.input, output=run.tokens.output),
        cost=format_usd(parse_usd(run.cost)),
        instances=counts,
    )


def _condition(type_: str, ok: bool | None, reason: str, message: str | None,
               now: datetime | None) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type=type_, status=status, reason=reason, message=_short(message),
                     last_transition_time=now)


def to_status(
    pipeline: ResolvedPipeline,
    state: RunState,
    *,
    output_refs: Mapping[str, str] | None = None,
    job_name: Callable[[StageRun], str | None] | None = None,
    trace_ref: str | None = None,
    output_ref: str | None = None,
    generation: int | None = None,
    previous: PipelineStatus | None = None,
) -> PipelineStatus:
    """Build the status. ``output_refs``: stage → reference of its latest output."""
    refs = dict(output_refs or {})
    regular = [state.stages[s.name] for s in pipeline.stages]
    done = sum(1 for r in regular if r.phase in {"Succeeded", "Failed", "Skipped"})
    now = state.finished_at or state.started_at
    running = state.phase == "Running"
    succeeded = {"Succeeded": True, "Failed": False, "Cancelled": False}.get(state.phase)
    conditions = [
        _condition("Valid", True, "Valid", None, state.started_at),
        _condition("Running", running, state.phase, None, now),
        _condition("Succeeded", succeeded, state.reason or state.phase, state.message, now),
    ]
    if previous is not None:  # keep transition times of conditions that did not change
        old = {c.type: c for c in previous.conditions}
        conditions = [
            c.model_copy(update={"last_transition_time": old[c.type].last_transition_time})
            if c.type in old and old[c.type].status == c.status else c
            for c in conditions
        ]
    return PipelineStatus(
        phase=state.phase,
        observed_generation=generation,
        started_at=state.started_at,
        finished_at=state.finished_at,
        message=_short(state.message or (state.failure[1] if state.failure else None)),
        reason=state.reason,
        progress=f"{done}/{len(regular)}",
        conditions=conditions,
        tokens=TokenUsage(input=state.tokens.input, output=state.tokens.output),
        cost=format_usd(parse_usd(state.cost)),
        stages=[_stage_status(state.stages[s.name], job_name, refs.get(s.name))
                for s in pipeline.all_stages],
        trace_ref=trace_ref,
        output_ref=output_ref,
    )
