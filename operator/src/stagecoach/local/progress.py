"""Live progress of a local run: a rich table on a terminal, plain lines otherwise.

Fed by the executor after every planning step with the new state and the trace events
it produced. Plain mode prints one line per significant event, so CI logs and pipes read
like a timeline.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..engine import RunState

__all__ = ["PlainProgress", "RichProgress", "make_progress"]

_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Waiting": "yellow",
          "Queued": "magenta", "Skipped": "dim", "Pending": "white"}


def _label(ev: dict[str, Any]) -> str:
    name = ev.get("stage") or ""
    if ev.get("index") is not None:
        name += f"[{ev['index']}]"
    if ev.get("iteration") and ev["iteration"] > 1:
        name += f" (iteration {ev['iteration']})"
    return name


def describe(ev: dict[str, Any]) -> str | None:
    """One human line for a trace event, or None for the uninteresting ones."""
    t, d = ev["type"], ev.get("data") or {}
    who = _label(ev)
    if t == "StageStarted":
        return f"{who}: started (attempt {ev.get('attempt')})"
    if t == "StageSucceeded":
        tok = d.get("tokens") or {}
        tokens = f", {tok.get('input', 0)}+{tok.get('output', 0)} tokens" if tok and (
            tok.get("input") or tok.get("output")) else ""
        return f"{who}: succeeded in {(d.get('durationMs') or 0) / 1000:.2f}s{tokens}"
    if t == "StageFailed":
        retry = f"; retry at {d.get('nextAttemptAt')}" if d.get("willRetry") else ""
        return f"{who}: failed ({d.get('errorClass')}): {d.get('message')}{retry}"
    if t == "ProviderRetry":
        return (f"{who}: provider answered {d.get('status') or d.get('error')}, retrying in "
                f"{(d.get('delayMs') or 0) / 1000:.2f}s")
    if t == "StageSkipped":
        return f"{who}: skipped ({d.get('reason')})"
    if t == "StageQueued":
        return f"{who}: queued ({d.get('reason')})"
    if t == "Decision":
        return (f"{who}: {d.get('kind')} {d.get('expression')!r} -> {d.get('result')} "
                f"=> {d.get('action')}{' ' + d['target'] if d.get('target') else ''}")
    if t == "BudgetExceeded":
        return f"budget exceeded: {d.get('used')} of {d.get('maxTokens')} tokens"
    if t in {"PipelineSucceeded", "PipelineFailed"}:
        msg = f": {d.get('message')}" if d.get("message") else ""
        return f"pipeline {d.get('phase')} ({d.get('reason')}){msg}"
    return None


class PlainProgress:
    """One line per event."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, state: RunState, events: list[dict[str, Any]]) -> None:
        for ev in events:
            line = describe(ev)
            if line:
                ts = ev["ts"][11:23]
                print(f"{ts} {line}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live table of stages, updated in place."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()
        self.lines: list[str] = []
        self.started = datetime.now(UTC)

    def __call__(self, state: RunState, events: list[dict[str, Any]]) -> None:
        for ev in events:
            line = describe(ev)
            if line and ev["type"] in {"StageFailed", "Decision", "BudgetExceeded"}:
                self.lines.append(line)
        table = Table(title=f"{state.phase}  tokens {state.tokens.input}+{state.tokens.output}",
                      expand=False)
        for col in ("stage", "phase", "iter", "attempt", "info"):
            table.add_column(col)
        for name, run in state.stages.items():
            info = run.reason or ""
            if run.fan_out:
                ok = sum(1 for i in run.instances if i.phase == "Succeeded")
                info = f"{ok}/{len(run.instances)} instances {info}".strip()
            style = _STYLE.get(run.phase, "")
            table.add_row(name, f"[{style}]{run.phase}[/]", str(run.iteration),
                          str(run.attempt), info)
        for line in self.lines[-6:]:
            table.add_row("", "", "", "", f"[dim]{line}[/]")
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def make_progress(out: TextIO | None = None) -> PlainProgress | RichProgress:
    """Rich on a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    if stream.isatty():
        return RichProgress(Console(file=stream))
    return PlainProgress(stream)
