"""Live progress of a local run: a rich table on a terminal, plain lines otherwise.

Fed by the executor after every planning step with the new state and the trace events
it produced. Plain mode prints one line per significant event, so CI logs and pipes read
like a timeline. What a person must act on or should know (an approval stage waiting,
with the exact command that decides it; a decision; suspend, stop and terminate; reused
stages) is printed as lines in both modes, above the table on a terminal. While the
terminal prompt asks about an approval the display is paused (:meth:`RichProgress.pause`)
and what happened meanwhile is printed when it resumes.
"""

from __future__ import annotations

import shlex
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..engine import RunState

__all__ = ["PlainProgress", "RichProgress", "approval_commands", "describe", "make_progress"]

_STYLE = {"Succeeded": "green", "Failed": "red", "Running": "cyan", "Waiting": "yellow",
          "Queued": "magenta", "Skipped": "dim", "Pending": "white"}
_ANNOUNCED = {"ApprovalRequested", "ApprovalDecided", "PipelineSuspended", "PipelineResumed",
              "ShutdownRequested", "StageReused", "StageCached"}
"""Events printed as lines above the rich table (the rest only update the table)."""


def _label(ev: dict[str, Any]) -> str:
    name = ev.get("stage") or ""
    if ev.get("index") is not None:
        name += f"[{ev['index']}]"
    if ev.get("iteration") and ev["iteration"] > 1:
        name += f" (iteration {ev['iteration']})"
    return name


def approval_commands(run_dir: str, stage: str, inputs: list[dict[str, Any]]) -> str:
    """The commands that decide a waiting approval stage of a local run."""
    target = f"{shlex.quote(run_dir)} {shlex.quote(stage)}"
    opts = []
    for i in inputs:
        if not isinstance(i, dict) or not isinstance(i.get("name"), str):
            continue
        values = "|".join(str(v) for v in i["enum"]) if isinstance(i.get("enum"), list) \
            else "VALUE"
        opts.append(f"[--input {i['name']}={values}]")
    approve = " ".join([f"stagecoach approve {target}", *opts])
    return f"{approve}  or  stagecoach reject {target} -m WHY"


def _by(d: dict[str, Any]) -> str:
    return f" by {d['by']}" if d.get("by") else ""


def describe(ev: dict[str, Any], run_dir: str | None = None) -> str | None:
    """One human line for a trace event, or None for the uninteresting ones.
    ``run_dir`` (local runs) lets a waiting approval name the command that decides it."""
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
    if t == "StageCached":
        origin = d.get("from") or {}
        saved = (d.get("saved") or {}).get("tokens") or {}
        tokens = saved.get("input", 0) + saved.get("output", 0)
        what = f"; saved {tokens} tokens" if tokens else ""
        return f"{who}: answered by the stage cache (from {origin.get('uid') or '?'}{what})"
    if t == "StageReused":
        return f"{who}: reused from {d.get('source')} (iteration {d.get('sourceIteration')})"
    if t == "ApprovalRequested":
        line = f"{who}: awaiting approval: {d.get('message')}"
        if d.get("deadline"):
            line += f" (until {d['deadline']}, then {d.get('onTimeout') or 'reject'})"
        if run_dir is not None and ev.get("stage"):
            line += "\n    " + approval_commands(run_dir, str(ev["stage"]),
                                                 list(d.get("inputs") or []))
        return line
    if t == "ApprovalDecided":
        verb = "approved" if d.get("decision") == "Approve" else "rejected"
        who_decided = d.get("approver") or ("timeout" if d.get("by") == "timeout" else "?")
        inputs = d.get("inputs") or {}
        extra = f" inputs {', '.join(f'{k}={v}' for k, v in inputs.items())}" if inputs else ""
        note = f": {d['message']}" if d.get("message") else ""
        return f"{who}: {verb} by {who_decided}{extra}{note}"
    if t == "PipelineSuspended":
        return f"pipeline suspended{_by(d)}: no new attempt starts"
    if t == "PipelineResumed":
        return f"pipeline resumed{_by(d)}"
    if t == "ShutdownRequested":
        if d.get("mode") == "Stop":
            return f"stop requested{_by(d)}: running attempts finish, then the finally stages run"
        return f"terminate requested{_by(d)}: every running attempt is stopped"
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

    def __init__(self, out: TextIO | None = None, run_dir: str | None = None) -> None:
        self.out = out or sys.stdout
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._paused = False
        self._held: list[str] = []

    def __call__(self, state: RunState, events: list[dict[str, Any]]) -> None:
        for ev in events:
            line = describe(ev, self.run_dir)
            if line:
                self._print(f"{ev['ts'][11:23]} {line}")

    def note(self, text: str) -> None:
        """A line from the executor itself (not an event)."""
        self._print(text)

    def _print(self, line: str) -> None:
        with self._lock:
            if self._paused:
                self._held.append(line)
                return
        print(line, file=self.out, flush=True)

    def pause(self) -> None:
        """Hold output (a prompt is asking on the terminal)."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Print what was held, continue."""
        with self._lock:
            self._paused, held, self._held = False, self._held, []
        for line in held:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        self.resume()


class RichProgress:
    """A live table of stages, updated in place."""

    def __init__(self, console: Console | None = None, run_dir: str | None = None) -> None:
        self.console = console or Console()
        self.run_dir = run_dir
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()
        self.lines: list[str] = []
        self.started = datetime.now(UTC)
        self._lock = threading.RLock()
        self._paused = False
        self._held: list[str] = []
        self._state: RunState | None = None

    def __call__(self, state: RunState, events: list[dict[str, Any]]) -> None:
        with self._lock:
            for ev in events:
                line = describe(ev, self.run_dir)
                if not line:
                    continue
                if ev["type"] in _ANNOUNCED or ev["type"] in {"PipelineSucceeded",
                                                              "PipelineFailed"}:
                    self._announce(line)
                elif ev["type"] in {"StageFailed", "Decision", "BudgetExceeded"}:
                    self.lines.append(line)
            self._state = state
            if not self._paused:
                self.live.update(self._table(state))

    def _announce(self, line: str) -> None:
        if self._paused:
            self._held.append(line)
        else:
            self.console.print(escape(line), highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        """A line from the executor itself (not an event)."""
        with self._lock:
            self._announce(text)

    def _table(self, state: RunState) -> Table:
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
                          str(run.attempt), escape(info))
        for line in self.lines[-6:]:
            table.add_row("", "", "", "", f"[dim]{escape(line)}[/]")
        return table

    def pause(self) -> None:
        """Stop redrawing (a prompt is asking on the terminal)."""
        with self._lock:
            if not self._paused:
                self._paused = True
                self.live.stop()

    def resume(self) -> None:
        """Print what happened meanwhile, redraw."""
        with self._lock:
            if not self._paused:
                return
            self._paused, held, self._held = False, self._held, []
            for line in held:
                self.console.print(escape(line), highlight=False, soft_wrap=True)
            self.live.start()
            if self._state is not None:
                self.live.update(self._table(self._state))

    def close(self) -> None:
        with self._lock:
            if self._paused:
                self.resume()
            self.live.stop()


def make_progress(out: TextIO | None = None,
                  run_dir: str | None = None) -> PlainProgress | RichProgress:
    """Rich on a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    if stream.isatty():
        return RichProgress(Console(file=stream), run_dir)
    return PlainProgress(stream, run_dir)
