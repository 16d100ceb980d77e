"""The inline SVG Gantt chart of a run's attempts, for the HTML report.

One row per stage instance and iteration (``scrape[2]``, ``research it2``); its attempts
sit side by side as bars coloured by outcome, with the backoff before a retry drawn as a
dashed line, stage outcomes without an attempt (skipped, a forEach over an empty list, a
failure before anything ran) as a note, and every back-edge taken as a vertical marker
("↺ iteration 2"). Each bar has a hover title and links to its attempt's details. The
``<rect>`` elements are exactly the attempt bars. Everything is escaped. No side effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

from ._fmt import clip, fmt_clock, fmt_duration, fmt_int, instance_label
from .model import Attempt, RunData, StageMark

__all__ = ["anchor", "legend", "render_gantt"]

WIDTH, LABEL_W, RIGHT, TOP, ROW_H, BAR_H = 1100, 190, 150, 52, 26, 14
GLYPH = {"succeeded": "✓", "failed": "✗", "retrying": "✗", "running": "▸", "stopped": "◼",
         "skipped": "○"}


def anchor(a: Attempt) -> str:
    """The id of an attempt's details in the HTML report."""
    index = "x" if a.index is None else str(a.index)
    return f"attempt-{a.stage}-{a.iteration}-{index}-{a.attempt}"


@dataclass
class _Row:
    stage: str
    iteration: int
    index: int | None
    start: datetime
    attempts: list[Attempt] = field(default_factory=list)
    mark: StageMark | None = None
    """Shown when the row has no attempt: why (skipped, nothing to run, failed)."""


def _rows(data: RunData) -> list[_Row]:
    rows: dict[tuple[str, int, int | None], _Row] = {}
    for a in data.timeline():
        row = rows.setdefault(a.instance, _Row(a.stage, a.iteration, a.index, a.start))
        row.attempts.append(a)
    for mark in data.marks:
        key = (mark.stage, mark.iteration, mark.index)
        row = rows.setdefault(key, _Row(mark.stage, mark.iteration, mark.index, mark.ts))
        if not row.attempts:
            row.mark = mark
    rank = {name: n for n, name in enumerate(data.stage_order)}
    return sorted(rows.values(), key=lambda r: (r.start, rank.get(r.stage, len(rank)),
                                                r.iteration, r.index or 0))


def _step(span: float) -> float:
    raw = span / 8
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 0.001
    return float(next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw))


def _title(a: Attempt, nxt: datetime | None) -> str:
    lines = [f"{instance_label(a.stage, a.index)} · iteration {a.iteration} · attempt {a.attempt}",
             f"{a.outcome} after {fmt_duration(a.seconds)}",
             f"{fmt_clock(a.start)} → {fmt_clock(a.end)}"]
    if a.provider:
        lines.append(f"provider {a.provider}")
    if a.tokens is not None:
        lines.append(f"tokens {fmt_int(a.tokens.input)} in / {fmt_int(a.tokens.output)} out")
    if a.error_class:
        lines.append(f"{a.error_class}: {clip(a.message or '', 300)}")
    if a.outcome == "retrying" and (nxt or a.next_attempt_at):
        lines.append(f"next attempt at {fmt_clock(nxt or a.next_attempt_at)}")
    return "\n".join(lines)


def render_gantt(data: RunData) -> str:
    """The chart as an ``<svg>`` element (empty note when nothing ran)."""
    rows = _rows(data)
    if not rows or data.start is None or data.end is None:
        return '<p class="muted">No stage attempts were recorded.</p>'
    t0 = data.start
    top = TOP if any(loop.ts for loop in data.loops) else TOP - 22
    span = max((data.end - t0).total_seconds(), 0.001)
    chart_w = WIDTH - LABEL_W - RIGHT
    height = top + len(rows) * ROW_H + 10

    def x(ts: datetime) -> float:
        return LABEL_W + min(max((ts - t0).total_seconds() / span, 0.0), 1.0) * chart_w

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="Timeline of {len(data.attempts)} attempts">'
    ]
    for n, _ in enumerate(rows):
        if n % 2 == 0:
            y = top + n * ROW_H
            out.append(f'<path class="stripe" d="M0 {y} h{WIDTH} v{ROW_H} h-{WIDTH} z"/>')
    step, k = _step(span), 0
    while k * step <= span + 1e-9:
        gx = LABEL_W + k * step / span * chart_w
        out.append(f'<line class="grid" x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" '
                   f'y2="{height - 6}"/>')
        out.append(f'<text class="tick" x="{gx:.1f}" y="{top - 10}" text-anchor="middle">'
                   f"{escape(fmt_duration(k * step))}</text>")
        k += 1
    for loop in data.loops:
        if loop.ts is None:
            continue
        lx = x(loop.ts)
        first = next((n for n, r in enumerate(rows) if r.start >= loop.ts), len(rows))
        ly = top + first * ROW_H
        tip = escape(f"{loop.stage} routed back to {loop.target}: iteration {loop.iteration}\n"
                     f"{loop.expression}")
        out.append(f'<g class="loop"><title>{tip}</title>'
                   f'<line x1="{lx:.1f}" y1="{top - 46}" x2="{lx:.1f}" y2="{height - 6}"/>'
                   f'<line class="sep" x1="0" y1="{ly}" x2="{WIDTH}" y2="{ly}"/>'
                   f'<text x="{lx + 4:.1f}" y="{top - 37}">↺ {escape(loop.target)} '
                   f"it{loop.iteration}</text></g>")
    for n, row in enumerate(rows):
        y = top + n * ROW_H
        mid = y + ROW_H / 2
        label = escape(clip(instance_label(row.stage, row.index), 26))
        sub = f'<tspan class="sub"> it{row.iteration}</tspan>' if row.iteration > 1 else ""
        out.append(f'<text class="label" x="10" y="{mid + 4:.1f}">{label}{sub}</text>')
        if row.mark is not None:
            sx = x(row.start)
            note = escape(clip(row.mark.text, 60))
            anchor_side = "end" if sx > LABEL_W + chart_w * 0.6 else "start"
            tx = sx - 8 if anchor_side == "end" else sx + 8
            cls = "skip" if row.mark.outcome == "skipped" else f"skip {row.mark.outcome}"
            out.append(f'<circle class="{cls}" cx="{sx:.1f}" cy="{mid:.1f}" r="4">'
                       f"<title>{escape(row.mark.text)}</title></circle>"
                       f'<text class="{cls}" x="{tx:.1f}" y="{mid + 4:.1f}" '
                       f'text-anchor="{anchor_side}">{note}</text>')
            continue
        for i, a in enumerate(row.attempts):
            nxt = row.attempts[i + 1].start if i + 1 < len(row.attempts) else None
            bx = x(a.start)
            bw = max(x(a.end) - bx, 4.0)
            if a.outcome == "retrying" and (nxt or a.next_attempt_at):
                until = x(nxt or a.next_attempt_at or a.end)
                if until > bx + bw:
                    gap = ((nxt or a.next_attempt_at or a.end) - a.end).total_seconds()
                    tip = escape(f"backoff before attempt {a.attempt + 1}: {fmt_duration(gap)}")
                    out.append(f'<line class="backoff" x1="{bx + bw:.1f}" y1="{mid:.1f}" '
                               f'x2="{until:.1f}" y2="{mid:.1f}"><title>{tip}</title></line>')
            out.append(f'<a href="#{escape(anchor(a))}"><rect class="bar {a.outcome}" '
                       f'x="{bx:.1f}" y="{mid - BAR_H / 2:.1f}" width="{bw:.1f}" '
                       f'height="{BAR_H}" rx="3"><title>{escape(_title(a, nxt))}</title>'
                       f"</rect></a>")
        last = row.attempts[-1]
        ex = max(x(last.end), x(last.start) + 4.0) + 6
        text = f"{GLYPH[last.outcome]} {fmt_duration(last.seconds)}"
        if len(row.attempts) > 1:
            text += f" · {len(row.attempts)} attempts"
        out.append(f'<text class="dur {last.outcome}" x="{ex:.1f}" y="{mid + 4:.1f}">'
                   f"{escape(text)}</text>")
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    """The colour key shown above the chart."""
    items: list[tuple[str, str]] = [("succeeded", "succeeded"), ("retrying", "failed, retried"),
                                    ("failed", "failed"), ("running", "running"),
                                    ("stopped", "stopped")]
    keys = "".join(f'<span class="key"><i class="sw {cls}"></i>{escape(text)}</span>'
                   for cls, text in items)
    return (f'<div class="legend">{keys}<span class="key"><i class="sw backoff"></i>backoff'
            '</span><span class="key"><i class="sw loop"></i>back-edge (new iteration)</span>'
            "</div>")
