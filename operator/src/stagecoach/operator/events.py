"""Kubernetes Events for trace events: which ones, and the words. Pure: no side effects.

Events are for ``kubectl describe agentpipeline``: stage start, success, failure and
retry, decisions, skips, the budget, run control (suspend, resume, shutdown), approvals
(requested, with the rendered message; decided), what a ``resumeFrom`` reused and why
the rest runs again, and the pipeline's end. The trace keeps everything.
"""

from __future__ import annotations

from typing import Any

from ..engine import Action
from .jobs import job_name

__all__ = ["EVENT_TYPES", "describe"]

EVENT_TYPES = {"StageStarted", "StageSucceeded", "StageCached", "StageFailed", "Decision",
                "PipelineSucceeded", "PipelineFailed", "StageSkipped", "BudgetExceeded",
                "PipelineSuspended", "PipelineResumed", "ShutdownRequested",
                "ApprovalRequested", "ApprovalDecided", "ResumeDecided"}


def describe(pipeline: str, action: Action, ev: dict[str, Any]) -> tuple[str, str, str]:
    """``(type, reason, message)`` of the Kubernetes Event for a trace event."""
    data = ev.get("data") or {}
    where = ""
    if action.stage:
        inst = f"[{action.index}]" if action.index is not None else ""
        where = f"stage {action.stage}{inst} iteration {action.iteration}"
        if action.attempt:
            where += f" attempt {action.attempt}"
    t = ev["type"]
    if t == "StageStarted":
        jn = job_name(pipeline, action.stage or "", action.iteration or 1, action.attempt or 1,
                      action.index)
        return "Normal", "StageStarted", f"{where} started (job {jn})"
    if t == "StageSucceeded":
        return "Normal", "StageSucceeded", f"{where} succeeded in {data.get('durationMs')} ms"
    if t == "StageCached":
        origin = data.get("from") or {}
        return ("Normal", "StageCached",
                f"{where} answered by the stage cache: produced by pipeline "
                f"{origin.get('pipeline')} (uid {origin.get('uid')}) stage "
                f"{origin.get('stage')} at {data.get('createdAt')}")
    if t == "StageFailed":
        if data.get("willRetry"):
            return ("Warning", "StageRetry", f"{where} failed ({data.get('errorClass')}: "
                    f"{data.get('message')}); retrying at {data.get('nextAttemptAt')}")
        return ("Warning", "StageFailed",
                f"{where} failed ({data.get('errorClass')}): {data.get('message')}")
    if t == "Decision":
        return ("Normal", "Decision", f"{where}: {data.get('kind')} {data.get('expression')!r} "
                f"= {data.get('result')!r} → {data.get('action')}"
                + (f" {data.get('target')}" if data.get("target") else ""))
    if t == "StageSkipped":
        return "Normal", "StageSkipped", f"{where} skipped: {data.get('reason')}"
    if t == "BudgetExceeded":
        if data.get("maxCost") is not None:
            return ("Warning", "BudgetExceeded",
                    f"budget exceeded: {data.get('used')} tokens (max {data.get('maxTokens')}), "
                    f"${data.get('cost')} (max ${data.get('maxCost')})")
        return "Warning", "BudgetExceeded", f"token budget exceeded: {data.get('used')} of " \
            f"{data.get('maxTokens')}"
    if t == "PipelineSucceeded":
        return "Normal", "PipelineSucceeded", "pipeline succeeded"
    control = _control(t, data, where)
    if control is not None:
        return control
    if data.get("phase") == "Cancelled":
        return ("Warning", "PipelineCancelled",
                f"pipeline Cancelled ({data.get('reason')}): {data.get('message')}")
    return "Warning", "PipelineFailed", f"pipeline {data.get('phase')}: {data.get('message')}"


def _control(t: str, data: dict[str, Any], where: str) -> tuple[str, str, str] | None:
    """The Events of run control, approvals and resumeFrom (DESIGN §9)."""
    by = f" (by {data['by']})" if data.get("by") else ""
    if t == "PipelineSuspended":
        return ("Normal", "Suspended",
                f"spec.suspend is true: no new attempt starts, running ones finish{by}")
    if t == "PipelineResumed":
        return "Normal", "Resumed", f"spec.suspend is false: the run continues{by}"
    if t == "ShutdownRequested":
        what = ("running attempts are stopped, finally is skipped"
                if data.get("mode") == "Terminate"
                else "nothing new starts, running attempts and finally finish")
        return "Normal", "ShutdownRequested", f"spec.shutdown: {data.get('mode')}: {what}{by}"
    if t == "ApprovalRequested":
        deadline = f" (until {data['deadline']}, then {data.get('onTimeout')})" \
            if data.get("deadline") else ""
        return ("Normal", "ApprovalRequested",
                f"{where} awaits approval{deadline}: {data.get('message')}")
    if t == "ApprovalDecided":
        verb = "approved" if data.get("decision") == "Approve" else "rejected"
        who = data.get("approver") or ("the timeout" if data.get("by") == "timeout"
                                       else "someone")
        note = f": {data['message']}" if data.get("message") else ""
        inputs = data.get("inputs") or {}
        shown = f" with {', '.join(f'{k}={v}' for k, v in sorted(inputs.items()))}" \
            if inputs else ""
        return "Normal", "ApprovalDecided", f"{where} {verb} by {who}{shown}{note}"
    if t == "ResumeDecided":
        reused = ", ".join(data.get("reused") or []) or "nothing"
        rerun = "; ".join(f"{n}: {why}" for n, why in (data.get("rerun") or {}).items())
        return ("Normal", "ResumeDecided",
                f"resumed from {data.get('source')}: reused {reused}; run again: "
                f"{rerun or 'nothing'}")
    return None
