"""Merging per-writer trace records into one timeline. No side effects.

Every writer (the executor, each runner) appends JSON lines to its own record; readers
merge them here. Events sort by ``ts`` (ISO-8601 UTC strings with the same precision sort
as text); ties keep each writer's own order, and writers are taken in name order so the
merge is deterministic.

Scheduling events are written at least once, never lost: a shell appends them before it
saves the run state, so an operator killed in between, or a second operator racing the
first (its state write then loses on resourceVersion), writes some of them twice. An
event that can happen only once per stage attempt (or per run) is therefore kept once
as read (:data:`ONCE`, the first copy by time): the trace on disk is at-least-once, the
trace every reader sees is exactly-once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["ONCE", "encode_events", "merge_trace", "parse_events", "with_outbox"]

ONCE = frozenset({
    "PipelineStarted", "PipelineSucceeded", "PipelineFailed", "OutputAssembled",
    "StageReady", "StageStarted", "StageSucceeded", "StageFailed",
    "StageSkipped", "StageCached", "StageReused", "BudgetExceeded",
    "ApprovalRequested", "ApprovalDecided", "ResumeDecided",
})
"""Event types that identify themselves by (type, stage, iteration, attempt, index)."""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""One encoder for every line (``json.dumps`` with options builds a new one per call)."""


def encode_events(events: Iterable[dict[str, Any]]) -> bytes:
    """JSON lines, one event per line, newline-terminated."""
    return "".join(_ENCODER.encode(e) + "\n" for e in events).encode()


def parse_events(data: bytes) -> list[dict[str, Any]]:
    """Parse JSON lines; a torn last line (a writer killed mid-write) is ignored."""
    out: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break
            raise
        if isinstance(event, dict):
            out.append(event)
    return out


def merge_trace(records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge writer → events into one list sorted by ``ts``."""
    keyed = [
        (str(event.get("ts", "")), writer, seq, event)
        for writer, events in sorted(records.items())
        for seq, event in enumerate(events)
    ]
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for *_, event in keyed:
        kind = event.get("type")
        if kind in ONCE:
            key = (kind, event.get("stage"), event.get("iteration"), event.get("attempt"),
                   event.get("index"))
            if key in seen:
                continue
            seen.add(key)
        out.append(event)
    return out


def with_outbox(events: list[dict[str, Any]], outbox: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """A merged trace plus the events a run state carries that may not be appended yet
    (the operator appends them in batches): an outbox event already in the trace (a
    crash re-appends) counts once, whatever its type."""
    if not outbox:
        return events
    seen = {json.dumps(e, sort_keys=True, default=str) for e in events}
    extra = [e for e in outbox if json.dumps(e, sort_keys=True, default=str) not in seen]
    return merge_trace({"0": events, "1": extra}) if extra else events
