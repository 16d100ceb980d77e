"""Kubernetes Events for trace events: which ones, and the words. Pure: no side effects.

Events are for ``kubectl describe agentpipeline``: stage start, success, failure and
retry, decisions, skips, the budget and the pipeline's end. The trace keeps everything.
"""

from __future__ import annotations

from typing import Any

from ..engine import Action
from .jobs import job_name

__all__ = ["EVENT_TYPES", "describe"]

EVENT_TYPES = {"StageStarted", "StageSucceeded", "StageFailed", "Decision",
                "PipelineSucceeded", "PipelineFailed", "StageSkipped", "BudgetExceeded"}


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
        return "Warning", "BudgetExceeded", f"token budget exceeded: {data.get('used')} of " \
            f"{data.get('maxTokens')}"
    if t == "PipelineSucceeded":
        return "Normal", "PipelineSucceeded", "pipeline succeeded"
    return "Warning", "PipelineFailed", f"pipeline {data.get('phase')}: {data.get('message')}"
