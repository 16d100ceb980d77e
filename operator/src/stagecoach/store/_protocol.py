"""The :class:`Store` protocol and its errors.

A store is a flat namespace of keys (``outputs/research/1.json``, ``trace/<writer>.jsonl``)
holding bytes. It is deliberately small so that a ConfigMap backend (one ConfigMap per
key prefix, data keys inside) and an S3 backend (one object per key) implement it without
change. Writes to one key are atomic: a reader sees the old value or the new one, never a
mix. The trace is the one append-only structure, and each writer appends only to its own
record, so no two processes ever read-modify-write the same key.
"""

from __future__ import annotations

import builtins
from typing import Any, Protocol, runtime_checkable

__all__ = ["NotFound", "Store", "StoreError", "TooLarge"]


class StoreError(Exception):
    """A store operation failed (I/O, permissions, the backend is unreachable)."""


class NotFound(StoreError, KeyError):
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"not found in the store: {self.key}"


class TooLarge(StoreError):
    """The value exceeds what the backend can hold (ConfigMaps: about 1 MiB)."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"{key}: {size} bytes exceed the store's limit of {limit} bytes")
        self.key, self.size, self.limit = key, size, limit


@runtime_checkable
class Store(Protocol):
    """Where outputs and the trace live. All methods are coroutines."""

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` atomically (replacing any old value)."""
        ...

    async def get(self, key: str) -> bytes:
        """Read ``key``; raises :class:`NotFound` when it does not exist."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """Append events to this writer's own trace record."""
        ...

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """Every writer's events merged, sorted by ``ts`` (stable per writer)."""
        ...

    def ref(self, key: str) -> str:
        """A human-facing reference for ``key`` (``file:///…``, ``s3://…``, ``configmap:…``)."""
        ...
