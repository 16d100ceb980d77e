"""What people ask of a running pipeline: ``spec.suspend``/``spec.shutdown`` read as
a :class:`~stagecoach.engine.Control` (:func:`control_of`), and StageApprovals, kept in
an in-memory index fed by the watch.

A ``StageApproval`` (DESIGN §9) is one person's decision on one approval stage. The
operator answers each exactly once, in its ``status``: ``Accepted`` when the engine
applied it, ``Refused`` with a reason otherwise (wrong stage, not waiting, bad inputs,
the pipeline does not exist or finished). :class:`ApprovalIndex` holds the unanswered
ones per pipeline, fed by the kopf watch (:mod:`.main`), so a reconcile lists nothing:
the API request budget per pass stays what it was. A restart rebuilds the index from
the watch's initial listing; the answered ones (``status.phase`` set) are left out.

Answering is crash-safe: the engine remembers each verdict by the approval's name in the
run state (:attr:`~stagecoach.engine.RunState.approvals`), the reconciler writes that
state *before* patching the approvals' status, so a restart in between answers the same
way again. The refusals for a pipeline that is gone or finished are decided here (the
engine never sees those pipelines).

An approved stage's output (``{approved, approver, at, inputs, message}``) lives in the
run state (no pod wrote it). Stage pods read upstream outputs from the store by key, so
the reconciler also writes it as the stage's output object (:func:`decision_outputs`)
before any downstream Job exists, and hands the attempts a view of the state that
points there (:func:`with_decision_refs`); status ``outputRef`` and ``stagecoach trace``
show it like any output. No I/O here: the reconciler writes and patches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api import StageApproval
from ..engine import ApprovalDecision, ApprovalVerdict, Control, RunState, timestamp
from ..engine.state import copy_state
from ..store import output_key

__all__ = ["ApprovalIndex", "Pending", "control_of", "decision_outputs", "finished_refusal",
           "invalid_refusals", "missing_refusal", "status_patch", "with_decision_refs"]

PipelineKey = tuple[str, str]


def control_of(body: dict[str, Any]) -> Control:
    """The run-control fields of an AgentPipeline as the engine takes them (the live
    object: these two fields change after creation, the rest never does)."""
    spec = body.get("spec") or {}
    shutdown = spec.get("shutdown")
    return Control(suspend=bool(spec.get("suspend")),
                   shutdown=shutdown if shutdown in ("Stop", "Terminate") else None)


@dataclass(frozen=True)
class Pending:
    """An unanswered StageApproval: its decision, or why it cannot be one."""

    name: str
    uid: str
    decision: ApprovalDecision | None
    invalid: str | None = None
    """Set when the object does not parse (the CRD schema should have stopped it)."""


def _parse(body: dict[str, Any]) -> Pending:
    meta = body.get("metadata") or {}
    name, uid = str(meta.get("name")), str(meta.get("uid") or "")
    try:
        obj = StageApproval.model_validate(body)
    except ValidationError as e:
        return Pending(name, uid, None, f"the StageApproval is malformed: {e}")
    s = obj.spec
    created = meta.get("creationTimestamp")
    at = datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None
    return Pending(name, uid, ApprovalDecision(
        name=name, stage=s.stage, decision=s.decision, approver=s.approver,
        iteration=s.iteration, inputs=dict(s.inputs), message=s.message, at=at))


@dataclass
class ApprovalIndex:
    """Unanswered StageApprovals by pipeline, from watch events."""

    _by_pipeline: dict[PipelineKey, dict[str, Pending]] = field(default_factory=dict)
    _where: dict[tuple[str, str], PipelineKey] = field(default_factory=dict)
    _answered: set[str] = field(default_factory=set)
    """UIDs answered by this process whose status echo may not have arrived yet."""

    def observe(self, type_: str | None, body: dict[str, Any]) -> PipelineKey | None:
        """Fold one watch event in; returns the pipeline to reconcile (None: nothing
        new to decide)."""
        meta = body.get("metadata") or {}
        ns, name, uid = meta.get("namespace"), meta.get("name"), str(meta.get("uid") or "")
        if not ns or not name:
            return None
        pipeline = str((body.get("spec") or {}).get("pipeline") or "")
        answered = bool((body.get("status") or {}).get("phase"))
        if type_ == "DELETED" or answered or not pipeline:
            self._drop(ns, name)
            if type_ == "DELETED":
                self._answered.discard(uid)
            return None
        if uid in self._answered:
            return None
        key = (ns, pipeline)
        self._drop(ns, name)
        self._by_pipeline.setdefault(key, {})[name] = _parse(body)
        self._where[(ns, name)] = key
        return key

    def _drop(self, ns: str, name: str) -> None:
        key = self._where.pop((ns, name), None)
        if key is None:
            return
        bucket = self._by_pipeline.get(key, {})
        bucket.pop(name, None)
        if not bucket:
            self._by_pipeline.pop(key, None)

    def pending(self, key: PipelineKey) -> list[Pending]:
        """The unanswered approvals naming pipeline ``key``, oldest first."""
        items = list(self._by_pipeline.get(key, {}).values())
        return sorted(items, key=lambda p: (p.decision.at.isoformat() if p.decision
                                            and p.decision.at else "", p.name))

    def decisions(self, key: PipelineKey) -> list[ApprovalDecision]:
        """The well-formed pending decisions for ``key`` (what the engine judges)."""
        return [p.decision for p in self.pending(key) if p.decision is not None]

    def answered(self, ns: str, name: str) -> None:
        """``name``'s status was patched: it is no longer pending."""
        key = self._where.get((ns, name))
        if key is not None:
            item = self._by_pipeline.get(key, {}).get(name)
            if item is not None and item.uid:
                self._answered.add(item.uid)
        self._drop(ns, name)

    def waiting(self) -> int:
        """Unanswered approvals in the index (for tests and metrics)."""
        return sum(len(v) for v in self._by_pipeline.values())


def missing_refusal(pending: Iterable[Pending], ns: str,
                    pipeline: str) -> list[ApprovalVerdict]:
    """Refuse approvals naming a pipeline that does not exist."""
    return [ApprovalVerdict(p.name, False, "PipelineNotFound",
                            f"there is no pipeline {pipeline} in namespace {ns}: "
                            "nothing was approved or rejected")
            for p in pending]


def finished_refusal(pending: Iterable[Pending], pipeline: str, phase: str,
                     why: str | None = None) -> list[ApprovalVerdict]:
    """Refuse approvals for a pipeline that finished (or never started: ``why``)."""
    out = []
    for p in pending:
        stage = p.decision.stage if p.decision else "?"
        reason = "PipelineFinished" if why is None else "PipelineNotRunning"
        message = (f"pipeline {pipeline} already finished ({phase}); stage {stage} is not "
                   "waiting" if why is None else f"pipeline {pipeline} is not running "
                   f"({why}); stage {stage} is not waiting")
        out.append(ApprovalVerdict(p.name, False, reason, message))
    return out


def invalid_refusals(pending: Iterable[Pending]) -> list[ApprovalVerdict]:
    """Refuse the approvals that do not parse."""
    return [ApprovalVerdict(p.name, False, "Invalid", p.invalid or "malformed")
            for p in pending if p.decision is None]


def status_patch(verdict: ApprovalVerdict, now: datetime) -> dict[str, Any]:
    """The StageApproval ``status`` for ``verdict``."""
    return {"phase": verdict.phase, "reason": verdict.reason,
            "message": verdict.message[:2000], "decidedAt": timestamp(now)}


def decision_outputs(state: RunState) -> dict[str, tuple[str, Any]]:
    """The outputs the engine keeps inline (approval decisions), by stage: the store
    key to write each under, and the value."""
    out: dict[str, tuple[str, Any]] = {}
    for name, run in state.stages.items():
        if run.inline_output is not None and run.output_ref is None and not run.fan_out:
            out[name] = (output_key(name, run.output_iteration or run.iteration),
                         run.inline_output)
    return out


def with_decision_refs(state: RunState, outputs: dict[str, tuple[str, Any]]) -> RunState:
    """A copy of ``state`` whose inline outputs point at their written store keys (what
    the stage pods' upstream references are built from; the saved state is unchanged)."""
    if not outputs:
        return state
    view = copy_state(state)
    for name, (key, _) in outputs.items():
        view.stages[name].output_ref = key
    return view
