"""Watch-fed caches of the objects the operator already watches: pipelines and Jobs.

Why: a reconcile used to GET its pipeline and LIST its Jobs on every pass, although
kopf's watches (:mod:`.main`) deliver the very same objects. :class:`ObjectCache` keeps
the latest version of each object seen, from three sources: the watch events
(:meth:`~ObjectCache.observe`), the objects our own writes return
(:meth:`~ObjectCache.put`, wired through :attr:`.kube.Kube.on_write`), and a LIST that
seeds a pipeline's Jobs (:meth:`~ObjectCache.seed`). Whatever the source, an older
``resourceVersion`` never replaces a newer one, so a cache is never older than our own
last write to an object. Jobs are indexed by their owning pipeline.

What a cache cannot know, the reconciler checks with the API: a Job a pipeline's
record says was created but the cache lacks may be a lag, not a deletion (the reconciler
GETs it before calling it deleted); a pipeline's Jobs are seeded by one LIST when the
reconciler first runs it and again every :data:`RESYNC` (a watch gap loses deletions).
Creating a Job the cache lacks is safe anyway: names are deterministic and AlreadyExists
is adopted. No I/O here; no side effects beyond the cache itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["RESYNC", "ObjectCache", "newer", "owner_of"]

ObjectKey = tuple[str, str]
PipelineKey = tuple[str, str]

RESYNC = 300.0
"""Seconds after which a pipeline's Jobs are listed again (as informers resync)."""


def _version(obj: dict[str, Any]) -> int | None:
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def newer(candidate: dict[str, Any], known: dict[str, Any] | None) -> bool:
    """Whether ``candidate`` may replace ``known``: no older ``resourceVersion``
    (etcd's revisions, the same convention client-go's informers rely on). An object
    of another uid (deleted and created again) always replaces."""
    if known is None:
        return True
    if (candidate.get("metadata") or {}).get("uid") != (known.get("metadata") or {}).get(
            "uid"):
        return True
    a, b = _version(candidate), _version(known)
    return a is None or b is None or a >= b


def owner_of(obj: dict[str, Any], kind: str = "AgentPipeline") -> str | None:
    """The name of the object's first owner of ``kind``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


class ObjectCache:
    """The latest version of each watched object, by ``(namespace, name)``; with
    ``owner`` set, also an index of the objects per owning pipeline."""

    def __init__(self, owner: Callable[[dict[str, Any]], str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._owner = owner
        self._clock = clock
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._owned: dict[PipelineKey, set[str]] = {}
        self._seeded: dict[PipelineKey, float] = {}
        self._gone: dict[ObjectKey, int] = {}
        """Deleted objects' last resourceVersion: a late write response or a LIST taken
        before the deletion does not bring them back."""

    @staticmethod
    def _key(obj: dict[str, Any]) -> ObjectKey | None:
        meta = obj.get("metadata") or {}
        if not meta.get("name") or not meta.get("namespace"):
            return None
        return str(meta["namespace"]), str(meta["name"])

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        """The cached object, or None (never seen, or deleted). Do not mutate it."""
        return self._objects.get((ns, name))

    def __len__(self) -> int:
        return len(self._objects)

    def put(self, obj: dict[str, Any]) -> None:
        """Keep ``obj`` unless the cache holds a newer version (a write's response, a
        watch event, an item of a LIST)."""
        key = self._key(obj)
        if key is None:
            return
        gone = self._gone.get(key)
        version = _version(obj)
        if gone is not None and version is not None and version <= gone:
            return
        if not newer(obj, self._objects.get(key)):
            return
        self._gone.pop(key, None)
        self._objects[key] = obj
        if self._owner is not None:
            owner = self._owner(obj)
            if owner is not None:
                self._owned.setdefault((key[0], owner), set()).add(key[1])

    def remove(self, ns: str, name: str, version: int | None = None) -> None:
        """Forget a deleted object (``version``: its resourceVersion at deletion)."""
        obj = self._objects.pop((ns, name), None)
        if version is not None:
            self._gone[(ns, name)] = version
            if len(self._gone) > 10_000:
                for k in list(self._gone)[:5_000]:
                    del self._gone[k]
        if obj is not None and self._owner is not None:
            owner = self._owner(obj)
            names = self._owned.get((ns, owner)) if owner else None
            if names is not None:
                names.discard(name)
                if not names:
                    del self._owned[(ns, owner)]  # type: ignore[arg-type]

    def observe(self, type_: str | None, obj: dict[str, Any]) -> None:
        """A watch event (kopf's ``type``: None for the initial listing)."""
        if type_ == "DELETED":
            key = self._key(obj)
            if key is not None:
                self.remove(*key, _version(obj))
            return
        self.put(obj)

    # -- a pipeline's Jobs ---------------------------------------------------------------
    def owned(self, ns: str, pipeline: str) -> list[dict[str, Any]]:
        """The cached objects owned by pipeline ``ns/pipeline``."""
        return [self._objects[(ns, n)] for n in sorted(self._owned.get((ns, pipeline), ()))
                if (ns, n) in self._objects]

    def seeded(self, key: PipelineKey) -> bool:
        """Whether ``key``'s objects were listed within :data:`RESYNC`."""
        at = self._seeded.get(key)
        return at is not None and self._clock() - at < RESYNC

    def seed(self, key: PipelineKey, items: list[dict[str, Any]],
             list_version: str | None) -> None:
        """Merge a LIST of ``key``'s objects taken at ``list_version``: newer cached
        versions stay; cached objects the LIST lacks are dropped unless they are newer
        than the LIST (created after it)."""
        try:
            at = int(str(list_version))
        except (TypeError, ValueError):
            at = None
        listed = set()
        for item in items:
            self.put(item)
            listed.add(str(item["metadata"]["name"]))
        for name in list(self._owned.get(key, ())):
            obj = self._objects.get((key[0], name))
            version = _version(obj) if obj is not None else None
            if name not in listed and (at is None or version is None or version <= at):
                self.remove(key[0], name, at)
        self._seeded[key] = self._clock()

    def unseed(self, key: PipelineKey) -> None:
        """List ``key``'s objects again on its next pass (after a failed pass)."""
        self._seeded.pop(key, None)

    def forget(self, key: PipelineKey) -> None:
        """A deleted pipeline: drop its objects (the garbage collector deletes them)."""
        for name in list(self._owned.get(key, ())):
            self._objects.pop((key[0], name), None)
        self._owned.pop(key, None)
        self._seeded.pop(key, None)
