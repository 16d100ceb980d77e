"""Trace events written by the runner (DESIGN §5): InputSnapshot, OutputSnapshot,
ProviderRetry, ContextTruncated.

Stage lifecycle events (StageStarted, StageSucceeded, StageFailed) belong to the shell
that schedules the attempt, not to the runner. Each attempt writes to its own trace
record (``runner-<stage>-<iteration>[-<index>]-<attempt>``), so runners never contend.
Every string is scrubbed of registered secret values before it is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from stagecoach.api import AttemptSpec
from stagecoach.store import Store

from .clock import Clock, format_ts

__all__ = ["Redactor", "TraceSink", "TraceWriter", "writer_id_for"]

SNAPSHOT_LIMIT = 64 * 1024
"""Longest string kept in a snapshot event; longer ones are cut with a marker."""


class TraceSink(Protocol):
    """Where the runner sends its events."""

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        """Record one event of ``type`` for the current attempt."""
        ...


class Redactor:
    """Replaces secret values (API keys) in strings and nested data with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        """Register a value that must never be written (short values are ignored)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for s in self._secrets:
            if s in value:
                value = value.replace(s, "***")
        return value

    def data(self, value: Any) -> Any:
        """Recursively redact strings in dicts and lists."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def writer_id_for(spec: AttemptSpec) -> str:
    """``runner-<stage>-<iteration>[-<index>]-<attempt>``."""
    index = "" if spec.index is None else f"-{spec.index}"
    return f"runner-{spec.stage.name}-{spec.iteration}{index}-{spec.attempt}"


def clip(text: str, limit: int = SNAPSHOT_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters]"


class TraceWriter:
    """Appends this attempt's events to its own record in the store, one append per event."""

    def __init__(
        self,
        store: Store,
        spec: AttemptSpec,
        clock: Clock,
        *,
        writer_id: str | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.clock = clock
        self.writer_id = writer_id or writer_id_for(spec)
        self.redactor = redactor or Redactor()
        self.events: list[dict[str, Any]] = []
        """Every event written, in order (for tests and the local executor's live view)."""

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        """Write one event now."""
        spec = self.spec
        event = {
            "ts": format_ts(self.clock.now()),
            "pipeline": spec.pipeline.name,
            "uid": spec.pipeline.uid,
            "type": type,
            "stage": spec.stage.name,
            "iteration": spec.iteration,
            "attempt": spec.attempt,
            "index": spec.index,
            "data": self.redactor.data(data),
        }
        self.events.append(event)
        await self.store.append_trace(self.writer_id, [event])
