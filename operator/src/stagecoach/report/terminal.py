"""The plain-text run report: what ``stagecoach run`` prints at the end and what
``stagecoach trace`` shows.

One bar per stage attempt (forEach instances too) on a shared time axis scaled to the
width, then the decisions with the values they read, errors and retries, tokens per
stage, and where the final output came from. Plain text, no ANSI codes, so it reads the
same in a terminal, a CI log or a file. No side effects.
"""

from __future__ import annotations

import math
import textwrap
from datetime import datetime
from decimal import Decimal
from typing import Any

from ._fmt import (
    clip,
    fmt_clock,
    fmt_duration,
    fmt_int,
    fmt_offset,
    fmt_usd,
    instance_label,
    parse_budget,
    parse_ts,
    preview,
)
from .model import CONTROL_EVENTS, Attempt, RunData, describe_control

__all__ = ["MARKS", "render_terminal"]

MARKS = {"succeeded": "✓", "failed": "✗", "retrying": "✗", "running": "▸", "stopped": "◼",
         "skipped": "○"}
BAR, BACKOFF = "━", "┄"
OUTPUT_LINES = 30


def _who(ev: dict[str, Any]) -> str:
    label = instance_label(ev.get("stage"), ev.get("index"), ev.get("iteration"))
    if isinstance(ev.get("attempt"), int):
        label += f" #{ev['attempt']}"
    return label


def _nice_step(span: float, slots: int) -> float:
    """A 1/2/5×10ⁿ step giving at most ``slots`` ticks over ``span`` seconds."""
    raw = span / max(1, slots)
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 0.001
    for m in (1, 2, 5, 10):
        if m * exp >= raw:
            return float(m * exp)
    return float(10 * exp)


class _Axis:
    def __init__(self, start: datetime, end: datetime, cols: int) -> None:
        self.start, self.cols = start, cols
        self.span = max((end - start).total_seconds(), 0.001)

    def col(self, ts: datetime) -> int:
        frac = (ts - self.start).total_seconds() / self.span
        return min(self.cols - 1, max(0, int(frac * (self.cols - 1) + 0.5)))

    def ruler(self, pad: int) -> list[str]:
        step = _nice_step(self.span, max(1, self.cols // 12))
        marks = [" "] * self.cols
        labels = [" "] * (self.cols + 12)
        n = 0
        while n * step <= self.span + 1e-9:
            c = min(self.cols - 1, int(n * step / self.span * (self.cols - 1) + 0.5))
            marks[c] = "┬"
            text = fmt_duration(n * step)
            if all(ch == " " for ch in labels[max(0, c - 1): c + len(text) + 1]):
                labels[c: c + len(text)] = list(text)
            n += 1
        line = "".join("─" if m == " " else m for m in marks)
        return [" " * pad + line, " " * pad + "".join(labels).rstrip()]


def _bar(a: Attempt, axis: _Axis, nxt: datetime | None) -> str:
    cells = [" "] * axis.cols
    c0, c1 = axis.col(a.start), axis.col(a.end)
    for c in range(c0, c1):
        cells[c] = BAR
    cells[c1] = MARKS[a.outcome]
    if a.outcome == "retrying":
        until = nxt or a.next_attempt_at
        if until is not None:
            for c in range(c1 + 1, axis.col(until)):
                cells[c] = BACKOFF
    return "".join(cells)


def _tail(a: Attempt) -> str:
    text = fmt_duration(a.seconds)
    if a.outcome in ("failed", "retrying") or (a.outcome == "stopped" and a.error_class):
        text += f" {a.error_class}"
    elif a.outcome in ("running", "stopped"):
        text += f" {a.outcome}"
    return text


def _timeline(data: RunData, width: int) -> list[str]:
    lines = ["Timeline"]
    rows = data.timeline()
    marks = data.marks
    if (not rows and not marks) or data.start is None or data.end is None:
        return [*lines, "  (no stage attempts recorded)"]
    labels = [a.label for a in rows] + [m.label for m in marks]
    label_w = min(max(len(s) for s in labels), 28) + 2
    tail_w = 27  # "12.5s ProviderUnavailable"
    cols = max(20, width - label_w - tail_w - 5)
    axis = _Axis(data.start, data.end, cols)
    lines[0] += f" (0 → {fmt_duration(axis.span)}, one column ≈ {fmt_duration(axis.span / cols)})"
    starts = {(a.instance, a.attempt): a.start for a in rows}
    nexts = {a.key: start for a in rows
             if (start := starts.get((a.instance, a.attempt + 1))) is not None}
    entries: list[tuple[datetime, int, str]] = []
    for n, a in enumerate(rows):
        bar = _bar(a, axis, nexts.get(a.key))
        entries.append((a.start, n, f"  {clip(a.label, label_w - 2):<{label_w}}│{bar}│ {_tail(a)}"))
    for mark in marks:
        cells = [" "] * cols
        note = clip(" ".join(mark.text.split()), cols - 3)
        c = axis.col(mark.ts)
        cells[c] = MARKS[mark.outcome]
        at = c + 2 if c + 2 + len(note) <= cols else max(0, c - 1 - len(note))
        cells[at: at + len(note)] = list(note)
        entries.append((mark.ts, len(rows) + len(entries),
                        f"  {clip(mark.label, label_w - 2):<{label_w}}│{''.join(cells)}│"))
    for loop in data.loops:
        if loop.ts is not None:
            text = (f"── ↺ {loop.stage} → {loop.target}: iteration {loop.iteration} "
                    f"({clip(loop.expression, 50)}) ")
            entries.append((loop.ts, -1, "  " + text.ljust(label_w + cols, "─")))
    entries.sort(key=lambda e: (e[0], e[1] >= 0, e[1]))
    lines += [e[2] for e in entries]
    lines += axis.ruler(label_w + 3)
    lines.append("  ✓ succeeded  ✗ failed  ┄ backoff until the retry  ▸ running  ◼ stopped  "
                 "○ skipped")
    return lines


def _wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=max(30, width - len(indent)),
                         initial_indent=indent, subsequent_indent=indent,
                         max_lines=4, placeholder=" …") or [indent]


def _decisions(data: RunData, width: int) -> list[str]:
    lines = ["Decisions"]
    events = data.of_type("Decision")
    if not events:
        return [*lines, "  (none)"]
    for ev in events:
        d = ev.get("data") or {}
        action = str(d.get("action") or "?")
        if d.get("target"):
            action += f" {d['target']}" if action == "goto" else f" (back-edge to {d['target']})"
        head = (f"  {fmt_offset(_ts(ev), data.start):>8}  {_who(ev)}  {d.get('kind')}: "
                f"{d.get('expression')}")
        verdict = f"= {preview(d.get('result'), 40)}  ⇒ {action}"
        if len(head) + 2 + len(verdict) <= width:
            lines.append(f"{head}  {verdict}")
        else:
            lines += [clip(head, width * 2), " " * 12 + verdict]
        values = d.get("values")
        if isinstance(values, dict) and values:
            reads = ", ".join(f"{k} = {preview(v, 60)}" for k, v in values.items())
            lines += _wrap(f"read {reads}", width, " " * 12)
        if d.get("error"):
            lines += _wrap(f"error: {d['error']}", width, " " * 12)
        if d.get("note"):
            lines += _wrap(f"note: {d['note']}", width, " " * 12)
    return lines


def _control(data: RunData, width: int) -> list[str]:
    """Approvals, suspend/resume, stop/terminate and reuse, when the run had any."""
    events = data.of_type(*CONTROL_EVENTS)
    if not events:
        return []
    lines = ["Control and approvals"]
    for ev in events:
        who = _who(ev) if ev.get("stage") else "pipeline"
        lines.append(f"  {fmt_offset(_ts(ev), data.start):>8}  {who}")
        lines += _wrap(describe_control(ev), width, " " * 12)
    return lines


def _ts(ev: dict[str, Any]) -> datetime | None:
    return parse_ts(ev.get("ts"))


def _errors(data: RunData, width: int) -> list[str]:
    lines = ["Errors and retries"]
    kinds = ("StageFailed", "ProviderRetry", "ContextTruncated", "BudgetExceeded")
    events = data.of_type(*kinds)
    if not events:
        return [*lines, "  (none)"]
    for ev in events:
        d, t = ev.get("data") or {}, ev.get("type")
        at = f"  {fmt_offset(_ts(ev), data.start):>8}  "
        if t == "StageFailed":
            if d.get("willRetry"):
                nxt = fmt_offset(_ts({"ts": d.get("nextAttemptAt")}), data.start)
                fate = f"will retry at {nxt}"
            else:
                fate = "no retry"
            lines.append(f"{at}{_who(ev)}  {d.get('errorClass') or 'Error'} ({fate})")
            if d.get("message"):
                lines += _wrap(str(d["message"]), width, " " * 12)
        elif t == "ProviderRetry":
            status = d.get("status") or d.get("error") or "?"
            delay = fmt_duration((d.get("delayMs") or 0) / 1000)
            lines.append(f"{at}{_who(ev)}  provider {d.get('provider') or '?'} answered "
                         f"{status}; retried after {delay}")
        elif t == "ContextTruncated":
            lines.append(f"{at}{_who(ev)}  context truncated: {d.get('input')} "
                         f"{fmt_int(d.get('tokensBefore'))} → {fmt_int(d.get('tokensAfter'))} "
                         f"tokens (limit {fmt_int(d.get('limit'))})")
        elif d.get("maxCost") is not None:
            lines.append(f"{at}budget reached: {fmt_int(d.get('used'))} tokens (max "
                         f"{fmt_int(d.get('maxTokens'))}), ${d.get('cost')} of "
                         f"${d.get('maxCost')}; no new stage started after this")
        else:
            lines.append(f"{at}budget reached: {fmt_int(d.get('used'))} of "
                         f"{fmt_int(d.get('maxTokens'))} tokens used; no new stage started "
                         "after this")
    return lines


def _tokens(data: RunData) -> list[str]:
    by_stage = data.tokens_by_stage()
    total = data.tokens_total()
    costs = data.cost_by_stage()
    cost_total = data.cost_total()
    priced = cost_total is not None  # no model priced: tokens only, never "$0"
    cached = {a.stage for a in data.attempts if a.cached is not None}
    name_w = max([len(s) for s in by_stage] + [8]) + 2
    head = f"Tokens{'':<{name_w - 4}}{'input':>10}{'output':>10}{'total':>10}"
    lines = [head + (f"{'cost':>12}" if priced else "")]
    for stage, t in by_stage.items():
        share = t.total / total.total if total.total else 0.0
        bar = "█" * round(share * 20)
        cost = f"{fmt_usd(costs.get(stage)):>12}" if priced else ""
        note = "  (cache)" if stage in cached else ""
        lines.append(f"  {stage:<{name_w}}{fmt_int(t.input):>10}{fmt_int(t.output):>10}"
                     f"{fmt_int(t.total):>10}{cost}  {bar}{note}")
    lines.append(f"  {'total':<{name_w}}{fmt_int(total.input):>10}{fmt_int(total.output):>10}"
                 f"{fmt_int(total.total):>10}" + (f"{fmt_usd(cost_total):>12}" if priced else ""))
    unpriced = data.unpriced_tokens()
    if priced and unpriced:
        lines.append(f"  {fmt_int(unpriced)} tokens of models without pricing are not in "
                     "the cost")
    hits, saved, saved_cost = data.saved()
    if hits:
        money = f", {fmt_usd(saved_cost)}" if saved_cost is not None else ""
        lines.append(f"  saved by the stage cache: {hits} attempt{'s' if hits != 1 else ''}, "
                     f"{fmt_int(saved.total)} tokens{money}")
    if data.max_tokens:
        lines.append(f"  budget {fmt_int(data.max_tokens)} tokens, "
                     f"{100 * total.total / data.max_tokens:.1f}% used")
    limit = parse_budget(data.max_cost)
    if limit:
        spent = cost_total or Decimal(0)
        lines.append(f"  budget {fmt_usd(limit)}, {100 * spent / limit:.1f}% used")
    return lines


def _iteration(value: object) -> str:
    """``iteration 2``, or ``no output`` for a stage the assembly read but that never
    produced one (skipped, failed)."""
    return f"iteration {value}" if isinstance(value, int) else "no output"


def _output(data: RunData) -> list[str]:
    lines = ["Output"]
    done = data.assembled()
    if done is None:
        lines.append(f"  no output assembled (pipeline {data.phase})")
    else:
        stages = done.get("stages") or []
        iterations = done.get("iterations") or {}
        parts = [f"{s} ({_iteration(iterations.get(s))})" for s in stages]
        how = "the output template" if done.get("template") else "the last stage's output"
        lines.append(f"  assembled by {how} from {', '.join(parts) or 'no stage'}, "
                     f"{fmt_int(done.get('bytes'))} bytes")
    if data.final_output is not None:
        body = data.final_output.splitlines() or [""]
        lines += [f"  ┆ {line}" for line in body[:OUTPUT_LINES]]
        if len(body) > OUTPUT_LINES:
            lines.append(f"  ┆ … {len(body) - OUTPUT_LINES} more lines in output.txt")
    return lines


def render_terminal(data: RunData, width: int = 100) -> str:
    """The whole report as plain text, about ``width`` columns wide."""
    width = max(60, width)
    reason, message = data.final()
    total = data.tokens_total()
    head = f"{data.name} — {data.phase}" + (f" ({reason})" if reason else "")
    facts = [f"started {fmt_clock(data.start)}"]
    if data.duration is not None:
        facts.append(f"took {fmt_duration(data.duration)}")
    if data.status.progress:
        facts.append(f"progress {data.status.progress}")
    retries = sum(1 for a in data.attempts if a.outcome == "retrying")
    facts.append(f"{len(data.attempts)} attempts, {retries} retried")
    facts.append(f"tokens {fmt_int(total.input)} in + {fmt_int(total.output)} out")
    if (cost := data.cost_total()) is not None:
        facts.append(f"cost {fmt_usd(cost)}")
    lines = [head, "  " + facts[0]]
    for fact in facts[1:]:
        if len(lines[-1]) + 3 + len(fact) <= width:
            lines[-1] += " · " + fact
        else:
            lines.append("  " + fact)
    if message:
        lines += _wrap(message, width, "  ")
    sections = [_timeline(data, width), _decisions(data, width), _control(data, width),
                _errors(data, width), _tokens(data), _output(data)]
    for section in sections:
        if section:
            lines += ["", *section]
    if data.warnings:
        lines += ["", "Warnings", *[f"  {w}" for w in data.warnings]]
    end = f"Result: {data.phase}" + (f" ({reason})" if reason else "")
    if message:
        end += f": {message}"
    lines += ["", clip(" ".join(end.split()), width * 3)]
    return "\n".join(line.rstrip() for line in lines) + "\n"
