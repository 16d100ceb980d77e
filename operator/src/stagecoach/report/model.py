"""The data behind a run report: status, trace and outputs folded into attempts.

:class:`RunData` is what every view reads. It is built from a local run directory by
:func:`stagecoach.report.load_run`, or in the cluster from the pipeline's status and trace
ConfigMaps with :meth:`RunData.from_parts`, so ``stagecoach trace`` looks the same either
way. The flat trace is folded here, once, into :class:`Attempt` values (StageStarted →
StageSucceeded/StageFailed with the same stage, iteration, index and attempt) so the
terminal and HTML views agree. The engine records the end of every attempt it stops
(``StageFailed`` class ``Cancelled`` or ``Timeout``), and stage-level outcomes without an
attempt (a forEach over an empty list, a retry that never started, a skip) become
:class:`StageMark` rows. Partial runs are fine: an attempt with no end event runs (or, in
a trace that ended, stopped) until the last event, events may lack a stage, the status
may be missing. No side effects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from stagecoach.api import PipelineStatus, TokenUsage, parse_usd

from ._fmt import instance_label, parse_ts

__all__ = ["CONTROL_EVENTS", "Attempt", "LoopMark", "OutputFile", "RunData", "StageMark",
           "describe_control"]

Outcome = Literal["succeeded", "failed", "retrying", "running", "stopped"]
Key = tuple[str, int, int | None, int]
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "Invalid"})
RUNNER_EVENTS = frozenset({"InputSnapshot", "OutputSnapshot", "ProviderRetry", "ContextTruncated"})
_OUTPUT_KEY = re.compile(r"^(?:outputs/)?([A-Za-z0-9-]+)/(\d+)(?:-(\d+))?(?:\.json)?$")


@dataclass(frozen=True)
class OutputFile:
    """One stored stage output (``outputs/<stage>/<iteration>[-<index>].json``)."""

    stage: str
    iteration: int
    index: int | None
    format: str
    value: Any
    attempt: int | None = None

    @property
    def key(self) -> str:
        """``outputs/<stage>/<iteration>[-<index>].json``."""
        suffix = "" if self.index is None else f"-{self.index}"
        return f"outputs/{self.stage}/{self.iteration}{suffix}.json"


@dataclass
class Attempt:
    """One stage attempt on the timeline."""

    stage: str
    iteration: int
    index: int | None
    attempt: int
    start: datetime
    end: datetime
    outcome: Outcome = "running"
    ended: bool = False
    error_class: str | None = None
    message: str | None = None
    next_attempt_at: datetime | None = None
    duration_ms: int | None = None
    tokens: TokenUsage | None = None
    provider: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    """The runner's events for this attempt, in order (snapshots, retries, truncations)."""
    output: OutputFile | None = None
    logs: dict[str, str] = field(default_factory=dict)
    """A run stage's kept ``stdout``/``stderr``: stream → path relative to the run directory."""
    cost: Decimal | None = None
    """USD of the attempt's tokens (None: its model has no pricing, or it used none)."""
    cached: dict[str, Any] | None = None
    """The stage cache answered it: ``{key, from, createdAt, saved: {tokens, cost}}``."""

    @property
    def key(self) -> Key:
        """(stage, iteration, index, attempt)."""
        return (self.stage, self.iteration, self.index, self.attempt)

    @property
    def instance(self) -> tuple[str, int, int | None]:
        """(stage, iteration, index): the row this attempt belongs to."""
        return (self.stage, self.iteration, self.index)

    @property
    def label(self) -> str:
        """``scrape[2] it2 #1``."""
        return f"{instance_label(self.stage, self.index, self.iteration)} #{self.attempt}"

    @property
    def seconds(self) -> float:
        """Duration: the reported one when known, else end - start."""
        if self.duration_ms is not None:
            return self.duration_ms / 1000
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass(frozen=True)
class StageMark:
    """A stage outcome with no attempt of its own: skipped, succeeded with nothing to run
    (a forEach over an empty list), or failed without an attempt running (a condition that
    could not be evaluated, a retry the pipeline's end cancelled)."""

    ts: datetime
    stage: str
    iteration: int
    index: int | None
    outcome: Literal["skipped", "succeeded", "failed"]
    text: str

    @property
    def label(self) -> str:
        """``scrape[2] it2``."""
        return instance_label(self.stage, self.index, self.iteration)


@dataclass(frozen=True)
class LoopMark:
    """A back-edge taken: ``stage`` routed back to ``target``, which starts ``iteration``."""

    ts: datetime | None
    stage: str
    target: str
    iteration: int
    expression: str


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _key(ev: Mapping[str, Any]) -> Key | None:
    stage, iteration, attempt = ev.get("stage"), _int(ev.get("iteration")), _int(ev.get("attempt"))
    if not isinstance(stage, str) or iteration is None or attempt is None:
        return None
    return (stage, iteration, _int(ev.get("index")), attempt)


def _tokens(value: object) -> TokenUsage | None:
    if not isinstance(value, Mapping):
        return None
    inp, out = _int(value.get("input")), _int(value.get("output"))
    if inp is None and out is None:
        return None
    return TokenUsage(input=max(inp or 0, 0), output=max(out or 0, 0))


def _usd(value: object) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_usd(value)
    except ValueError:
        return None


def _data(ev: Mapping[str, Any]) -> dict[str, Any]:
    data = ev.get("data")
    return dict(data) if isinstance(data, Mapping) else {}


def _coerce_output(key: str, raw: Any) -> OutputFile | None:
    """An :class:`OutputFile` from a key and a stored document (bytes, str or dict)."""
    m = _OUTPUT_KEY.match(key)
    if not m:
        return None
    stage, iteration = m.group(1), int(m.group(2))
    index = None if m.group(3) is None else int(m.group(3))
    doc: Any = raw
    if isinstance(raw, bytes | str):
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        try:
            doc = json.loads(text)
        except ValueError:
            return OutputFile(stage, iteration, index, "text", text)
    if isinstance(doc, Mapping) and doc.get("format") in ("json", "text") and "value" in doc:
        return OutputFile(stage, iteration, index, str(doc["format"]), doc["value"],
                          _int(doc.get("attempt")))
    return OutputFile(stage, iteration, index, "text" if isinstance(doc, str) else "json", doc)


def _mark(ev: Mapping[str, Any]) -> StageMark | None:
    """The :class:`StageMark` of a stage-level event (no attempt), or None."""
    t, stage, ts = ev.get("type"), ev.get("stage"), parse_ts(ev.get("ts"))
    if t not in ("StageSkipped", "StageSucceeded", "StageFailed", "StageReused") or \
            not isinstance(stage, str) or ts is None or _int(ev.get("attempt")) is not None:
        return None
    data = _data(ev)
    iteration = _int(ev.get("iteration")) or 1
    if t == "StageReused":
        return StageMark(ts, stage, iteration, None, "succeeded",
                         f"reused from {data.get('source') or '?'} "
                         f"(iteration {data.get('sourceIteration') or '?'})")
    if t == "StageSkipped":
        return StageMark(ts, stage, iteration, None, "skipped",
                         f"skipped: {data.get('reason') or ''}")
    if t == "StageSucceeded":
        text = "succeeded: nothing to run (forEach over an empty list)" \
            if data.get("instances") == 0 else "succeeded"
        return StageMark(ts, stage, iteration, _int(ev.get("index")), "succeeded", text)
    return StageMark(ts, stage, iteration, _int(ev.get("index")), "failed",
                     f"{data.get('errorClass') or 'Error'}: {data.get('message') or ''}")


CONTROL_EVENTS = ("PipelineSuspended", "PipelineResumed", "ShutdownRequested",
                  "ApprovalRequested", "ApprovalDecided", "ResumeDecided")
"""What people did to the run (DESIGN §9), shown in a report section of its own."""


def describe_control(ev: Mapping[str, Any]) -> str:
    """One line for a :data:`CONTROL_EVENTS` event."""
    t, d = ev.get("type"), _data(ev)
    by = f" by {d['by']}" if isinstance(d.get("by"), str) and d["by"] not in ("user",) else ""
    if t == "PipelineSuspended":
        return f"suspended{by}: no new attempt started until resumed"
    if t == "PipelineResumed":
        return f"resumed{by}"
    if t == "ShutdownRequested":
        what = ("stop: running attempts finished, the finally stages ran"
                if d.get("mode") == "Stop" else "terminate: running attempts were stopped")
        return f"{what} (asked{by or ' for'})" if by else what
    if t == "ApprovalRequested":
        until = f"; waits until {d['deadline']}, then {d.get('onTimeout') or 'reject'}" \
            if d.get("deadline") else ""
        return f"awaiting approval: {d.get('message') or ''}{until}"
    if t == "ApprovalDecided":
        verb = "approved" if d.get("decision") == "Approve" else "rejected"
        who = d.get("approver") or ("the timeout" if d.get("by") == "timeout" else "?")
        raw = d.get("inputs")
        inputs = raw if isinstance(raw, Mapping) else {}
        extra = f"; inputs {', '.join(f'{k}={v}' for k, v in inputs.items())}" if inputs else ""
        note = f": {d['message']}" if d.get("message") else ""
        return f"{verb} by {who}{extra}{note}"
    if t == "ResumeDecided":
        reused = d["reused"] if isinstance(d.get("reused"), list) else []
        rerun = d["rerun"] if isinstance(d.get("rerun"), Mapping) else {}
        text = (f"resumed from {d.get('source') or '?'}: reused "
                f"{', '.join(map(str, reused)) or 'nothing'}")
        if rerun:
            text += "; runs again: " + "; ".join(f"{k} ({v})" for k, v in rerun.items())
        return text
    return str(t)


def _fold(events: list[dict[str, Any]], end: datetime | None,
          terminal: bool) -> tuple[list[Attempt], list[str]]:
    """Attempts from the trace, in order of first appearance."""
    attempts: dict[Key, Attempt] = {}
    warnings: list[str] = []
    for ev in events:
        t, key, ts = ev.get("type"), _key(ev), parse_ts(ev.get("ts"))
        if key is None and t == "StageFailed" and (mark := _mark(ev)) is not None:
            # A stage-level failure (e.g. the pipeline ended during a retry's backoff):
            # the retry its last attempt announced never happened.
            for prev in attempts.values():
                if (prev.stage, prev.iteration, prev.index) == (
                        mark.stage, mark.iteration, mark.index) and prev.outcome == "retrying":
                    prev.outcome = "failed"
            continue
        if key is None or ts is None:
            continue
        data = _data(ev)
        a = attempts.get(key)
        if t in ("StageStarted", "ApprovalRequested"):  # a gate's wait is its attempt
            if a is None:
                attempts[key] = Attempt(*key, start=ts, end=ts,
                                        provider=data.get("provider") or None)
            continue
        if t in ("StageSucceeded", "StageFailed", "StageCached"):
            duration = _int(data.get("durationMs"))
            if a is None:
                start = ts - timedelta(milliseconds=duration or 0)
                a = attempts[key] = Attempt(*key, start=start, end=ts)
                warnings.append(f"{a.label}: {t} without StageStarted")
            a.end, a.ended, a.duration_ms = ts, True, duration
            a.tokens = _tokens(data.get("tokens")) or a.tokens
            a.cost = _usd(data.get("cost"))
            if t == "StageCached":
                a.cached = {k: data.get(k) for k in ("key", "from", "createdAt", "saved")}
            if t in ("StageSucceeded", "StageCached"):
                a.outcome = "succeeded"
            else:
                a.error_class = data.get("errorClass") or "Error"
                a.outcome = ("retrying" if data.get("willRetry") else
                             "stopped" if a.error_class == "Cancelled" else "failed")
                a.message = data.get("message")
                a.next_attempt_at = parse_ts(data.get("nextAttemptAt"))
            continue
        if t in RUNNER_EVENTS:
            if a is None:
                a = attempts[key] = Attempt(*key, start=ts, end=ts)
            a.details.append(ev)
            if not a.ended:
                a.end = max(a.end, ts)
            if t == "OutputSnapshot" and a.tokens is None:
                snap = _tokens(data.get("tokens"))
                a.tokens = snap
    out = list(attempts.values())
    _close_open(out, events, end, terminal)
    return out, warnings


def _close_open(attempts: list[Attempt], events: list[dict[str, Any]], end: datetime | None,
                terminal: bool) -> None:
    """Attempts with no end event: still running, unless the trace says otherwise. The
    engine records the end of every attempt it stops, so this only completes traces cut
    short or written before it did: stopped when superseded or the run ended."""
    gotos = [ts for ev in events if ev.get("type") == "Decision"
             and _data(ev).get("action") == "goto" and (ts := parse_ts(ev.get("ts")))]
    rows: dict[tuple[str, int | None], list[Attempt]] = {}
    for b in attempts:
        rows.setdefault((b.stage, b.index), []).append(b)
    for a in attempts:
        if a.ended:
            continue
        later = [b.start for b in rows[(a.stage, a.index)]
                 if (b.iteration, b.attempt) > (a.iteration, a.attempt) and b.start >= a.start]
        if later:
            cut = [g for g in gotos if a.start <= g <= min(later)]
            a.end, a.outcome = (min(cut) if cut else min(later)), "stopped"
        else:
            a.end = max(a.end, end or a.end)
            a.outcome = "stopped" if terminal else "running"


def _loops(events: list[dict[str, Any]]) -> list[LoopMark]:
    seen: dict[str, int] = {}
    marks: list[LoopMark] = []
    for ev in events:
        stage, it = ev.get("stage"), _int(ev.get("iteration"))
        if isinstance(stage, str) and it is not None:
            seen[stage] = max(seen.get(stage, 0), it)
        data = _data(ev)
        if ev.get("type") == "Decision" and data.get("action") == "goto":
            target = str(data.get("target") or "?")
            marks.append(LoopMark(parse_ts(ev.get("ts")), str(stage or "?"), target,
                                  seen.get(target, 1) + 1, str(data.get("expression") or "")))
    return marks


def _infer_status(events: list[dict[str, Any]]) -> PipelineStatus:
    """A best-effort status when none was stored: phase and times from the trace."""
    stamps = [ts for ev in events if (ts := parse_ts(ev.get("ts")))]
    phase: Any = "Running" if events else "Pending"
    reason = message = None
    finished = None
    for ev in events:
        if ev.get("type") in ("PipelineSucceeded", "PipelineFailed"):
            data = _data(ev)
            phase = data.get("phase") or (
                "Succeeded" if ev["type"] == "PipelineSucceeded" else "Failed")
            reason, message = data.get("reason"), data.get("message")
            finished = parse_ts(ev.get("ts"))
    try:
        return PipelineStatus(phase=phase, reason=reason, message=message,
                              started_at=min(stamps) if stamps else None, finished_at=finished)
    except ValueError:
        return PipelineStatus(phase="Running" if events else "Pending")


@dataclass
class RunData:
    """Everything a report shows about one run. Build with :meth:`from_parts`."""

    name: str
    status: PipelineStatus
    events: list[dict[str, Any]]
    attempts: list[Attempt]
    outputs: dict[str, OutputFile]
    final_output: str | None
    stage_order: list[str]
    loops: list[LoopMark]
    start: datetime | None
    end: datetime | None
    manifest: str | None = None
    max_tokens: int | None = None
    source: str | None = None
    warnings: list[str] = field(default_factory=list)
    marks: list[StageMark] = field(default_factory=list)
    max_cost: str | None = None
    """``budget.maxCost`` (USD), when the manifest sets one."""

    @classmethod
    def from_parts(cls, status: PipelineStatus | None, events: list[dict[str, Any]],
                   outputs: Mapping[str, Any] | None = None, final_output: str | None = None,
                   *, name: str | None = None, manifest: str | None = None,
                   max_tokens: int | None = None, source: str | None = None,
                   warnings: Iterable[str] = (), logs: Iterable[str] = (),
                   max_cost: str | None = None) -> RunData:
        """Fold a status, trace events and stored outputs into report data.

        ``outputs`` maps an output key (``outputs/<stage>/<iteration>[-<index>].json``, or
        the same without the prefix and suffix) to the stored document: bytes or text as the
        store holds it, or an already parsed ``{"format", "value"}`` dict. ``status`` None
        means "not stored": phase and times are then inferred from the trace. ``logs``:
        kept run-stage logs, ``logs/<stage>/<iteration>[-<index>]-<attempt>.stdout|stderr``
        relative to the run directory.
        """
        notes = list(warnings)
        events = [e for e in events if isinstance(e, dict)]
        status = status if status is not None else _infer_status(events)
        stamps = [ts for ev in events if (ts := parse_ts(ev.get("ts")))]
        times = [t for t in (parse_ts(status.started_at), parse_ts(status.finished_at)) if t]
        times += stamps
        start, end = (min(times), max(times)) if times else (None, None)
        terminal = status.phase in TERMINAL_PHASES
        attempts, fold_notes = _fold(events, end, terminal)
        notes += fold_notes
        files: dict[str, OutputFile] = {}
        for key, raw in (outputs or {}).items():
            f = _coerce_output(key, raw)
            if f is None:
                notes.append(f"ignored output {key!r}: not outputs/<stage>/<iteration>[-<index>]")
            else:
                files[f.key] = f
        _attach_outputs(attempts, files)
        _attach_logs(attempts, logs)
        if name is None:
            name = next((str(e["pipeline"]) for e in events if e.get("pipeline")), None)
        return cls(name=name or "pipeline", status=status, events=events, attempts=attempts,
                   outputs=files, final_output=final_output,
                   stage_order=_stage_order(status, events), loops=_loops(events),
                   start=start, end=end, manifest=manifest, max_tokens=max_tokens,
                   source=source, warnings=notes,
                   marks=[m for ev in events if (m := _mark(ev)) is not None],
                   max_cost=max_cost)

    # -- questions the views ask ------------------------------------------------------
    @property
    def phase(self) -> str:
        """The pipeline's phase."""
        return self.status.phase

    @property
    def terminal(self) -> bool:
        """True once the pipeline reached a final phase."""
        return self.status.phase in TERMINAL_PHASES

    @property
    def duration(self) -> float | None:
        """Seconds from the first to the last known moment of the run."""
        if self.start is None or self.end is None:
            return None
        return max(0.0, (self.end - self.start).total_seconds())

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        """Events of the given types, in trace order."""
        return [e for e in self.events if e.get("type") in types]

    def timeline(self) -> list[Attempt]:
        """Attempts ordered for display: by start, then stage order, iteration, index."""
        rank = {name: n for n, name in enumerate(self.stage_order)}
        return sorted(self.attempts, key=lambda a: (a.start, rank.get(a.stage, len(rank)),
                                                    a.iteration, a.index or 0, a.attempt))

    def final(self) -> tuple[str | None, str | None]:
        """(reason, message) of the pipeline's end: status first, then the final event."""
        reason, message = self.status.reason, self.status.message
        for ev in self.of_type("PipelineSucceeded", "PipelineFailed"):
            data = _data(ev)
            reason = reason or data.get("reason")
            message = message or data.get("message")
        return reason, message

    def assembled(self) -> dict[str, Any] | None:
        """The OutputAssembled event's data, or None."""
        found = self.of_type("OutputAssembled")
        return _data(found[-1]) if found else None

    def tokens_by_stage(self) -> dict[str, TokenUsage]:
        """Tokens per stage that ran, in stage order: the trace's sum, or the status when
        larger (a stage that ran but used none, e.g. a run stage, counts 0)."""
        sums: dict[str, TokenUsage] = {}
        for a in self.attempts:
            t = sums.setdefault(a.stage, TokenUsage())
            if a.tokens is not None:
                t.input += a.tokens.input
                t.output += a.tokens.output
        for m in self.marks:
            if m.outcome != "skipped":
                sums.setdefault(m.stage, TokenUsage())
        for st in self.status.stages:
            if st.tokens.total > sums.get(st.name, TokenUsage()).total:
                sums[st.name] = st.tokens
        rank = {name: n for n, name in enumerate(self.stage_order)}
        return dict(sorted(sums.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))

    def cost_by_stage(self) -> dict[str, Decimal | None]:
        """USD per stage that ran, in the order of :meth:`tokens_by_stage`: the status's
        figure, else the trace's sum; None where nothing was priced (tokens only)."""
        sums: dict[str, Decimal] = {}
        for a in self.attempts:
            if a.cost is not None:
                sums[a.stage] = sums.get(a.stage, Decimal(0)) + a.cost
        status = {st.name: _usd(st.cost) for st in self.status.stages}
        return {name: status.get(name) if status.get(name) is not None else sums.get(name)
                for name in self.tokens_by_stage()}

    def cost_total(self) -> Decimal | None:
        """USD over the run (the status's figure, else the sum over stages); None when no
        model was priced."""
        if (total := _usd(self.status.cost)) is not None:
            return total
        known = [c for c in self.cost_by_stage().values() if c is not None]
        return sum(known, Decimal(0)) if known else None

    def unpriced_tokens(self) -> int:
        """Tokens of attempts that carry no cost (their model has no pricing)."""
        return sum(a.tokens.total for a in self.attempts
                   if a.cost is None and a.tokens is not None and a.cached is None)

    def saved(self) -> tuple[int, TokenUsage, Decimal | None]:
        """What the stage cache saved: (attempts it answered, the tokens and USD their
        answers had cost when they were made)."""
        hits = [a for a in self.attempts if a.cached is not None]
        tokens = TokenUsage()
        cost: Decimal | None = None
        for a in hits:
            saved = (a.cached or {}).get("saved") or {}
            t = _tokens(saved.get("tokens"))
            if t is not None:
                tokens.input += t.input
                tokens.output += t.output
            c = _usd(saved.get("cost"))
            if c is not None:
                cost = c if cost is None else cost + c
        return len(hits), tokens, cost

    def tokens_total(self) -> TokenUsage:
        """All tokens: the status total, or the sum over stages when larger."""
        by_stage = self.tokens_by_stage().values()
        summed = TokenUsage(input=sum(t.input for t in by_stage),
                            output=sum(t.output for t in by_stage))
        return self.status.tokens if self.status.tokens.total >= summed.total else summed


def _stage_order(status: PipelineStatus, events: list[dict[str, Any]]) -> list[str]:
    order: list[str] = []
    for ev in events:
        if ev.get("type") == "PipelineStarted":
            data = _data(ev)
            for group in (data.get("stages"), data.get("finally")):
                if isinstance(group, list):
                    order += [s for s in group if isinstance(s, str) and s not in order]
    order += [s.name for s in status.stages if s.name not in order]
    for ev in events:
        stage = ev.get("stage")
        if isinstance(stage, str) and stage not in order:
            order.append(stage)
    return order


_LOG_KEY = re.compile(r"^logs/([A-Za-z0-9-]+)/(\d+)(?:-(\d+))?-(\d+)\.(stdout|stderr)$")


def _attach_logs(attempts: list[Attempt], logs: Iterable[str]) -> None:
    by_key = {a.key: a for a in attempts}
    for path in logs:
        m = _LOG_KEY.match(path)
        if m is None:
            continue
        index = None if m.group(3) is None else int(m.group(3))
        a = by_key.get((m.group(1), int(m.group(2)), index, int(m.group(4))))
        if a is not None:
            a.logs[m.group(5)] = path


def _attach_outputs(attempts: list[Attempt], files: dict[str, OutputFile]) -> None:
    by_key = {a.key: a for a in attempts}
    for f in files.values():
        target = by_key.get((f.stage, f.iteration, f.index, f.attempt)) if f.attempt else None
        if target is None:
            done = [a for a in attempts if a.instance == (f.stage, f.iteration, f.index)
                    and a.outcome == "succeeded"]
            target = done[-1] if done else None
        if target is not None:
            target.output = f
