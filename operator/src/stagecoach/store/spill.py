"""Spilling large values from a small store into an object store (DESIGN §5).

A ConfigMap holds about 1 MiB, so outputs near that limit fail with ``OutputTooLarge``
unless an object store is configured. :class:`SpillStore` composes the two: it *is* a
:class:`~stagecoach.store.Store`, writes small values to the primary store as before, and
sends a value larger than ``threshold`` (or one the primary rejects as
:class:`~stagecoach.store.TooLarge`) to the overflow store under the same key, leaving in
the primary a small pointer document::

    {"stagecoach.dev/spilled": "s3://bucket/ns/pipeline/uid/outputs/draft/1.json",
     "key": "outputs/draft/1.json", "size": 5242880}

``get`` follows pointers, so readers (the runner, the executor, the operator, ``stagecoach
trace``) never know. ``list`` answers from the primary (every spilled key has its
pointer there); the trace stays in the primary. A small value that happens to begin like
a pointer is spilled too, so anything in the primary that looks like a pointer is one.
The operator wraps its ConfigMap store: ``SpillStore(configmap_store, S3Store(...))``;
:func:`~stagecoach.store.open_store` does it when a StoreRef has ``overflow``.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from ._protocol import NotFound, Store, StoreError, TooLarge

__all__ = ["DEFAULT_SPILL_THRESHOLD", "SPILL_MARKER", "SpillStore", "is_pointer"]

DEFAULT_SPILL_THRESHOLD = 512 * 1024
"""Values above this go to the overflow store (well under a ConfigMap's 1 MiB)."""

SPILL_MARKER = "stagecoach.dev/spilled"
_PREFIX = b'{"' + SPILL_MARKER.encode() + b'":'


def is_pointer(data: bytes) -> bool:
    """True when ``data`` is a spill pointer document. No side effects."""
    return data.startswith(_PREFIX)


class SpillStore:
    """``primary`` for small values and the trace; ``overflow`` for values over ``threshold``.

    >>> store = SpillStore(configmaps, S3Store("runs", prefix=...))   # doctest: +SKIP
    """

    def __init__(self, primary: Store, overflow: Store, *,
                 threshold: int = DEFAULT_SPILL_THRESHOLD) -> None:
        if threshold < 0:
            raise ValueError("the spill threshold must be >= 0")
        self.primary = primary
        self.overflow = overflow
        self.threshold = threshold
        self._spilled: set[str] = set()

    def __repr__(self) -> str:
        return f"SpillStore({self.primary!r}, {self.overflow!r}, threshold={self.threshold})"

    async def put(self, key: str, data: bytes) -> None:
        """Small values to the primary; large ones to the overflow plus a pointer."""
        if len(data) <= self.threshold and not is_pointer(data):
            try:
                await self.primary.put(key, data)
                self._spilled.discard(key)
                return
            except TooLarge:
                pass  # the primary's own limit is lower than our threshold: spill anyway
        await self.overflow.put(key, data)
        pointer = {SPILL_MARKER: self.overflow.ref(key), "key": key, "size": len(data)}
        await self.primary.put(key, json.dumps(pointer, separators=(",", ":")).encode())
        self._spilled.add(key)

    async def get(self, key: str) -> bytes:
        """The value, following a pointer to the overflow store when there is one."""
        data = await self.primary.get(key)
        if not is_pointer(data):
            return data
        try:
            pointer = json.loads(data)
        except json.JSONDecodeError as e:
            raise StoreError(f"{key}: damaged spill pointer: {e}") from None
        value = await self.overflow.get(str(pointer.get("key") or key))
        size = pointer.get("size")
        if isinstance(size, int) and size != len(value):
            raise StoreError(f"{key}: {pointer[SPILL_MARKER]} holds {len(value)} bytes, "
                             f"the pointer says {size} (overwritten?)")
        return value

    async def delete(self, key: str) -> None:
        """Delete the value: its pointer and, when it spilled, the overflow object."""
        try:
            data = await self.primary.get(key)
        except NotFound:
            return
        if is_pointer(data):
            await getattr(self.overflow, "delete")(key)  # noqa: B009 (every overflow store deletes)
        await getattr(self.primary, "delete")(key)  # noqa: B009
        self._spilled.discard(key)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """The primary's keys (spilled values have their pointers there)."""
        return await self.primary.list(prefix)

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """The trace stays in the primary store."""
        await self.primary.append_trace(writer_id, events)

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """The primary's trace."""
        return await self.primary.read_trace()

    def ref(self, key: str) -> str:
        """The overflow's reference for values this store spilled, else the primary's."""
        return self.overflow.ref(key) if key in self._spilled else self.primary.ref(key)
