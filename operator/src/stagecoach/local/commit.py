"""Group commit for a local run: every write of an engine pass reaches the disk at once.

A local run writes, per stage, an output file and a few trace events (the runner's
snapshots, the executor's lifecycle events). Written one by one, each costs a worker
thread hop, an ``open``/``write``/``close`` and, for outputs, an ``fsync``: most of the
executor's per-stage overhead. :class:`GroupCommitStore` is a
:class:`~stagecoach.store.LocalStore` that keeps writes in memory until
:meth:`~GroupCommitStore.commit`, which the executor calls once per engine pass, after
``step()`` and before anything of the pass is acted on (attempts started, status
published). One commit, in one worker thread: every pending output is written to a
temporary file, ``fsync``'d and renamed into place, their directories ``fsync``'d, then
each trace record gets one ``write`` of its buffered lines and one ``fdatasync``.
Outputs come first, so a ``StageSucceeded`` on disk always has its output on disk.

Durability stays what it was: an attempt's result is observed by the engine in a pass
whose commit finishes before the pass's consequences are visible, so nothing on disk ever
refers to data that is not. A crash loses only what no durable record mentions yet (a
resume runs those attempts again). Reads are served from memory for values written by
this process (an upstream output, the executor reading back an attempt's output); the
cache keeps at most :data:`CACHE_BYTES` of committed values.
"""

from __future__ import annotations

import asyncio
import builtins
import ctypes
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import LocalStore, StoreError, TooLarge
from ..store.keys import trace_key
from ..store.trace import encode_events

__all__ = ["CACHE_BYTES", "GroupCommitStore"]

CACHE_BYTES = 64 * 1024 * 1024
"""Committed values kept in memory for reads (pending ones are always kept)."""


class GroupCommitStore(LocalStore):
    """A :class:`LocalStore` whose writes become durable together at :meth:`commit`.

    >>> store = GroupCommitStore("/tmp/run")         # doctest: +SKIP
    >>> await store.put("outputs/a/1.json", b"{}")   # in memory  # doctest: +SKIP
    >>> await store.commit()                          # on disk    # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], *, max_value_bytes: int | None = None,
                 cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(root, max_value_bytes=max_value_bytes)
        self._pending: dict[Path, bytes] = {}
        """Values not yet on disk, by path (a later put of the same key replaces)."""
        self._appends: dict[Path, builtins.list[bytes]] = {}
        """Trace lines not yet on disk, by record."""
        self._records: dict[str, Path] = {}
        """Each writer's record file (a path is checked and built once, not per event)."""
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._cache_limit = cache_bytes
        self._lock = asyncio.Lock()
        self._io = threading.Lock()  # one commit on disk at a time (also across loops)
        self.commits = 0
        """Commits that wrote something (for tests and the benchmark)."""

    @property
    def dirty(self) -> bool:
        """Whether something waits for :meth:`commit`."""
        return bool(self._pending or self._appends)

    # -- the Store protocol ------------------------------------------------------------
    async def put(self, key: str, data: bytes) -> None:
        """Keep ``data`` for the next commit (readable at once through :meth:`get`)."""
        if self.max_value_bytes is not None and len(data) > self.max_value_bytes:
            raise TooLarge(key, len(data), self.max_value_bytes)
        data = bytes(data)
        self._pending[self._path(key)] = data
        self._remember(key, data)

    async def get(self, key: str) -> bytes:
        """From memory when this process wrote it, else from disk."""
        data = self._cache.get(key)
        if data is not None:
            return data
        return await super().get(key)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Committed and pending keys under ``prefix``."""
        await self.commit()
        return await super().list(prefix)

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """Buffer the events' lines for the next commit."""
        if events:
            path = self._records.get(writer_id)
            if path is None:
                path = self._records[writer_id] = self._path(trace_key(writer_id))
            self._appends.setdefault(path, []).append(encode_events(events))

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """Every record merged, pending lines included (they are committed first)."""
        await self.commit()
        return await super().read_trace()

    # -- commit ------------------------------------------------------------------------
    async def commit(self) -> None:
        """Make every write so far durable, in one worker thread; no-op when clean.

        Raises :class:`~stagecoach.store.StoreError` when the disk refuses (what was not
        written stays pending, so a later commit tries again).
        """
        async with self._lock:
            if not self.dirty:
                return
            pending, appends = self._pending, self._appends
            self._pending, self._appends = {}, {}
            try:
                await asyncio.to_thread(self._write, pending, appends)
            except BaseException:
                for path, data in pending.items():
                    self._pending.setdefault(path, data)
                for path, chunks in appends.items():
                    self._appends.setdefault(path, []).extend(chunks)
                raise
            self.commits += 1

    def commit_sync(self) -> None:
        """:meth:`commit` without an event loop (the executor's last word on exit)."""
        if not self.dirty:
            return
        pending, appends = self._pending, self._appends
        self._pending, self._appends = {}, {}
        self._write(pending, appends)
        self.commits += 1

    def _write(self, pending: dict[Path, bytes], appends: dict[Path, builtins.list[bytes]]) -> None:
        with self._io:
            dirs: set[Path] = set()
            sync = _syncfs is None
            for path, data in pending.items():
                _put_file(path, data, dirs, sync)
            if _syncfs is not None and appends:
                # One syncfs makes every output (data, entry, rename) durable before
                # the trace lines that refer to them are written.
                self._sync_all()
            for path, chunks in appends.items():
                _append_file(path, b"".join(chunks), dirs, sync)
            if _syncfs is not None:
                self._sync_all()
                return
            for d in dirs:
                _sync_dir(d)

    def _sync_all(self) -> None:
        assert _syncfs is not None
        try:
            _syncfs(self.root)
        except OSError as e:
            raise StoreError(f"cannot sync {self.root} to disk: {e}") from e

    def _remember(self, key: str, data: bytes) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached -= len(old)
        self._cache[key] = data
        self._cached += len(data)
        if self._cached <= self._cache_limit:
            return
        waiting, evict, excess = set(self._pending), [], self._cached - self._cache_limit
        for k, v in self._cache.items():  # oldest first; never a value still waiting
            if excess <= 0:
                break
            if self._path(k) not in waiting:
                evict.append(k)
                excess -= len(v)
        for k in evict:
            self._cached -= len(self._cache.pop(k))


def _put_file(path: Path, data: bytes, dirs: set[Path], sync: bool) -> None:
    """Temp file, fsync (``sync``), rename: a reader sees the old value or the new one."""
    tmp = path.with_name(f".{path.name}.commit")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(path.parent.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e}") from e
    dirs.add(path.parent)


def _append_file(path: Path, data: bytes, dirs: set[Path], sync: bool) -> None:
    """One ``write`` on an ``O_APPEND`` descriptor, then ``fdatasync`` (``sync``)."""
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            dirs.add(path.parent)
        try:
            _write_all(fd, data)
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"cannot append to {path}: {e}") from e


def _load_syncfs() -> Callable[[Path], None] | None:
    """Linux's ``syncfs(2)`` (flush one filesystem: a whole commit in one call), or None
    where it is missing; then each file and directory is fsync'd instead."""
    if not sys.platform.startswith("linux") or os.environ.get("STAGECOACH_COMMIT_FSYNC"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(root: Path) -> None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if call(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    return syncfs


_syncfs = _load_syncfs()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sync_dir(path: Path) -> None:
    """Make created and renamed entries durable (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
