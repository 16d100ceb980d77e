"""The stage cache's entries (DESIGN §11), kept in an ordinary :class:`~.Store`.

An entry is one JSON document under ``cache/<sha256>.json``: the answer (format and
value), where it came from (pipeline, uid, stage, iteration, index, attempt), when it was
made and when it expires, and what it cost to make (tokens, USD), which is what a hit
"saves". Shells pick the store: locally ``<--store>/.cache`` (shared by the runs of one
``--store``); in the cluster one namespace-wide ConfigMap store (prefix
:data:`CLUSTER_PREFIX`, no owner, no writer label, so no stage pod may change an entry:
the stage policy of DESIGN §6 only lets a pod update objects labelled with its own Job),
spilling to the namespace's object store like outputs do; or, with ``storage.type: s3``,
the bucket's ``<prefix>/<namespace>/.cache/``.

Only the shells write entries, after an attempt succeeded; two identical misses at the
same time both run and both write (the later write wins; both answers were valid). A
damaged or foreign document reads as a miss, never as an answer.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from ._protocol import NotFound, Store, StoreError
from .keys import CACHE

__all__ = ["CLUSTER_PREFIX", "LOCAL_DIR", "CacheEntry", "StageCache", "entry_key"]

log = logging.getLogger("stagecoach.cache")

CLUSTER_PREFIX = "stagecoach-cache"
"""Name prefix of the namespace's cache ConfigMaps (``stagecoach-cache-k-cache-<key>``)."""
LOCAL_DIR = ".cache"
"""Locally, the cache is this directory of the ``--store`` (beside the run directories)."""
_VERSION = 1


def entry_key(key: str) -> str:
    """``cache/<key>.json``."""
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"not a cache key: {key!r}")
    return f"{CACHE}{key}.json"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        out = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return out if out.tzinfo else out.replace(tzinfo=UTC)


class CacheEntry:
    """One cached answer. ``origin``: ``{pipeline, namespace, uid, stage, iteration,
    index, attempt}`` of the attempt that produced it."""

    def __init__(self, key: str, *, format: str, value: Any, origin: dict[str, Any],
                 created_at: datetime, expires_at: datetime,
                 tokens: dict[str, int] | None = None, cost: str | None = None) -> None:
        self.key = key
        self.format = format
        self.value = value
        self.origin = origin
        self.created_at = created_at
        self.expires_at = expires_at
        self.tokens = tokens or {"input": 0, "output": 0}
        self.cost = cost

    def to_json(self) -> bytes:
        """The stored document."""
        doc = {"version": _VERSION, "key": self.key, "format": self.format,
               "value": self.value, "from": self.origin,
               "createdAt": _ts(self.created_at), "expiresAt": _ts(self.expires_at),
               "tokens": self.tokens, "cost": self.cost}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> CacheEntry | None:
        """The entry, or None when ``data`` is not an entry for ``key``."""
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("version") != _VERSION or doc.get("key") != key:
            return None
        created, expires = _parse_ts(doc.get("createdAt")), _parse_ts(doc.get("expiresAt"))
        fmt, origin, tokens = doc.get("format"), doc.get("from"), doc.get("tokens")
        if created is None or expires is None or fmt not in ("json", "text") or \
                not isinstance(origin, dict) or "value" not in doc:
            return None
        if fmt == "text" and not isinstance(doc["value"], str):
            return None
        cost = doc.get("cost")
        return cls(key, format=fmt, value=doc["value"], origin=origin, created_at=created,
                   expires_at=expires,
                   tokens={k: int(v) for k, v in tokens.items()
                           if k in ("input", "output") and isinstance(v, int)}
                   if isinstance(tokens, dict) else None,
                   cost=cost if isinstance(cost, str) else None)

    def describe(self) -> dict[str, Any]:
        """The ``StageCached`` event's facts: key, producer, age, what it saved."""
        return {"key": self.key, "from": self.origin, "createdAt": _ts(self.created_at),
                "saved": {"tokens": self.tokens, "cost": self.cost}}


class StageCache:
    """Lookups, saves and collection of entries in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"StageCache({self.store!r})"

    async def lookup(self, key: str, now: datetime, ttl: timedelta) -> CacheEntry | None:
        """The entry for ``key`` made within ``ttl`` before ``now`` and not expired, else
        None (a store error is a miss: the stage then simply runs)."""
        try:
            data = await self.store.get(entry_key(key))
        except NotFound:
            return None
        except StoreError as e:
            log.warning("stage cache %s: cannot read entry %s: %s", self.store, key, e)
            return None
        entry = CacheEntry.from_json(data, key)
        if entry is None:
            log.warning("stage cache %s: entry %s is damaged; treated as a miss",
                        self.store, key)
            return None
        if now >= entry.expires_at or now - entry.created_at >= ttl:
            return None
        return entry

    async def save(self, entry: CacheEntry) -> bool:
        """Write ``entry`` (replacing an older one); False when the store refused it."""
        try:
            await self.store.put(entry_key(entry.key), entry.to_json())
        except StoreError as e:
            log.warning("stage cache %s: cannot save entry %s: %s", self.store, entry.key, e)
            return False
        return True

    async def collect(self, now: datetime) -> int:
        """Delete entries past their expiry; returns how many went. Entries that cannot
        be read are left (a concurrent writer's, or not ours)."""
        delete = getattr(self.store, "delete", None)
        if delete is None:
            return 0
        read_all = getattr(self.store, "read_all", None)  # ConfigMaps: one LIST, with data
        values: dict[str, bytes] | None = await read_all(CACHE) if read_all else None
        gone = 0
        for k in sorted(values) if values is not None else await self.store.list(CACHE):
            if not k.endswith(".json"):
                continue
            key = k[len(CACHE):-len(".json")]
            try:
                data = values[k] if values is not None else await self.store.get(k)
            except StoreError:
                continue
            entry = CacheEntry.from_json(data, key)
            if entry is not None and now >= entry.expires_at:
                try:
                    await delete(k)
                    gone += 1
                except Exception as e:  # an API error: try again at the next collection
                    log.warning("stage cache %s: cannot delete %s: %s", self.store, k, e)
        return gone
