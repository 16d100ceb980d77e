"""The local executor's control desk: what people asked of the run, and their answers.

Between two planning steps requests arrive from three places: the verbs through the run
directory's inbox (:class:`~.owner.RunOwner`), signals (Ctrl-C, SIGTERM: Terminate) and
the executor itself (``--auto-approve``, the terminal prompt). The desk folds them into
what :func:`stagecoach.engine.step` takes, the :class:`Control` now and the
:class:`ApprovalDecision` values to judge, and after the step answers every verb: the
engine's verdict for a decision, a short account for a control verb. A request the desk
can refuse without the engine (resume when not suspended, stop after terminate, any
request after the end, a malformed file) is answered at once. No I/O but the owner's.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ..engine import ApprovalDecision, ApprovalVerdict, Control, RunState
from .owner import BadRequest, Request, RunOwner

__all__ = ["ControlDesk"]


def _running(state: RunState) -> int:
    return sum(1 for r in state.stages.values() for i in r.instances if i.phase == "Running")


def _attempts(n: int) -> str:
    return "1 running attempt finishes" if n == 1 else f"{n} running attempts finish"


def _ended(state: RunState) -> str:
    reason = f" ({state.reason})" if state.reason else ""
    return f"pipeline {state.phase}{reason}"


class ControlDesk:
    """Requests in, :class:`Control` and decisions out, answers back."""

    def __init__(self, owner: RunOwner | None = None) -> None:
        self.owner = owner
        self.control = Control()
        self._decisions: list[ApprovalDecision] = []
        self._accepted: list[Request] = []
        self._verbs: set[str] = set()

    # -- requests in ---------------------------------------------------------------------
    def terminate(self, by: str) -> None:
        """Ctrl-C / SIGTERM: Terminate (never undone)."""
        if self.control.shutdown != "Terminate":
            self.control = replace(self.control, shutdown="Terminate", by=by)

    def decide(self, decision: ApprovalDecision) -> None:
        """A decision made by the executor itself (auto-approve, the terminal prompt)."""
        self._decisions.append(decision)

    def collect(self, state: RunState, now: datetime) -> None:
        """Read the inbox; refuse what can be refused now, keep the rest for the step."""
        if self.owner is None:
            return
        for req in self.owner.take_requests():
            if isinstance(req, BadRequest):
                self.owner.answer(req.id, False, req.error)
            elif state.terminal:
                self.owner.answer(req.id, False, f"{_ended(state)} already finished")
            elif req.verb in ("approve", "reject"):
                self._decisions.append(req.decision(now))
                self._verbs.add(req.id)
            else:
                refusal = self._apply(req)
                if refusal is not None:
                    self.owner.answer(req.id, False, refusal)
                else:
                    self._accepted.append(req)

    def _apply(self, req: Request) -> str | None:
        """Change the Control as ``req`` asks, or the reason it would change nothing."""
        c = self.control
        if c.shutdown == "Terminate":
            return "the pipeline is already terminating"
        if req.verb == "suspend":
            if c.suspend:
                return "the pipeline is already suspended"
            if c.shutdown == "Stop":
                return "the pipeline is stopping: suspend would change nothing"
            self.control = replace(c, suspend=True, by=req.by)
        elif req.verb == "resume":
            if not c.suspend:
                return "the pipeline is not suspended"
            self.control = replace(c, suspend=False, by=req.by)
        elif req.verb == "stop":
            if c.shutdown == "Stop":
                return "the pipeline is already stopping"
            self.control = replace(c, shutdown="Stop", by=req.by)
        else:
            self.control = replace(c, shutdown="Terminate", by=req.by)
        return None

    def take_decisions(self) -> list[ApprovalDecision]:
        """The decisions for the next step (each handed out once)."""
        out, self._decisions = self._decisions, []
        return out

    # -- answers out -----------------------------------------------------------------------
    def answer(self, state: RunState, verdicts: list[ApprovalVerdict]) -> list[ApprovalVerdict]:
        """Answer the verbs after a step; the verdicts on the executor's own decisions."""
        own: list[ApprovalVerdict] = []
        for v in verdicts:
            if v.name in self._verbs and self.owner is not None:
                self._verbs.discard(v.name)
                self.owner.answer(v.name, v.accepted, v.message)
            else:
                own.append(v)
        accepted, self._accepted = self._accepted, []
        if self.owner is not None:
            for req in accepted:
                self.owner.answer(req.id, True, self._account(req, state))
        return own

    @staticmethod
    def _account(req: Request, state: RunState) -> str:
        n = _running(state)
        if req.verb == "suspend":
            return (f"suspended: no new attempt starts; {_attempts(n)}" if n else
                    "suspended: no new attempt starts")
        if req.verb == "resume":
            return "resumed"
        if req.verb == "stop":
            if state.terminal:
                return f"stopped: {_ended(state)}"
            return (f"stopping: {_attempts(n)}, then the finally stages run" if n else
                    "stopping: the finally stages run, then the pipeline ends")
        return f"terminated: {_ended(state)}" if state.terminal else "terminating"

    def close(self, state: RunState) -> None:
        """The loop ended: refuse whatever is still waiting for an answer."""
        if self.owner is None:
            return
        message = f"{_ended(state)} already finished" if state.terminal else \
            "the run ended before it could answer"
        for name in sorted(self._verbs):
            self.owner.answer(name, False, message)
        self._verbs.clear()
        for req in self._accepted:
            self.owner.answer(req.id, False, message)
        self._accepted = []
        for left in self.owner.take_requests():
            self.owner.answer(left.id, False, left.error if isinstance(left, BadRequest)
                              else message)
