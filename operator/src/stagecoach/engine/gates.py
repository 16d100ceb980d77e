"""The planner's run-control and approval steps (DESIGN §9), kept apart from scheduling.

Suspend, stop, terminate and approval gates change *whether* work starts, not *how* it
is scheduled, so they live here as a mixin of :class:`stagecoach.engine.planner._Planner`:
it records each control transition once (``PipelineSuspended``, ``PipelineResumed``,
``ShutdownRequested``), opens an approval stage's wait (``ApprovalRequested``), applies
or refuses decisions (``ApprovalDecided``; refused ones never change the state) and ends
waits whose timeout passed, across restarts, because the deadline is derived from the
persisted start time. No side effects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..api import ResolvedPipeline, ResolvedStage, format_duration
from .actions import Action, StageEvent
from .control import ApprovalDecision, ApprovalVerdict, Control, approval_inputs
from .expressions import ExpressionError, render_template
from .state import Instance, RunState, StageRun

__all__ = ["AWAITING_APPROVAL", "GateSteps", "approval_deadline"]

AWAITING_APPROVAL = "AwaitingApproval"
_MAX_REMEMBERED = 1000


def approval_deadline(stage: ResolvedStage, inst: Instance) -> datetime | None:
    """When a waiting approval times out (None: it waits until decided)."""
    if stage.approval is None or stage.approval.timeout is None or inst.started_at is None:
        return None
    return inst.started_at + stage.approval.timeout


class GateSteps:
    """Mixin: needs the planner's pipeline, state, clock and failure helpers."""

    p: ResolvedPipeline
    st: RunState
    now: datetime
    verdicts: list[ApprovalVerdict]
    shared: set[str]
    """Stages that had ended when the pass began (their records are the input's)."""

    def emit(self, action: Action) -> None:  # pragma: no cover - provided by the planner
        raise NotImplementedError

    def attempt_failed(self, stage: ResolvedStage, run: StageRun, inst: Instance,
                       error_class: str, message: str, duration_ms: int | None,
                       retry: bool = True) -> None:  # pragma: no cover - the planner's
        raise NotImplementedError

    def fail_stage(self, stage: ResolvedStage, run: StageRun, error_class: str,
                   message: str) -> None:  # pragma: no cover - the planner's
        raise NotImplementedError

    def template_vars(self, run: StageRun) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    # -- suspend / shutdown ----------------------------------------------------------
    def apply_control(self, control: Control | None) -> None:
        """Record what changed since the last pass (each transition once)."""
        st = self.st
        if st.cancel_requested and st.shutdown != "Terminate":
            control = Control(suspend=st.suspended, shutdown="Terminate",
                              by=control.by if control else None)
        if control is None:
            return
        by = {"by": control.by} if control.by else {}
        final = st.shutdown == "Terminate"  # Terminate is never undone or downgraded
        if control.shutdown is not None and control.shutdown != st.shutdown and not final:
            st.shutdown = control.shutdown
            self.emit(StageEvent(type="ShutdownRequested",
                                 data={"mode": control.shutdown, **by}))
        if control.suspend != st.suspended:
            st.suspended = control.suspend
            self.emit(StageEvent(type="PipelineSuspended" if control.suspend
                                 else "PipelineResumed", data=by))

    def holding(self) -> bool:
        """Suspended: no new attempt starts. A shutdown or a failing pipeline (its
        timeout passed, a stage failed) lets ``finally`` run regardless."""
        return self.st.suspended and self.st.shutdown is None and self.st.failure is None

    def shown_phase(self) -> None:
        """``Suspended`` while holding, else ``Running`` (for a started, live run)."""
        if self.st.phase in {"Running", "Suspended"}:
            self.st.phase = "Suspended" if self.st.suspended else "Running"
            if self.st.suspended and self.st.shutdown is None:
                self.st.reason, self.st.message = "Suspended", "spec.suspend is true: " \
                    "no new attempt starts"
            elif self.st.reason == "Suspended":
                self.st.reason = self.st.message = None

    # -- approvals -------------------------------------------------------------------
    def request_approval(self, stage: ResolvedStage, run: StageRun) -> None:
        """Open the wait: render the message, record ``ApprovalRequested``."""
        spec = stage.approval
        assert spec is not None
        try:
            message, _ = render_template(spec.message, self.template_vars(run))
        except ExpressionError as exc:
            self.fail_stage(stage, run, "InvalidInput", f"approval.message: {exc}")
            return
        inst = Instance(phase="Waiting", attempt=1, started_at=self.now,
                        reason=AWAITING_APPROVAL, message=message)
        run.instances, run.fan_out, run.started_at = [inst], False, self.now
        run.phase, run.reason, run.message = "Waiting", AWAITING_APPROVAL, message
        deadline = approval_deadline(stage, inst)
        self.emit(StageEvent(run.name, run.iteration, 1, None, type="StageReady", data={}))
        self.emit(StageEvent(run.name, run.iteration, 1, None, type="ApprovalRequested", data={
            "message": message,
            "inputs": [i.model_dump(mode="json", by_alias=True, exclude_none=True)
                       for i in spec.inputs],
            "timeout": format_duration(spec.timeout) if spec.timeout else None,
            "deadline": deadline.isoformat().replace("+00:00", "Z") if deadline else None,
            "onTimeout": spec.on_timeout}))

    def waiting_approval(self, run: StageRun) -> Instance | None:
        """The instance of ``run`` that waits for a decision, if any."""
        stage = self.p.stage(run.name)
        if stage.approval is None or not run.instances:
            return None
        inst = run.instances[0]
        return inst if inst.phase == "Waiting" else None

    def check_approval_timeouts(self) -> None:
        for stage in self.p.stages:
            if stage.approval is None or stage.name in self.shared:
                continue  # not a gate, or ended before this pass
            run = self.st.stages[stage.name]
            inst = self.waiting_approval(run)
            deadline = approval_deadline(stage, inst) if inst else None
            if inst is None or deadline is None or self.now < deadline:
                continue
            assert stage.approval is not None and stage.approval.timeout is not None
            waited = format_duration(stage.approval.timeout)
            approve = stage.approval.on_timeout == "approve"
            inputs, _ = approval_inputs(stage.approval, {}, "Reject")
            note = f"no decision within {waited} (onTimeout: {stage.approval.on_timeout})"
            self.settle_approval(stage, run, inst, approve, None, inputs, note, "timeout", None)

    def decide_approval(self, d: ApprovalDecision) -> ApprovalVerdict:
        """Apply one decision, or refuse it; the verdict is remembered by name."""
        known = self.st.approvals.get(d.name)
        if known is not None:
            return ApprovalVerdict.from_dict(d.name, known)
        verdict = self._judge(d)
        if len(self.st.approvals) >= _MAX_REMEMBERED:
            self.st.approvals.pop(next(iter(self.st.approvals)))
        self.st.approvals[d.name] = verdict.to_dict()
        return verdict

    def _judge(self, d: ApprovalDecision) -> ApprovalVerdict:
        def refuse(reason: str, message: str) -> ApprovalVerdict:
            return ApprovalVerdict(d.name, False, reason, message)

        gates = [s.name for s in self.p.stages if s.approval is not None]
        if self.st.terminal:
            return refuse("PipelineFinished", f"pipeline {self.p.name} already finished "
                          f"({self.st.phase}); stage {d.stage} is not waiting")
        try:
            stage = self.p.stage(d.stage)
        except KeyError:
            return refuse("UnknownStage", f"pipeline {self.p.name} has no stage {d.stage!r}"
                          f" (approval stages: {', '.join(gates) or 'none'})")
        if stage.approval is None:
            return refuse("NotAnApprovalStage", f"stage {d.stage} is not an approval stage "
                          f"(approval stages: {', '.join(gates) or 'none'})")
        run = self.st.stages[d.stage]
        if d.iteration is not None and d.iteration != run.iteration:
            return refuse("StaleIteration", f"the decision is for iteration {d.iteration} "
                          f"of stage {d.stage}, which is now in iteration {run.iteration}")
        inst = self.waiting_approval(run)
        if inst is None:
            phase, why = self._why_not(run)
            return refuse("NotWaiting", f"stage {d.stage} is not waiting for approval "
                          f"(it is {phase}{why})")
        inputs, problems = approval_inputs(stage.approval, d.inputs, d.decision)
        if problems:
            return refuse("InvalidInputs", f"stage {d.stage}: " + "; ".join(problems))
        approve = d.decision == "Approve"
        self.settle_approval(stage, run, inst, approve, d.approver, inputs, d.message,
                             "user", d.name)
        who = d.approver or "someone"
        return ApprovalVerdict(d.name, True, "Approved" if approve else "Rejected",
                               f"stage {d.stage} {'approved' if approve else 'rejected'} "
                               f"by {who}")

    @staticmethod
    def _why_not(run: StageRun) -> tuple[str, str]:
        """The stage's phase as a person sees it, and why that is not waiting. Read from
        the instance: an earlier decision in this same pass already ended it."""
        inst = run.instances[0] if run.instances else None
        if inst is None:
            if run.phase == "Pending":
                return "Pending", ": its dependencies have not finished"
            return run.phase, f": {run.reason}" if run.reason else ""
        decided = inst.decision
        if decided and decided.get("approver"):
            return inst.phase, f"; decided by {decided['approver']}"
        if decided:
            return inst.phase, "; decided by its timeout"
        return inst.phase, f": {inst.reason}" if inst.reason else ""

    def settle_approval(self, stage: ResolvedStage, run: StageRun, inst: Instance,
                        approve: bool, approver: str | None, inputs: dict[str, str],
                        message: str | None, by: str, name: str | None) -> None:
        """Record the decision and end the wait: Succeeded, or Failed class Rejected."""
        at = self.now.isoformat().replace("+00:00", "Z")
        output = {"approved": approve, "approver": approver, "at": at, "inputs": inputs,
                  "message": message}
        inst.decision = output
        self.emit(StageEvent(run.name, run.iteration, inst.attempt, None,
                             type="ApprovalDecided", data={
                                 "decision": "Approve" if approve else "Reject",
                                 "approver": approver, "by": by, "approval": name,
                                 "inputs": inputs, "message": message}))
        waited = self.elapsed(inst)
        if approve:
            inst.phase, inst.finished_at = "Succeeded", self.now
            inst.output, inst.reason, inst.message = output, None, None
            self.emit(StageEvent(run.name, run.iteration, inst.attempt, None,
                                 type="StageSucceeded", data={
                                     "durationMs": waited,
                                     "tokens": {"input": 0, "output": 0},
                                     "outputRef": None}))
            return
        why = f"rejected by {approver}" if approver else "rejected"
        if message:
            why += f": {message}"
        self.attempt_failed(stage, run, inst, "Rejected", why, waited, retry=False)

    def elapsed(self, inst: Instance) -> int | None:  # pragma: no cover - the planner's
        raise NotImplementedError
