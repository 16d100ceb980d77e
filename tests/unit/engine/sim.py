"""A discrete-event simulator that drives the engine like a shell would, without I/O.

``simulate`` plans, "runs" every started attempt for a duration chosen by ``behave``,
observes the outcomes at their finish time and plans again, until the pipeline ends.
Time is simulated, so tests assert on ordering and counts, never on wall-clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stagecoach.api import AgentPipeline, ResolvedPipeline, resolve_pipeline
from stagecoach.engine import (
    Action,
    ApprovalDecision,
    ApprovalVerdict,
    AttemptOutcome,
    Control,
    RunState,
    StartAttempt,
    Tokens,
    new_state,
    observe,
    plan,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Result:
    """Outcome of a simulated run."""

    ok: bool
    error_class: str | None = None
    message: str = "failed"
    output: Any = None
    seconds: float = 1.0
    tokens: Tokens = field(default_factory=Tokens)
    cost: str | None = None
    cached: dict[str, Any] | None = None


Behave = Callable[[StartAttempt, RunState], Result]


@dataclass
class Run:
    """What happened."""

    state: RunState
    actions: list[tuple[datetime, Action]]
    states: list[RunState]
    verdicts: list[ApprovalVerdict] = field(default_factory=list)

    def of(self, kind: type[Action]) -> list[Action]:
        return [a for _, a in self.actions if isinstance(a, kind)]

    def events(self, type_: str) -> list[dict[str, Any]]:
        out = []
        for _, a in self.actions:
            ev = a.event()
            if ev and ev["type"] == type_:
                out.append(ev)
        return out


def resolved(doc: dict[str, Any]) -> ResolvedPipeline:
    """Build a ResolvedPipeline from a manifest dict (spec only is enough)."""
    if "apiVersion" not in doc:
        doc = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
               "metadata": {"name": "t", "uid": "uid-1"}, "spec": doc}
    p = AgentPipeline.model_validate(doc)
    r, problems = resolve_pipeline(p)
    assert r is not None, problems
    return r


def always_ok(a: StartAttempt, s: RunState) -> Result:
    return Result(True, output={"stage": a.stage, "item": a.item})


def simulate(p: ResolvedPipeline, behave: Behave = always_ok, *,
             free_slots: Callable[[RunState], dict[str, int]] | None = None,
             max_steps: int = 5000, cancel_at: datetime | None = None,
             script: list[tuple[datetime, Control | ApprovalDecision]] | None = None,
             state: RunState | None = None) -> Run:
    """``script``: run-control changes and approval decisions, each at its time."""
    todo = sorted(script or [], key=lambda x: x[0])
    verdicts: list[ApprovalVerdict] = []
    state = state if state is not None else new_state(p)
    now = T0
    log: list[tuple[datetime, Action]] = []
    states: list[RunState] = []
    queue: list[tuple[datetime, int, AttemptOutcome]] = []
    seq = 0
    pending: list[AttemptOutcome] = []
    for _ in range(max_steps):
        if cancel_at is not None and now >= cancel_at and not state.cancel_requested:
            state.cancel_requested = True
        for outcome in pending:
            observed = observe(p, state, outcome, now)
            state = observed.state
            log.extend((now, a) for a in observed.actions)
        pending = []
        slots = free_slots(state) if free_slots else None
        control: Control | None = None
        decisions: list[ApprovalDecision] = []
        while todo and todo[0][0] <= now:
            item = todo.pop(0)[1]
            if isinstance(item, Control):
                control = item
            else:
                decisions.append(item)
        result = plan(p, state, now, free_slots=slots, control=control, approvals=decisions)
        verdicts.extend(result.verdicts)
        state = result.state
        states.append(state)
        log.extend((now, a) for a in result.actions)
        stopped = {(s.stage, s.iteration, s.index, s.attempt) for s in result.stops()}
        if stopped:
            queue = [q for q in queue
                     if (q[2].stage, q[2].iteration, q[2].index, q[2].attempt) not in stopped]
            heapq.heapify(queue)
        for start in result.starts():
            r = behave(start, state)
            assert start.stage is not None and start.iteration and start.attempt
            out = AttemptOutcome(start.stage, start.iteration, start.attempt, start.index,
                                 ok=r.ok, output=r.output, error_class=r.error_class,
                                 message=r.message, tokens=r.tokens,
                                 duration_ms=int(r.seconds * 1000), cost=r.cost,
                                 cached=r.cached)
            seq += 1
            heapq.heappush(queue, (now + timedelta(seconds=r.seconds), seq, out))
        if state.terminal:
            return Run(state, log, states, verdicts)
        if result.wake_at is not None and result.wake_at <= now and not result.actions:
            raise AssertionError(f"livelock: wake_at {result.wake_at} <= now with no action")
        times = [t for t in (result.wake_at, queue[0][0] if queue else None,
                             cancel_at if cancel_at and not state.cancel_requested else None,
                             todo[0][0] if todo else None)
                 if t is not None]
        if not times:
            raise AssertionError(f"stuck: nothing to wait for in phase {state.phase}: "
                                 f"{ {n: r.phase for n, r in state.stages.items()} }")
        now = max(now, min(times))
        while queue and queue[0][0] <= now:
            pending.append(heapq.heappop(queue)[2])
    raise AssertionError("did not finish")
