"""The local-directory store used by ``stagecoach run`` (DESIGN §5).

Keys are relative paths under the run directory, so ``outputs/research/1.json`` is a file
a user can open. Writes go to a temporary file in the same directory and are renamed into
place, so a reader (or a crash) never sees half a value. Trace records are appended with
one ``write`` per batch on an ``O_APPEND`` descriptor. File I/O runs in a worker thread so
the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import tempfile
from pathlib import Path
from typing import Any

from ._protocol import NotFound, StoreError, TooLarge
from .keys import TRACE, trace_key
from .trace import encode_events, merge_trace, parse_events

__all__ = ["LocalStore"]


class LocalStore:
    """A :class:`~stagecoach.store.Store` over a directory.

    >>> store = LocalStore("/tmp/run")            # doctest: +SKIP
    >>> await store.put("outputs/a/1.json", b"{}")  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], *, max_value_bytes: int | None = None):
        self.root = Path(root).resolve()
        self.max_value_bytes = max_value_bytes

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key:
            raise ValueError(f"invalid store key {key!r}")
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def ref(self, key: str) -> str:
        """The file's path."""
        return str(self._path(key))

    async def put(self, key: str, data: bytes) -> None:
        """Write atomically: temp file in the same directory, fsync, rename."""
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            raise TooLarge(key, len(data), self.max_value_bytes)
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e}") from e

    async def get(self, key: str) -> bytes:
        """Read a key; :class:`NotFound` when missing."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(key) from None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    async def delete(self, key: str) -> None:
        """Remove a key (missing is fine)."""
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, True)
        except OSError as e:
            raise StoreError(f"cannot delete {path}: {e}") from e

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys under ``prefix`` (a plain string prefix), sorted; temp files excluded."""
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in files:
                if name.startswith("."):
                    continue
                key = base + name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """Append JSON lines to ``trace/<writer_id>.jsonl`` with a single write."""
        if not events:
            return
        path = self._path(trace_key(writer_id))
        await asyncio.to_thread(self._append, path, encode_events(events))

    @staticmethod
    def _append(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot append to {path}: {e}") from e

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """All writers' events, sorted by ts."""
        records: dict[str, builtins.list[dict[str, Any]]] = {}
        for key in await self.list(TRACE):
            if key.endswith(".jsonl"):
                writer = key[len(TRACE) : -len(".jsonl")]
                records[writer] = parse_events(await self.get(key))
        return merge_trace(records)
