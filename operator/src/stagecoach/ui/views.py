"""What the web UI shows, computed from what a run left: list rows, the run page's
fragments and the attempts index. Pure (no I/O): the sources (:mod:`.sources`) read, this
module formats. Payloads (prompts, answers, outputs) only ever leave here inside the
report's escaped HTML (:mod:`stagecoach.report.page`) or as JSON strings the page sets as
text, never as markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..api import (
    AgentPipeline,
    AgentPipelineTemplate,
    PipelineStatus,
    ResolvedStage,
    format_usd,
    parse_documents,
    parse_usd,
    resolve_pipeline,
)
from ..report import RunData, render_attempt, render_sections
from ..report.gantt import anchor, legend, render_gantt
from .graph import render_graph

__all__ = ["ATTEMPT_PAGE", "attempt_html", "attempt_page", "run_page", "stages_of", "summary"]

ATTEMPT_PAGE = 200
"""Attempts per page of a run's index (5,000 forEach instances stay one request each)."""
GANTT_LIMIT = 1500
"""Above this many attempts the page shows the timeline only on request (it is the
report's full SVG: one row per instance)."""


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def summary(run_id: str, name: str, status: PipelineStatus | None, *, source: str,
            namespace: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """One row of the run list."""
    st = status or PipelineStatus()
    started, finished = st.started_at, st.finished_at
    end = finished or now
    duration = (end - started).total_seconds() if started and end else None
    cost = format_usd(parse_usd(st.cost)) if st.cost is not None else None
    return {"id": run_id, "name": name, "namespace": namespace, "source": source,
            "phase": st.phase, "reason": st.reason, "progress": st.progress,
            "startedAt": _ts(started), "finishedAt": _ts(finished), "duration": duration,
            "tokens": st.tokens.total, "cost": cost}


def stages_of(manifest: str | None) -> tuple[list[ResolvedStage], list[ResolvedStage]]:
    """The (stages, finally stages) of a run's manifest (the resolved ``pipeline.yaml``,
    or a cluster run's template and pipeline); empty when it cannot be read."""
    if not manifest:
        return [], []
    loaded = parse_documents(manifest)
    pipelines = [d.obj for d in loaded.documents if isinstance(d.obj, AgentPipeline)]
    templates = {d.obj.metadata.name: d.obj for d in loaded.documents
                 if isinstance(d.obj, AgentPipelineTemplate)}
    if not pipelines:
        return [], []
    resolved, _ = resolve_pipeline(pipelines[0], templates)
    if resolved is None:
        return [], []
    return list(resolved.stages), list(resolved.finally_stages)


def _approvals(stages: list[ResolvedStage], status: PipelineStatus) -> list[dict[str, Any]]:
    """Approval stages waiting for a decision, with their rendered message and inputs."""
    by_name = {s.name: s for s in stages}
    out = []
    for st in status.stages:
        spec = by_name.get(st.name)
        if spec is None or spec.approval is None or st.phase != "Waiting" or \
                st.reason != "AwaitingApproval":
            continue
        out.append({"stage": st.name, "iteration": st.iteration, "message": st.message,
                    "inputs": [i.dump() for i in spec.approval.inputs]})
    return out


def run_page(run_id: str, data: RunData, *, source: str, controls: list[str],
             full_timeline: bool = False) -> dict[str, Any]:
    """Everything the run page shows, as JSON: facts, the escaped report fragments, the
    DAG, waiting approvals, the first page of attempts and the controls allowed."""
    stages, finals = stages_of(data.manifest)
    status = {s.name: s for s in data.status.stages}
    sections = render_sections(data)
    many = len(data.attempts) > GANTT_LIMIT and not full_timeline
    sections["timeline"] = (
        f'<section id="timeline"><h2>Timeline</h2><p class="muted">{len(data.attempts)} '
        'attempts: <button type="button" data-action="full-timeline">show the whole '
        "timeline</button></p></section>" if many else
        f'<section id="timeline"><h2>Timeline</h2>{legend()}{render_gantt(data)}</section>')
    terminal = data.terminal
    return {
        "id": run_id, "name": data.name, "source": source, "phase": data.phase,
        "terminal": terminal, "progress": data.status.progress,
        "graph": render_graph(stages, finals, status),
        "sections": sections,
        "approvals": [] if terminal else _approvals(stages, data.status),
        # a finished run can only be retried, and only when there is something to retry
        "controls": [c for c in controls if (not terminal and c != "retry")
                     or (terminal and c == "retry" and data.phase in ("Failed", "Cancelled"))],
        "attempts": attempt_page(data, 0),
        "finalOutput": data.final_output,
        "warnings": [w for w in data.warnings if not w.startswith("trace.jsonl is missing")],
    }


def attempt_page(data: RunData, offset: int, limit: int = ATTEMPT_PAGE) -> dict[str, Any]:
    """One page of the attempts index (label, outcome, stage, anchor), in timeline order."""
    rows = data.timeline()
    offset = max(0, offset)
    page = rows[offset: offset + max(1, min(limit, 1000))]
    return {"total": len(rows), "offset": offset,
            "items": [{"key": anchor(a), "label": a.label, "stage": a.stage,
                       "outcome": a.outcome, "seconds": round(a.seconds, 3),
                       "errorClass": a.error_class, "cached": a.cached is not None}
                      for a in page]}


def attempt_html(data: RunData, key: str) -> str | None:
    """The escaped block of the attempt whose anchor is ``key``, or None."""
    for a in data.attempts:
        if anchor(a) == key:
            return render_attempt(a, data).replace("<details ", "<details open ", 1)
    return None
