"""``plan(pipeline, state, now) -> Plan``: the one entry point both shells execute.

Given the resolved pipeline and the run state, decide what happens next: which stage
instances start (respecting dependencies, ``when``, ``forEach``, ``maxParallel``,
provider slots and the token budget), which overran their deadline, which loop back,
when the pipeline ends and with what output. ``observe`` folds a finished attempt into
the state (success, retry with backoff, or failure). Both return a new state plus the
actions taken; the shells start/stop attempts for :class:`StartAttempt` /
:class:`StopAttempt` and append every action's trace event. Like Tekton's
``pipelinerunstate`` it only answers questions about a run; time is passed in.
No side effects: the input state is never modified.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api import (
    ResolvedPipeline,
    ResolvedStage,
    add_usd,
    format_duration,
    format_usd,
    parse_usd,
)
from . import policies
from .actions import (
    Action,
    FinishPipeline,
    RecordDecision,
    ResetIteration,
    ScheduleRetry,
    SkipStage,
    StageEvent,
    StartAttempt,
    StopAttempt,
)
from .control import ApprovalDecision, ApprovalVerdict, Control
from .dag import Graph, build
from .expressions import ExpressionError, evaluate_cel, render_template
from .gates import GateSteps, approval_deadline
from .state import (
    TERMINAL,
    Instance,
    RunState,
    StageRun,
    Tokens,
    copy_run,
    copy_state,
    initial_state,
)

__all__ = [
    "AttemptOutcome",
    "Plan",
    "cancel",
    "new_state",
    "observe",
    "plan",
    "step",
    "variables",
]

Jitter = Callable[[str], float]


@dataclass(frozen=True)
class AttemptOutcome:
    """What a shell learned when an attempt ended (from the runner's result)."""

    stage: str
    iteration: int
    attempt: int
    index: int | None = None
    ok: bool = True
    output: Any = None
    output_ref: str | None = None
    error_class: str | None = None
    message: str | None = None
    tokens: Tokens = field(default_factory=Tokens)
    duration_ms: int | None = None
    cost: str | None = None
    """USD of the attempt's tokens, exact (a decimal string); None when unpriced."""
    cached: dict[str, Any] | None = None
    """A stage-cache hit (DESIGN §11): ``{key, from, createdAt, saved}``; the attempt
    ran nothing, so tokens and cost are zero."""
    usage: tuple[Any, ...] = ()
    """The tokens per provider and model (:class:`~stagecoach.api.ModelUsage`), for the
    shells' metrics; the engine only adds up ``tokens`` and ``cost``."""


@dataclass
class Plan:
    """The new state, the actions that produced it, and when to plan again."""

    state: RunState
    actions: list[Action]
    wake_at: datetime | None = None
    verdicts: list[ApprovalVerdict] = field(default_factory=list)
    """The answer to each approval decision passed in (Accepted or Refused)."""

    def starts(self) -> list[StartAttempt]:
        """The attempts to start."""
        return [a for a in self.actions if isinstance(a, StartAttempt)]

    def stops(self) -> list[StopAttempt]:
        """The attempts to stop."""
        return [a for a in self.actions if isinstance(a, StopAttempt)]


def new_state(pipeline: ResolvedPipeline) -> RunState:
    """The initial state for a pipeline: everything Pending, iteration 1."""
    return initial_state([s.name for s in pipeline.all_stages], pipeline.spec_hashes)


def cancel(state: RunState) -> RunState:
    """A copy of ``state`` with cancellation requested; the next plan stops everything."""
    out = copy_state(state)
    out.cancel_requested = True
    return out


def variables(
    state: RunState, stage: str | None = None, instance: Instance | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The names CEL and Jinja2 see: params, stages, item, index, loop."""
    run = state.stages.get(stage) if stage else None
    return {
        "params": dict(params or {}),
        "stages": {
            n: {"output": r.output, "phase": r.phase, "iteration": r.iteration,
                "attempt": r.attempt}
            for n, r in state.stages.items()
        },
        "item": instance.item if instance else None,
        "index": instance.index if instance else None,
        "loop": {
            "iteration": run.iteration if run else 1,
            "from": run.loop_from if run else None,
            "reason": run.loop_reason if run else None,
        },
    }


_GRAPHS: dict[int, tuple[ResolvedPipeline, Graph]] = {}


def _graph(pipeline: ResolvedPipeline) -> Graph:
    cached = _GRAPHS.get(id(pipeline))
    if cached is not None and cached[0] is pipeline:
        return cached[1]
    graph, errors = build([(s.name, s.depends_on) for s in pipeline.stages])
    if graph is None:
        raise ValueError(f"invalid pipeline graph: {errors[0].reason} (validate it first)")
    if len(_GRAPHS) > 64:
        _GRAPHS.clear()
    _GRAPHS[id(pipeline)] = (pipeline, graph)
    return graph


class _Planner(GateSteps):
    """One planning pass over a private copy of the state.

    Stages that had ended when the pass began keep their records shared with the input
    state (most of a large pipeline, most of the time); :meth:`own` copies one before
    it is changed, so the input state is still never modified.
    """

    def __init__(self, pipeline: ResolvedPipeline, state: RunState, now: datetime,
                 free_slots: Mapping[str, int] | None, jitter: Jitter | None) -> None:
        self.p = pipeline
        self.shared = {n for n, r in state.stages.items() if r.phase in TERMINAL}
        self.st = copy_state(state, share=self.shared)
        self.now = now
        self.free = dict(free_slots or {})
        self.jitter = jitter or policies.hash_jitter
        self.actions: list[Action] = []
        self.verdicts: list[ApprovalVerdict] = []
        self.graph = _graph(pipeline)
        self.on_failure = {s.name: s.on_failure for s in pipeline.stages}
        self.went_back = False

    # -- small helpers -------------------------------------------------------------
    def own(self, name: str) -> StageRun:
        """The stage's record, copied first if it is still the input state's."""
        run = self.st.stages[name]
        if name in self.shared:
            self.shared.discard(name)
            run = self.st.stages[name] = copy_run(run)
        return run

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def running(self) -> int:
        return sum(1 for r in self.st.stages.values() for i in r.instances
                   if i.phase == "Running")

    def _key(self, run: StageRun, inst: Instance) -> str:
        return f"{self.p.uid}/{run.name}/{run.iteration}/{inst.index}/{inst.attempt}"

    def elapsed_ms(self, inst: Instance) -> int | None:
        """How long the instance's current attempt has run (for attempts the engine ends)."""
        return policies.elapsed_ms(inst.started_at, self.now)

    def elapsed(self, inst: Instance) -> int | None:
        return self.elapsed_ms(inst)

    def template_vars(self, run: StageRun) -> dict[str, Any]:
        return variables(self.st, run.name, None, self.p.params)

    # -- attempt results -----------------------------------------------------------
    def attempt_failed(self, stage: ResolvedStage, run: StageRun, inst: Instance,
                       error_class: str, message: str, duration_ms: int | None,
                       retry: bool = True, cost: str | None = None) -> None:
        """Retry with backoff, or fail the instance for good."""
        base: dict[str, Any] = {"stage": run.name, "iteration": run.iteration,
                                "attempt": inst.attempt, "index": inst.index}
        inst.reason, inst.message = error_class, message
        if retry and policies.should_retry(stage.retry, error_class, inst.attempt):
            delay = policies.backoff_delay(stage.retry, inst.attempt,
                                           self.jitter(self._key(run, inst)))
            inst.phase = "Waiting"
            inst.next_attempt_at = self.now + delay
            inst.previous_error = message if error_class == "MalformedOutput" else None
            self.emit(ScheduleRetry(**base, error_class=error_class, message=message,
                                    at=inst.next_attempt_at, duration_ms=duration_ms,
                                    cost=cost))
            return
        inst.phase = "Failed"
        inst.finished_at = self.now
        data: dict[str, Any] = {"errorClass": error_class, "message": message,
                                "willRetry": False, "durationMs": duration_ms}
        if cost is not None:
            data["cost"] = cost
        self.emit(StageEvent(**base, type="StageFailed", data=data))
        if stage.on_failure != "continue" and not stage.is_finally and self.st.failure is None:
            where = run.name if inst.index is None else f"{run.name}[{inst.index}]"
            self.st.failure = ("StageFailed", f"stage {where} failed ({error_class}): {message}")

    def observe(self, o: AttemptOutcome) -> None:
        if o.stage not in self.st.stages:
            return
        run = self.own(o.stage)
        run.tokens.add(o.tokens)
        self.st.tokens.add(o.tokens)
        run.cost = add_usd(run.cost, o.cost)
        self.st.cost = add_usd(self.st.cost, o.cost)
        inst = next((i for i in run.instances if i.index == o.index), None)
        if (inst is None or run.iteration != o.iteration or inst.attempt != o.attempt
                or inst.phase != "Running"):
            return  # a stale result (superseded, timed out or cancelled): tokens still count
        stage = self.p.stage(o.stage)
        if o.ok:
            inst.phase, inst.finished_at = "Succeeded", self.now
            inst.output, inst.output_ref, inst.reason, inst.message = (
                o.output, o.output_ref, None, None)
            data: dict[str, Any] = {
                "durationMs": o.duration_ms,
                "tokens": {"input": o.tokens.input, "output": o.tokens.output},
                "outputRef": o.output_ref}
            if o.cost is not None:
                data["cost"] = o.cost
            kind = "StageSucceeded"
            if o.cached is not None:
                kind, data = "StageCached", {**data, **o.cached}
                origin = o.cached.get("from") or {}
                inst.reason = "Cached"
                inst.message = (f"answered by the stage cache (produced by pipeline "
                                f"{origin.get('pipeline', '?')}, stage {origin.get('stage', '?')}"
                                f", at {o.cached.get('createdAt', '?')})")
            self.emit(StageEvent(stage=o.stage, iteration=o.iteration, attempt=o.attempt,
                                 index=o.index, type=kind, data=data))
        else:
            self.attempt_failed(stage, run, inst, o.error_class or "Error", o.message or "",
                                o.duration_ms, cost=o.cost)

    # -- the pass ------------------------------------------------------------------
    def run(self, control: Control | None = None,
            approvals: Iterable[ApprovalDecision] = ()) -> None:
        st = self.st
        if st.terminal:
            self.verdicts.extend(self.decide_approval(d) for d in approvals)
            return
        self.start()
        self.apply_control(control)
        if st.shutdown == "Terminate":
            self.cancel()
            self.verdicts.extend(self.decide_approval(d) for d in approvals)
            return
        self.verdicts.extend(self.decide_approval(d) for d in approvals)
        self.check_deadlines()
        self.check_budget()
        self.check_approval_timeouts()
        if st.shutdown == "Stop" and st.failure is None:
            st.failure = ("Stopped", "pipeline stopped (spec.shutdown: Stop): running "
                          "attempts finished, nothing new started")
        self.sweep()
        if st.failure and not any(self._active(self.st.stages[s.name])
                                  for s in self.p.stages):
            self.wind_down()
        if all(st.stages[s.name].phase in TERMINAL
               for s in self.p.stages):
            while self.advance(self.p.finally_stages, regular=False):
                pass
            if all(st.stages[s.name].phase in TERMINAL
                   for s in self.p.finally_stages):
                self.finish()
        self.shown_phase()

    def start(self) -> None:
        if self.st.phase == "Pending":
            self.st.phase, self.st.started_at = "Running", self.now
            self.emit(StageEvent(type="PipelineStarted", data={
                "stages": [s.name for s in self.p.stages],
                "finally": [s.name for s in self.p.finally_stages]}))

    @staticmethod
    def _active(run: StageRun) -> bool:
        return any(i.phase == "Running" for i in run.instances)

    def check_deadlines(self) -> None:
        deadline = policies.pipeline_deadline(self.st.started_at, self.p.timeout)
        if deadline is not None and self.now >= deadline and (
                self.st.failure is None or self.st.failure[0] != "Timeout"):
            limit = format_duration(self.p.timeout) if self.p.timeout else "?"
            self.st.failure = ("Timeout", f"pipeline exceeded its timeout of {limit}")
            for s in self.p.stages:
                run = self.own(s.name)
                for inst in run.instances:
                    if inst.phase == "Running":
                        self.emit(StopAttempt(s.name, run.iteration, inst.attempt, inst.index,
                                              reason="Timeout", message=self.st.failure[1]))
                        self.attempt_failed(s, run, inst, "Timeout", self.st.failure[1],
                                            self.elapsed_ms(inst), retry=False)
        for s in self.p.all_stages:
            if s.name in self.shared:
                continue  # ended before this pass: nothing of it runs
            run = self.st.stages[s.name]
            for inst in run.instances:
                end = policies.attempt_deadline(s, inst)
                if inst.phase == "Running" and end is not None and self.now >= end:
                    run = self.own(s.name)
                    inst = next(i for i in run.instances if i.index == inst.index)
                    msg = f"attempt exceeded its timeout of {format_duration(s.timeout)}" \
                        if s.timeout else "attempt timed out"
                    self.emit(StopAttempt(s.name, run.iteration, inst.attempt, inst.index,
                                          reason="Timeout", message=msg))
                    self.attempt_failed(s, run, inst, "Timeout", msg, self.elapsed_ms(inst))

    def check_budget(self) -> None:
        limits = (self.p.max_tokens, self.st.tokens, self.p.max_cost, self.st.cost)
        msg = policies.budget_message(*limits)
        if self.st.budget_exceeded:
            # Attempts running when the budget ran out finish and add their tokens: the
            # message always states the current total, the same figure as status.tokens.
            if self.st.failure is not None and self.st.failure[0] == "BudgetExceeded":
                self.st.failure = ("BudgetExceeded", msg)
            return
        if not policies.over_budget(*limits):
            return
        self.st.budget_exceeded = True
        data: dict[str, Any] = {"used": self.st.tokens.total, "maxTokens": self.p.max_tokens}
        if self.p.max_cost is not None:
            data.update(cost=format_usd(parse_usd(self.st.cost)), maxCost=self.p.max_cost)
        self.emit(StageEvent(type="BudgetExceeded", data=data))
        if self.st.failure is None:
            self.st.failure = ("BudgetExceeded", msg)

    def decide(self, kind: str, stage: ResolvedStage, run: StageRun,
               expression: str) -> tuple[bool | None, Any]:
        """Evaluate a CEL expression and record the Decision; None result = error."""
        try:
            res = evaluate_cel(expression, variables(self.st, run.name, None, self.p.params))
        except ExpressionError as exc:
            self.emit(RecordDecision(run.name, run.iteration, None, None, kind=kind,
                                     expression=expression, values=dict(exc.reads),
                                     action="fail", error=str(exc)))
            self.fail_stage(stage, run, "InvalidInput", f"{kind}: {exc}")
            return None, None
        if kind == "forEach":
            ok = isinstance(res.value, list)
            self.emit(RecordDecision(run.name, run.iteration, None, None, kind=kind,
                                     expression=expression, values=res.reads,
                                     result=len(res.value) if ok else res.value,
                                     action="run" if ok else "fail"))
            if not ok:
                self.fail_stage(stage, run, "InvalidInput",
                                f"forEach: {expression!r} must yield a list, got "
                                f"{type(res.value).__name__}")
                return None, None
            return True, res.value
        if not isinstance(res.value, bool):
            self.emit(RecordDecision(run.name, run.iteration, None, None, kind=kind,
                                     expression=expression, values=res.reads,
                                     result=res.value, action="fail"))
            self.fail_stage(stage, run, "InvalidInput",
                            f"{kind}: {expression!r} must yield a bool, got "
                            f"{type(res.value).__name__}")
            return None, None
        return res.value, res.reads

    def fail_stage(self, stage: ResolvedStage, run: StageRun, error_class: str,
                   message: str) -> None:
        """Fail a whole stage without an attempt (bad expression at run time)."""
        run.phase, run.reason, run.message, run.finished_at = (
            "Failed", error_class, message, self.now)
        run.output = None
        self.emit(StageEvent(run.name, run.iteration, None, None, type="StageFailed", data={
            "errorClass": error_class, "message": message, "willRetry": False}))
        if stage.on_failure != "continue" and not stage.is_finally and self.st.failure is None:
            self.st.failure = ("StageFailed",
                               f"stage {run.name} failed ({error_class}): {message}")

    def skip(self, run: StageRun, reason: str, message: str | None = None) -> None:
        run.phase, run.reason, run.message, run.finished_at = (
            "Skipped", reason, message, self.now)
        for inst in run.instances:  # kept: status counts every forEach item
            if inst.phase not in {"Succeeded", "Failed"}:
                inst.phase = "Skipped"
        self.emit(SkipStage(run.name, run.iteration, None, None, reason=reason))

    def sweep(self) -> None:
        """Advance the regular stages until nothing changes. One sweep in topological
        order already carries every change forward (a stage that ends readies its
        children later in the same sweep); only a back-edge taken during the sweep
        (:meth:`reset`) changes stages behind it, so only then is another one needed."""
        while True:
            self.went_back = False
            if not self.advance(self.p.stages, regular=True) or not self.went_back:
                return

    def advance(self, stages: Iterable[ResolvedStage], regular: bool) -> bool:
        """One sweep in topological order; True when something changed."""
        changed = False
        order = self.graph.order if regular else [s.name for s in stages]
        for name in order:
            stage = self.p.stage(name)
            run = self.st.stages[name]
            if run.phase in TERMINAL:
                continue
            holding = self.holding()
            if not run.instances and run.phase in {"Pending"}:
                if (regular and self.st.failure) or holding:
                    continue
                changed |= self.make_ready(stage, run)
            if run.instances and run.phase not in TERMINAL:
                if not holding:
                    changed |= self.admit(stage, run, regular)
                changed |= self.settle(stage, run)
        return changed

    def make_ready(self, stage: ResolvedStage, run: StageRun) -> bool:
        if stage.is_finally:
            if stage.agent is not None and self.st.budget_exceeded:
                self.skip(run, "BudgetExceeded")
                return True
        else:
            verdict = policies.dependency_verdict(stage, self.st.stages, self.on_failure)
            if verdict in {"wait", "blocked"}:
                return False
            if verdict == "all_skipped":
                self.skip(run, "all dependencies were skipped")
                return True
        if stage.when:
            result, reads = self.decide("when", stage, run, stage.when)
            if result is None:
                return True
            self.emit(RecordDecision(run.name, run.iteration, None, None, kind="when",
                                     expression=stage.when, values=reads,
                                     result=result, action="run" if result else "skip"))
            if not result:
                self.skip(run, f"when: {stage.when}")
                return True
        if stage.approval is not None:
            self.request_approval(stage, run)
            return True
        items: list[Any] | None = None
        if stage.for_each:
            ok, value = self.decide("forEach", stage, run, stage.for_each)
            if ok is None:
                return True
            items = list(value)
            if len(items) > self.p.max_instances:
                self.fail_stage(stage, run, "InvalidInput",
                                f"forEach: {stage.for_each!r} yielded {len(items)} items; "
                                f"at most {self.p.max_instances} may run (spec.limits."
                                "maxInstances)")
                return True
        self.emit(StageEvent(run.name, run.iteration, None, None, type="StageReady",
                             data={"instances": len(items)} if items is not None else {}))
        run.started_at = self.now
        run.fan_out = items is not None
        run.instances = (
            [Instance(index=i, item=v) for i, v in enumerate(items)]
            if items is not None else [Instance()]
        )
        run.phase = "Queued"
        if not run.instances:
            self.settle(stage, run)
        return True

    def admit(self, stage: ResolvedStage, run: StageRun, regular: bool) -> bool:
        if stage.approval is not None:
            return False  # a person decides (decide_approval), nothing starts
        changed = False
        for inst in run.instances:
            if inst.phase == "Waiting":
                if inst.next_attempt_at is not None and inst.next_attempt_at > self.now:
                    continue
            elif inst.phase not in {"Pending", "Queued"}:
                continue
            if regular and self.st.failure:
                return changed
            if stage.on_failure == "fail" and any(i.phase == "Failed" for i in run.instances):
                return changed
            if self.p.max_parallel is not None and self.running() >= self.p.max_parallel:
                changed |= self.queue(run, inst, "WaitingForParallelism")
                continue
            provider = stage.provider
            if provider is not None and provider in self.free and self.free[provider] <= 0:
                changed |= self.queue(run, inst, "WaitingForProvider")
                continue
            if provider is not None and provider in self.free:
                self.free[provider] -= 1
            inst.attempt += 1
            inst.phase, inst.started_at, inst.next_attempt_at = "Running", self.now, None
            inst.reason = inst.message = None
            inst.provider = provider
            run.phase = "Running"
            self.emit(StartAttempt(run.name, run.iteration, inst.attempt, inst.index,
                                   item=inst.item, provider=provider,
                                   previous_error=inst.previous_error,
                                   loop_from=run.loop_from, loop_reason=run.loop_reason))
            changed = True
        return changed

    def queue(self, run: StageRun, inst: Instance, reason: str) -> bool:
        if inst.phase == "Queued" and inst.reason == reason:
            return False
        inst.phase, inst.reason = "Queued", reason
        self.emit(StageEvent(run.name, run.iteration, inst.attempt + 1, inst.index,
                             type="StageQueued", data={"reason": reason}))
        return True

    def settle(self, stage: ResolvedStage, run: StageRun) -> bool:
        """Derive the stage phase from its instances; finish it when they all ended."""
        phases = [i.phase for i in run.instances]
        if not all(p in {"Succeeded", "Failed"} for p in phases):
            new = ("Running" if "Running" in phases else "Queued" if "Queued" in phases
                   else "Waiting" if "Waiting" in phases else "Pending")
            if new == "Pending":
                new = "Queued"
            waiting = next((i for i in run.instances if i.phase in {"Waiting", "Queued"}), None)
            shown = waiting if waiting and new in {"Waiting", "Queued"} else None
            run.reason = shown.reason if shown else None
            run.message = shown.message if shown else None
            changed = new != run.phase
            run.phase = new
            return changed
        failed = [i for i in run.instances if i.phase == "Failed"]
        outputs = [i.output if i.phase == "Succeeded" else None for i in run.instances]
        run.finished_at = self.now
        run.instance_refs = [i.output_ref if i.phase == "Succeeded" else None
                             for i in run.instances] if run.fan_out else None
        if failed:
            first = failed[0]
            if stage.approval is not None:
                run.inline_output = None
            run.phase, run.reason, run.message = "Failed", first.reason, first.message
            run.output = outputs if run.fan_out else None
            run.output_ref = None
            run.output_iteration = run.iteration
            return True
        run.phase, run.reason, run.message = "Succeeded", None, None
        if run.instances and all(i.reason == "Cached" for i in run.instances):
            run.reason, run.message = "Cached", run.instances[0].message
        if stage.approval is not None:
            run.inline_output = run.instances[0].output
        if not run.instances:  # forEach over an empty list: no attempt, still an end event
            self.emit(StageEvent(run.name, run.iteration, None, None, type="StageSucceeded",
                                 data={"durationMs": 0, "tokens": {"input": 0, "output": 0},
                                       "outputRef": None, "instances": 0}))
        run.output = outputs if run.fan_out else outputs[0]
        run.output_ref = None if run.fan_out else run.instances[0].output_ref
        run.output_iteration = run.iteration
        self.route(stage, run)
        return True

    def route(self, stage: ResolvedStage, run: StageRun) -> None:
        for i, route in enumerate(stage.routes):
            result, reads = self.decide("route", stage, run, route.when)
            if result is None:
                return
            key = f"{run.name}#{i}"
            taken = self.st.loops.get(key, 0)
            if not result:
                self.emit(RecordDecision(run.name, run.iteration, None, None, kind="route",
                                         expression=route.when, values=reads, result=False,
                                         action="continue", target=route.goto))
                continue
            if policies.loop_allowed(route, taken):
                self.st.loops[key] = taken + 1
                self.emit(RecordDecision(run.name, run.iteration, None, None, kind="route",
                                         expression=route.when, values=reads, result=True,
                                         action="goto", target=route.goto))
                self.reset(route.goto, run.name, route.when)
                return
            exhausted = (f"back-edge {run.name} -> {route.goto} used all "
                         f"{route.max_iterations} iterations")
            if route.otherwise == "fail":
                self.emit(RecordDecision(run.name, run.iteration, None, None, kind="route",
                                         expression=route.when, values=reads, result=True,
                                         action="fail", target=route.goto, error=exhausted))
                run.phase, run.reason, run.message = "Failed", "MaxIterationsExceeded", exhausted
                if self.st.failure is None:
                    self.st.failure = ("MaxIterationsExceeded", exhausted)
            else:
                self.emit(RecordDecision(run.name, run.iteration, None, None, kind="route",
                                         expression=route.when, values=reads, result=True,
                                         action="continue", target=route.goto,
                                         note=exhausted))
            return

    def reset(self, target: str, origin: str, reason: str) -> None:
        self.went_back = True
        names = {target} | self.graph.descendants(target)
        reset: list[str] = []
        for name in self.graph.order:
            if name not in names:
                continue
            run = self.own(name)
            for inst in run.instances:
                if inst.phase == "Running":
                    why = f"superseded: {origin} routed back to {target}"
                    self.emit(StopAttempt(name, run.iteration, inst.attempt, inst.index,
                                          reason="Superseded", message=why))
                    self.emit(self.attempt_end(run, inst, "Cancelled", why))
            if run.phase == "Pending" and not run.instances and name != target:
                continue
            run.iteration += 1
            run.phase, run.instances, run.fan_out = "Pending", [], False
            run.started_at = run.finished_at = None
            run.reason = run.message = None
            run.loop_from, run.loop_reason = origin, reason
            reset.append(name)
        self.emit(ResetIteration(target, self.st.stages[target].iteration, None, None,
                                 target=target, reset=tuple(reset)))

    def wind_down(self) -> None:
        """The pipeline is failing and nothing runs: settle the stages that never will."""
        reason, why = self.st.failure or ("PipelineFailed", "the pipeline failed")
        for s in self.p.stages:
            run = self.st.stages[s.name]
            if run.phase not in TERMINAL:
                self.halt(run, reason, why)

    def cancel(self) -> None:
        """Terminate (``spec.shutdown: Terminate``, Ctrl-C): stop every running attempt,
        end every wait; ``finally`` does not run."""
        why = "pipeline terminated"
        for s in self.p.all_stages:
            run = self.st.stages[s.name]
            if run.phase not in TERMINAL:
                self.halt(run, "Terminated", why)
        self.end("Cancelled", "Terminated", why)

    def attempt_end(self, run: StageRun, inst: Instance, error_class: str,
                    message: str) -> StageEvent:
        """The StageFailed of an attempt the engine stops (it will not report back)."""
        return StageEvent(run.name, run.iteration, inst.attempt, inst.index,
                          type="StageFailed", data={
                              "errorClass": error_class, "message": message,
                              "willRetry": False, "durationMs": self.elapsed_ms(inst)})

    def halt(self, run: StageRun, reason: str, why: str) -> None:
        """End a stage the pipeline stops before it finished (``why``: the cause).

        Running attempts are stopped, each recorded as ``StageFailed``; an instance
        waiting for its retry fails without it; instances that never started stay
        unstarted (still counted in ``instances.total``). A stage with no attempt at all
        is Skipped; otherwise it is Failed, keeping its real attempt count, with its own
        failure when it had one, else the cause (class ``Timeout``, ``BudgetExceeded`` or
        ``Cancelled``).
        """
        cls = policies.halt_class(reason)
        own = next((i for i in run.instances if i.phase == "Failed"), None)
        notes: list[str] = []
        for inst in run.instances:
            where = run.name if inst.index is None else f"{run.name}[{inst.index}]"
            if inst.phase == "Running":
                note = f"attempt {inst.attempt} of {where} stopped: {why}"
                self.emit(StopAttempt(run.name, run.iteration, inst.attempt, inst.index,
                                      reason=cls, message=why))
                self.emit(self.attempt_end(run, inst, cls, note))
            elif inst.phase == "Waiting" and inst.reason == "AwaitingApproval":
                note = f"{why}; no decision was made on {where}"
                self.emit(StageEvent(run.name, run.iteration, inst.attempt, inst.index,
                                     type="StageFailed", data={
                                         "errorClass": cls, "message": note,
                                         "willRetry": False,
                                         "durationMs": self.elapsed_ms(inst)}))
            elif inst.phase == "Waiting" and inst.attempt > 0:
                note = (f"{why}; attempt {inst.attempt} of {where} had failed "
                        f"({inst.reason}: {inst.message}) and its retry did not start")
                self.emit(StageEvent(run.name, run.iteration, None, inst.index,
                                     type="StageFailed", data={
                                         "errorClass": cls, "message": note,
                                         "willRetry": False, "attempts": inst.attempt}))
            else:
                continue
            inst.phase, inst.reason, inst.message = "Failed", cls, note
            inst.finished_at, inst.next_attempt_at = self.now, None
            notes.append(note)
        if not any(i.attempt > 0 for i in run.instances):
            self.skip(run, reason, why)
            return
        unstarted = sum(1 for i in run.instances if i.attempt == 0)
        for inst in run.instances:
            if inst.attempt == 0:
                inst.phase = "Skipped"
        not_started = f"{unstarted} of {len(run.instances)} instances did not start"
        if own is not None:
            cls, message = own.reason or "Error", own.message or ""
        elif notes:
            message = notes[0]
        else:  # only finished instances and unstarted ones: say so in an event too
            message = f"{not_started}: {why}"
            self.emit(StageEvent(run.name, run.iteration, None, None, type="StageFailed",
                                 data={"errorClass": cls, "message": message,
                                       "willRetry": False}))
        if unstarted and (own is not None or notes):
            message += f"; {not_started}"
        run.phase, run.reason, run.message, run.finished_at = "Failed", cls, message, self.now
        run.output = ([i.output if i.phase == "Succeeded" else None for i in run.instances]
                      if run.fan_out else None)
        run.instance_refs = ([i.output_ref if i.phase == "Succeeded" else None
                              for i in run.instances] if run.fan_out else None)
        run.output_ref = None
        run.output_iteration = run.iteration

    def finish(self) -> None:
        if self.st.failure:
            stopped = self.st.failure[0] == "Stopped"
            self.end("Cancelled" if stopped else "Failed", *self.st.failure)
            return
        failed_finally = [s.name for s in self.p.finally_stages
                          if self.st.stages[s.name].phase == "Failed"]
        if failed_finally:
            self.end("Failed", "FinallyFailed",
                     f"finally stage(s) failed: {', '.join(failed_finally)}")
            return
        try:
            text, composed = self.assemble()
        except ExpressionError as exc:
            self.end("Failed", "InvalidInput", f"spec.output: {exc}")
            return
        self.st.final_output = text
        self.emit(StageEvent(type="OutputAssembled", data={
            "stages": composed, "template": self.p.output is not None,
            "bytes": len(text.encode()),
            "iterations": {n: self.st.stages[n].output_iteration for n in composed}}))
        self.end("Succeeded", "Succeeded", None, text, tuple(composed))

    def assemble(self) -> tuple[str, list[str]]:
        if self.p.output is not None:
            return render_template(self.p.output, variables(self.st, None, None, self.p.params))
        sinks = [n for n in self.graph.order if not self.graph.children.get(n)
                 and self.st.stages[n].phase == "Succeeded"]
        if len(sinks) == 1:
            out = self.st.stages[sinks[0]].output
            return (out if isinstance(out, str) else json.dumps(out, indent=2)), sinks
        return json.dumps({n: self.st.stages[n].output for n in sinks}, indent=2), sinks

    def end(self, phase: str, reason: str, message: str | None, output: str | None = None,
            composed: tuple[str, ...] = ()) -> None:
        self.st.phase, self.st.reason, self.st.message = phase, reason, message
        self.st.finished_at = self.now
        self.emit(FinishPipeline(phase=phase, reason=reason, message=message, output=output,
                                 composed_of=composed))

    def wake_at(self) -> datetime | None:
        if self.st.terminal:
            return None
        times: list[datetime] = []
        deadline = policies.pipeline_deadline(self.st.started_at, self.p.timeout)
        if deadline is not None and (self.st.failure is None or self.st.failure[0] != "Timeout"):
            times.append(deadline)
        holding = self.holding()
        for s in self.p.all_stages:
            if s.name in self.shared:
                continue  # ended before this pass: nothing of it waits or runs
            blocked = (self.st.failure is not None and not s.is_finally) or holding
            for inst in self.st.stages[s.name].instances:
                if inst.phase == "Waiting" and inst.next_attempt_at is not None and not blocked:
                    times.append(inst.next_attempt_at)
                end = policies.attempt_deadline(s, inst)
                if inst.phase == "Running" and end is not None:
                    times.append(end)
                gate = approval_deadline(s, inst) if inst.phase == "Waiting" else None
                if gate is not None:
                    times.append(gate)
        return min(times) if times else None


def plan(pipeline: ResolvedPipeline, state: RunState, now: datetime, *,
         free_slots: Mapping[str, int] | None = None, jitter: Jitter | None = None,
         control: Control | None = None,
         approvals: Iterable[ApprovalDecision] = ()) -> Plan:
    """Decide the next actions. ``free_slots``: new attempts each provider may admit now
    (absent = unlimited). ``jitter``: key → number in [-1, 1] (default: hash of the key).
    ``control``: the run-control fields now (None: unchanged); ``approvals``: decisions
    to judge (``Plan.verdicts`` answers each)."""
    planner = _Planner(pipeline, state, now, free_slots, jitter)
    planner.run(control, approvals)
    return Plan(planner.st, planner.actions, planner.wake_at(), planner.verdicts)


def observe(pipeline: ResolvedPipeline, state: RunState, outcome: AttemptOutcome,
            now: datetime, *, jitter: Jitter | None = None) -> Plan:
    """Fold one finished attempt into the state (success, retry at T, or failure)."""
    planner = _Planner(pipeline, state, now, None, jitter)
    planner.observe(outcome)
    return Plan(planner.st, planner.actions, None)


def step(pipeline: ResolvedPipeline, state: RunState, now: datetime,
         outcomes: Iterable[AttemptOutcome] = (), *,
         free_slots: Mapping[str, int] | None = None, jitter: Jitter | None = None,
         control: Control | None = None,
         approvals: Iterable[ApprovalDecision] = ()) -> Plan:
    """``observe`` every outcome, then ``plan``: what a shell calls on each wake-up."""
    planner = _Planner(pipeline, state, now, free_slots, jitter)
    for o in outcomes:
        planner.observe(o)
    planner.run(control, approvals)
    return Plan(planner.st, planner.actions, planner.wake_at(), planner.verdicts)
