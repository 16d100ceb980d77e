"""The self-contained HTML run report (``report.html``, ``stagecoach trace --html``).

One file with inline CSS and an inline SVG chart, no scripts and nothing fetched, so it
can be attached to a ticket or opened from an artifact store. Stage outputs, prompts and
error messages are untrusted: every string goes through :func:`html.escape`. Sections: a
header (name, phase, duration, tokens, progress), the Gantt chart, decisions, errors and
retries, stages and tokens, the final output, then one collapsible block per attempt with
its input and output snapshots and stored output. No side effects.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stagecoach.api import TokenUsage

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
)
from ._style import CSS
from .gantt import anchor, legend, render_gantt
from .load import events_json_lines
from .model import CONTROL_EVENTS, Attempt, OutputFile, RunData, describe_control

__all__ = ["CSS", "render_attempt", "render_html", "render_sections"]

PRE_LIMIT = 100_000
TRACE_LIMIT = 512 * 1024


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _pre(text: str, cls: str = "") -> str:
    body = text if len(text) <= PRE_LIMIT else (
        text[:PRE_LIMIT] + f"\n… [{len(text) - PRE_LIMIT} more characters]")
    attr = f' class="{cls}"' if cls else ""
    return f"<pre{attr}>{escape(body)}</pre>"


def _facts(items: list[str]) -> str:
    return '<div class="facts">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"


def _who(ev: dict[str, Any]) -> str:
    label = instance_label(ev.get("stage"), ev.get("index"), ev.get("iteration"))
    if isinstance(ev.get("attempt"), int):
        label += f" #{ev['attempt']}"
    return _e(label)


def _when(ev: dict[str, Any], data: RunData) -> str:
    return f'<td class="when">{_e(fmt_offset(parse_ts(ev.get("ts")), data.start))}</td>'


def _stat(key: str, value: str, sub: str = "", extra: str = "") -> str:
    sub_html = f'<div class="s">{sub}</div>' if sub else ""
    return (f'<div class="stat"><div class="k">{_e(key)}</div><div class="v">{value}</div>'
            f"{sub_html}{extra}</div>")


def _header(data: RunData) -> str:
    reason, message = data.final()
    total = data.tokens_total()
    why = " — ".join(_e(x) for x in (reason, message) if x and x != data.phase)
    progress = data.status.progress or ""
    bar = ""
    try:
        done, all_ = (int(p) for p in progress.split("/"))
        pct = 100 * done / all_ if all_ else 0
        bar = f'<div class="progress"><i style="width:{pct:.0f}%"></i></div>'
    except ValueError:
        pass
    retried = sum(1 for a in data.attempts if a.outcome == "retrying")
    loops = len(data.loops)
    budget = (f"of {fmt_int(data.max_tokens)} budget ({100 * total.total / data.max_tokens:.1f}%)"
              if data.max_tokens else f"{fmt_int(total.input)} in · {fmt_int(total.output)} out")
    cost = data.cost_total()
    hits, saved, saved_cost = data.saved()
    limit = parse_budget(data.max_cost)
    if limit:
        cost_note = f"of {fmt_usd(limit)} budget ({100 * (cost or 0) / limit:.1f}%)"
    elif hits:
        cost_note = f"saved {fmt_usd(saved_cost)}" if saved_cost is not None else \
            f"saved {fmt_int(saved.total)} tokens"
    else:
        cost_note = "USD at the models' pricing"
    stats = [
        _stat("Duration", _e(fmt_duration(data.duration) if data.duration is not None else "-"),
              _e(f"started {fmt_clock(data.start)}")),
        _stat("Tokens", _e(fmt_int(total.total)), _e(budget)),
        *([_stat("Cost", _e(fmt_usd(cost)), _e(cost_note))] if cost is not None else []),
        _stat("Progress", _e(progress or "-"), "stages finished", bar),
        _stat("Attempts", _e(len(data.attempts)), _e(f"{retried} retried")),
        _stat("Decisions", _e(len(data.of_type("Decision"))),
              _e(f"{loops} back-edge{'s' if loops != 1 else ''} taken")),
    ]
    source = f'<div class="src">{_e(data.source)}</div>' if data.source else ""
    return (f'<header class="hero"><div class="kicker">Stagecoach · run report</div>'
            f'<h1>{_e(data.name)} <span class="badge {_e(data.phase)}">{_e(data.phase)}</span>'
            f'</h1>{f"<p class=why>{why}</p>" if why else ""}'
            f'<div class="stats">{"".join(stats)}</div>{source}</header>')


def _timeline(data: RunData) -> str:
    span = f"{fmt_duration(data.duration)} total" if data.duration is not None else ""
    return (f'<section id="timeline"><h2>Timeline <span class="muted">{_e(span)} · hover a bar '
            f"for details, click to open its attempt</span></h2>{legend()}"
            f'<div class="chart">{render_gantt(data)}</div></section>')


def _decisions(data: RunData) -> str:
    events = data.of_type("Decision")
    if not events:
        return '<section id="decisions"><h2>Decisions</h2><p class="muted">None.</p></section>'
    rows = []
    for ev in events:
        d = ev.get("data") or {}
        raw = d.get("values")
        values: dict[str, Any] = raw if isinstance(raw, dict) else {}
        reads = "".join(f"<li><code>{_e(k)}</code> = <code>{_e(clip(_compact(v), 200))}</code>"
                        f"</li>" for k, v in values.items())
        action = str(d.get("action") or "?")
        target = f" → <b>{_e(d['target'])}</b>" if d.get("target") and action == "goto" else ""
        if d.get("target") and action != "goto":
            target = f' <span class="muted">(back-edge to {_e(d["target"])})</span>'
        err = f'<div class="note err">{_e(d["error"])}</div>' if d.get("error") else ""
        if d.get("note"):
            err += f'<div class="note">{_e(d["note"])}</div>'
        rows.append(f"<tr>{_when(ev, data)}<td>{_who(ev)}</td><td>{_e(d.get('kind'))}</td>"
                    f"<td><code>{_e(d.get('expression'))}</code>{err}</td>"
                    f'<td><ul class="reads">{reads}</ul></td>'
                    f"<td><code>{_e(clip(_compact(d.get('result')), 80))}</code></td>"
                    f'<td><span class="pill {_e(action)}">{_e(action)}</span>{target}</td></tr>')
    return ('<section id="decisions"><h2>Decisions <span class="muted">every condition, '
            "fan-out and route the engine evaluated</span></h2><table><thead><tr><th>at</th>"
            "<th>stage</th><th>kind</th><th>expression</th><th>values read</th><th>result</th>"
            f"<th>action</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def _control(data: RunData) -> str:
    """Approvals, suspend/resume, stop/terminate and reuse, when the run had any."""
    events = data.of_type(*CONTROL_EVENTS)
    if not events:
        return ""
    rows = [f"<tr>{_when(ev, data)}<td>{_who(ev) if ev.get('stage') else ''}</td>"
            f"<td>{_e(ev.get('type'))}</td><td>{_e(describe_control(ev))}</td></tr>"
            for ev in events]
    return ('<section id="control"><h2>Control and approvals <span class="muted">what '
            "people asked of the run</span></h2><table><thead><tr><th>at</th><th>stage</th>"
            f"<th>event</th><th>what</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</section>")


def _compact(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _errors(data: RunData) -> str:
    rows = []
    for ev in data.of_type("StageFailed", "ProviderRetry", "ContextTruncated", "BudgetExceeded"):
        d, t = ev.get("data") or {}, ev.get("type")
        if t == "StageFailed":
            if d.get("willRetry"):
                nxt = fmt_offset(parse_ts(d.get("nextAttemptAt")), data.start)
                fate = f'<span class="pill retrying">retry at {_e(nxt)}</span>'
            else:
                fate = '<span class="pill failed">no retry</span>'
            what = f"<b>{_e(d.get('errorClass') or 'Error')}</b>"
            detail = _e(d.get("message"))
        elif t == "ProviderRetry":
            what = f"<b>HTTP {_e(d.get('status') or d.get('error'))}</b>"
            detail = _e(f"provider {d.get('provider') or '?'} ({d.get('model') or '?'})")
            fate = _e(f"retried after {fmt_duration((d.get('delayMs') or 0) / 1000)}")
        elif t == "ContextTruncated":
            what = "<b>context truncated</b>"
            detail = _e(f"{d.get('input')}: {fmt_int(d.get('tokensBefore'))} → "
                        f"{fmt_int(d.get('tokensAfter'))} tokens (limit {fmt_int(d.get('limit'))})")
            fate = "continued"
        else:
            what, fate = "<b>budget reached</b>", "no new stage started after this"
            detail = _e(f"{fmt_int(d.get('used'))} of {fmt_int(d.get('maxTokens'))} tokens "
                        "used at this point")
        rows.append(f"<tr>{_when(ev, data)}<td>{_who(ev)}</td><td>{what}</td>"
                    f"<td>{detail}</td><td>{fate}</td></tr>")
    body = ('<p class="muted">None: no attempt failed and no provider call was retried.</p>'
            if not rows else
            "<table><thead><tr><th>at</th><th>where</th><th>what</th><th>detail</th>"
            f"<th>then</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return f'<section id="errors"><h2>Errors and retries</h2>{body}</section>'


def _stages(data: RunData) -> str:
    tokens = data.tokens_by_stage()
    status = {s.name: s for s in data.status.stages}
    names = [*data.stage_order, *(n for n in tokens if n not in data.stage_order)]
    total = data.tokens_total()
    costs = data.cost_by_stage()
    cost_total = data.cost_total()
    priced = cost_total is not None  # no model priced: tokens only, never "$0"
    cached = {a.stage for a in data.attempts if a.cached is not None}
    rows = []
    for name in names:
        st = status.get(name)
        t = tokens.get(name, TokenUsage())
        n_attempts = sum(1 for a in data.attempts if a.stage == name)
        phase = st.phase if st else "-"
        note = st.message or st.reason if st and st.phase not in ("Succeeded", "Running") else None
        if name in cached:
            note = "answered by the stage cache"
        pct = 100 * t.total / total.total if total.total else 0
        cost_cell = f'<td class="num">{_e(fmt_usd(costs.get(name)))}</td>' if priced else ""
        rows.append(
            f"<tr><td><b>{_e(name)}</b>"
            f"{f'<div class=muted>{_e(clip(note, 160))}</div>' if note else ''}</td>"
            f'<td><span class="pill {_e(phase)}">{_e(phase)}</span></td>'
            f'<td class="num">{_e(st.iteration if st else "-")}</td>'
            f'<td class="num">{n_attempts}</td><td class="num">{fmt_int(t.input)}</td>'
            f'<td class="num">{fmt_int(t.output)}</td><td class="num">{fmt_int(t.total)}</td>'
            f'{cost_cell}'
            f'<td><div class="meter"><i style="width:{pct:.1f}%"></i></div></td></tr>')
    total_cost = f'<td class="num">{_e(fmt_usd(cost_total))}</td>' if priced else ""
    rows.append(f'<tr class="total"><td>total</td><td></td><td></td>'
                f'<td class="num">{len(data.attempts)}</td><td class="num">{fmt_int(total.input)}'
                f'</td><td class="num">{fmt_int(total.output)}</td>'
                f'<td class="num">{fmt_int(total.total)}</td>{total_cost}<td></td></tr>')
    hits, saved, saved_cost = data.saved()
    if hits:
        money = f", {fmt_usd(saved_cost)}" if saved_cost is not None else ""
        rows.append(f'<tr class="saved"><td colspan="4">saved by the stage cache: {hits} '
                    f'attempt{"s" if hits != 1 else ""}</td><td></td><td></td>'
                    f'<td class="num">{fmt_int(saved.total)}</td>'
                    f'{"<td class=num>" + _e(money.lstrip(", ")) + "</td>" if priced else ""}'
                    "<td></td></tr>")
    unpriced = data.unpriced_tokens()
    if priced and unpriced:
        rows.append(f'<tr><td colspan="9" class="muted">{fmt_int(unpriced)} tokens of models '
                    "without pricing are not in the cost</td></tr>")
    cost_head = '<th class="num">cost</th>' if priced else ""
    return ('<section id="stages"><h2>Stages and tokens <span class="muted">tokens include '
            "attempts whose output was rejected (they were billed)</span></h2><table><thead>"
            '<tr><th>stage</th><th>phase</th><th class="num">iteration</th>'
            '<th class="num">attempts</th><th class="num">input</th><th class="num">output'
            f'</th><th class="num">total</th>{cost_head}<th>share</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _iteration(value: object) -> str:
    return f"iteration {value}" if isinstance(value, int) else "no output"


def _output(data: RunData) -> str:
    done = data.assembled()
    if done is None:
        meta = f'<p class="muted">No output was assembled (pipeline {_e(data.phase)}).</p>'
    else:
        its = done.get("iterations") or {}
        parts = ", ".join(f"<b>{_e(s)}</b> ({_e(_iteration(its.get(s)))})"
                          for s in done.get("stages") or [])
        how = "the output template" if done.get("template") else "the last stage's output"
        meta = (f'<p class="muted">Assembled by {how} from {parts or "no stage"} · '
                f"{_e(fmt_int(done.get('bytes')))} bytes</p>")
    body = _pre(data.final_output, "output") if data.final_output is not None else ""
    return f'<section id="output"><h2>Output</h2>{meta}{body}</section>'


def _snapshot(ev: dict[str, Any]) -> str:
    d, t = ev.get("data") or {}, ev.get("type")
    if t == "InputSnapshot":
        facts = [f"{k} <b>{_e(d[k])}</b>" for k in ("provider", "model") if d.get(k)]
        if d.get("estimatedTokens") is not None:
            facts.append(f"≈ <b>{fmt_int(d['estimatedTokens'])}</b> input tokens")
        if d.get("fallback"):
            facts.append("<b>fallback provider</b>")
        out = f'<h4>Input</h4>{_facts(facts)}'
        for k in ("system", "prompt"):
            if d.get(k):
                out += f'<div class="muted">{k}</div>{_pre(str(d[k]))}'
        if d.get("command"):
            cmd = d["command"]
            out += ('<div class="muted">command</div>'
                    + _pre(" ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)))
        if d.get("input"):
            text = str(d["input"])
            with contextlib.suppress(ValueError):
                text = _pretty(json.loads(text))
            out += f'<div class="muted">input ($STAGECOACH_INPUT)</div>{_pre(text)}'
        return out
    if t == "OutputSnapshot":
        facts = [f"{k} <b>{_e(d[k])}</b>" for k in ("provider", "model", "format", "finishReason")
                 if d.get(k)]
        tok = d.get("tokens") or {}
        if tok:
            facts.append(f"tokens <b>{fmt_int(tok.get('input'))}</b> in / "
                         f"<b>{fmt_int(tok.get('output'))}</b> out")
        body = d.get("content") if "content" in d else d.get("output")
        return (f'<h4>Answer</h4>{_facts(facts)}'
                f"{_pre(_pretty(body))}")
    if t == "ProviderRetry":
        return (f'<div class="note">provider {_e(d.get("provider"))} answered '
                f"{_e(d.get('status') or d.get('error'))}; retried after "
                f"{_e(fmt_duration((d.get('delayMs') or 0) / 1000))}</div>")
    if t == "ContextTruncated":
        return (f'<div class="note">context truncated: {_e(d.get("input"))} '
                f"{fmt_int(d.get('tokensBefore'))} → {fmt_int(d.get('tokensAfter'))} tokens "
                f"(limit {fmt_int(d.get('limit'))})</div>")
    return f"<h4>{_e(t)}</h4>{_pre(_pretty(d))}"


def _stored(f: OutputFile) -> str:
    return (f'<h4>Stored output <code>{_e(f.key)}</code> <span class="muted">{_e(f.format)}'
            f"</span></h4>{_pre(_pretty(f.value))}")


def _href(path: str, base: str | None) -> str:
    """A relative link to ``path`` (relative to the run directory); ``base``: the run
    directory seen from the report's directory (None: the report is in it)."""
    target = path if base is None or base == "." else os.path.join(base, path)
    return quote(Path(target).as_posix())


def _attempt(a: Attempt, data: RunData, base: str | None = None) -> str:
    tokens = f" · {fmt_int(a.tokens.total)} tokens" if a.tokens and a.tokens.total else ""
    facts = [f"started <b>{_e(fmt_offset(a.start, data.start))}</b>",
             f"took <b>{_e(fmt_duration(a.seconds))}</b>"]
    if a.provider:
        facts.append(f"provider <b>{_e(a.provider)}</b>")
    if a.tokens is not None:
        facts.append(f"tokens <b>{fmt_int(a.tokens.input)}</b> in / "
                     f"<b>{fmt_int(a.tokens.output)}</b> out")
    if a.cost is not None:
        facts.append(f"cost <b>{_e(fmt_usd(a.cost))}</b>")
    if a.cached is not None:
        origin = a.cached.get("from") or {}
        facts.append(f"answered by the stage cache from <b>{_e(origin.get('pipeline'))}</b> "
                     f"{_e(origin.get('uid') or '')} ({_e(a.cached.get('createdAt'))})")
    if a.outcome == "retrying" and a.next_attempt_at is not None:
        facts.append(f"next attempt at <b>{_e(fmt_offset(a.next_attempt_at, data.start))}</b>")
    if a.logs:
        links = "".join(f'<a href="{_e(_href(path, base))}">{_e(stream)}</a>'
                        for stream, path in sorted(a.logs.items(), reverse=True))
        facts.append(f'<span class="logs">logs {links}</span>')
    err = ""
    if a.error_class:
        err = f'<div class="note err"><b>{_e(a.error_class)}</b>: {_e(a.message)}</div>'
    elif a.outcome in ("running", "stopped"):
        why = ("still running" if a.outcome == "running"
               else "stopped (cancelled, superseded or the run ended)")
        err = f'<div class="note">No end event: {why}.</div>'
    body = "".join(_snapshot(ev) for ev in a.details)
    if a.output is not None:
        body += _stored(a.output)
    if not body:
        body = '<p class="muted">No snapshots were recorded for this attempt.</p>'
    return (f'<details id="{_e(anchor(a))}"><summary><i class="dot {a.outcome}"></i>'
            f"<b>{_e(a.label)}</b>"
            f'<span class="pill {a.outcome}">{a.outcome}</span>'
            f'<span class="muted">{_e(fmt_duration(a.seconds))}{_e(tokens)}'
            f'{_e(" · " + a.error_class) if a.error_class else ""}</span></summary>'
            f'<div class="body">{_facts(facts)}{err}{body}</div>'
            "</details>")


def _attempts(data: RunData, base: str | None = None) -> str:
    blocks = "".join(_attempt(a, data, base) for a in data.timeline())
    shown = {a.output.key for a in data.attempts if a.output is not None}
    orphans = [f for k, f in sorted(data.outputs.items()) if k not in shown]
    if orphans:
        blocks += "".join(f"<details><summary><b>{_e(f.key)}</b><span class='muted'>stored "
                          f"output with no matching attempt</span></summary>"
                          f"<div class='body'>{_stored(f)}</div></details>" for f in orphans)
    if not blocks:
        blocks = '<p class="muted">No attempts.</p>'
    return (f'<section id="attempts"><h2>Attempts <span class="muted">inputs, answers and '
            f"stored outputs</span></h2>{blocks}</section>")


def _appendix(data: RunData) -> str:
    parts = []
    if data.manifest:
        parts.append(f"<details><summary><b>pipeline.yaml</b><span class='muted'>the resolved "
                     f"manifest</span></summary><div class='body'>{_pre(data.manifest)}</div>"
                     "</details>")
    trace = events_json_lines(data.events)
    if len(trace) > TRACE_LIMIT:
        trace = trace[:TRACE_LIMIT] + f"\n… [{len(trace) - TRACE_LIMIT} more characters]"
    parts.append(f"<details><summary><b>trace</b><span class='muted'>{len(data.events)} events"
                 f"</span></summary><div class='body'>{_pre(trace)}</div></details>")
    if data.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in data.warnings)
        parts.append(f'<div class="note"><b>Warnings</b><ul>{items}</ul></div>')
    return f'<section id="raw"><h2>Manifest and trace</h2>{"".join(parts)}</section>'


def render_html(data: RunData, *, generated: datetime | None = None,
                links_from: str | os.PathLike[str] | None = None) -> str:
    """The report as one HTML document (``generated``: shown in the footer when given).

    Links to files of the run directory (kept logs) are relative: as they are when the
    report lives in the run directory, else from ``links_from`` (the directory the report
    is written to; ``data.source`` must then be the run directory).
    """
    base = None
    if links_from is not None and data.source is not None:
        base = os.path.relpath(os.path.abspath(data.source), os.path.abspath(links_from))
    when = f" on {fmt_clock(generated)}" if generated else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.name)} · {_e(data.phase)} · Stagecoach</title>"
        f"<style>{CSS}</style></head><body><main>"
        f"{_header(data)}{_timeline(data)}{_decisions(data)}{_control(data)}{_errors(data)}"
        f"{_stages(data)}"
        f"{_output(data)}{_attempts(data, base)}{_appendix(data)}"
        f"<footer>Generated by Stagecoach{_e(when)}.</footer></main></body></html>\n"
    )


def render_sections(data: RunData) -> dict[str, str]:
    """The report's sections as escaped HTML fragments, by name (the web UI shows them
    live: ``header``, ``timeline``, ``decisions``, ``control``, ``errors``, ``stages``,
    ``output``)."""
    return {"header": _header(data), "timeline": _timeline(data),
            "decisions": _decisions(data), "control": _control(data),
            "errors": _errors(data), "stages": _stages(data), "output": _output(data)}


def render_attempt(a: Attempt, data: RunData) -> str:
    """One attempt's block (inputs, answers, stored output), escaped HTML."""
    return _attempt(a, data)
