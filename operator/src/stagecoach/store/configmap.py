"""The ConfigMap store: the cluster default (DESIGN §5).

Every store key lives in its own ConfigMap, so no two writers ever share one:

=============================================  ==========================================
key                                            ConfigMap
=============================================  ==========================================
``outputs/<stage>/<iteration>[-<index>].json``  ``<pipeline>-<stage>-<iteration>[-<index>]``
``trace/<writer>.jsonl``                       ``<pipeline>-trace-<writer>[-p<part>]``
``replay/<provider>/<writer>.json``            ``<pipeline>-replay-<provider>-<writer>``
anything else                                  ``<pipeline>-k-<key>``
=============================================  ==========================================

Names past 253 characters or with characters a DNS subdomain does not allow are
shortened with a hash (:func:`configmap_name`). Each ConfigMap carries the DESIGN §1
labels, ``stagecoach.dev/kind`` (output, trace, replay, data), the exact key in the
annotation ``stagecoach.dev/key`` and an owner reference to the pipeline, so deleting
the pipeline deletes everything. A value whose ConfigMap would exceed
:data:`SIZE_BUDGET` bytes (serialized, with metadata: safely under the API server's
1 MiB) raises :class:`~stagecoach.store.TooLarge`; the runner reports that as
``OutputTooLarge`` with the size. A trace record that fills its ConfigMap continues in
a new part (``-p1``, ``-p2``...), so the trace itself never hits the limit.

Stage pods are untrusted writers (DESIGN §6): they may not create ConfigMaps at all.
Before a Job exists the operator :meth:`~ConfigMapStore.prepare` s every object the
attempt will write (its output, its trace record, its cassette positions), labelled
``stagecoach.dev/writer=<job name>``; the pod's store runs with ``prepared=True`` and
only updates those objects' data, with a JSON merge patch of ``data`` (one request,
no read first: the metadata stays as the operator wrote it). A trace record's writer
process keeps its own events and patches them under its own data key
(``<writer>.jsonl.<random>``), so the several processes of one pod (a run stage's
``prepare`` and ``collect``) never overwrite each other and never read first. The stage
ServiceAccount's Role and the chart's ValidatingAdmissionPolicy
(:mod:`stagecoach.operator.policy`) enforce that server-side. Every read checks the
owner UID, so a pipeline re-created under the same name never reads the old run's
objects while the garbage collector is still deleting them.

The store talks to the API through :class:`ConfigMapClient`, a five-method seam:
:class:`RestConfigMapClient` is the real one (``kubernetes_asyncio``; in-cluster
ServiceAccount token in a pod, a kubeconfig elsewhere), tests use a fake, and the
operator passes its own API module so that only one operator module talks to the API.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import copy
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from ._protocol import NotFound, StoreError, TooLarge
from .keys import CACHE, OUTPUTS, REPLAY, TRACE, trace_key
from .trace import encode_events, merge_trace, parse_events

__all__ = [
    "SIZE_BUDGET",
    "WRITER_LABEL",
    "ConfigMapClient",
    "ConfigMapStore",
    "Conflict",
    "RestClient",
    "RestConfigMapClient",
    "configmap_name",
    "label_value",
]

POD_RETRY_SECONDS = 60.0
"""How long a stage pod's store keeps retrying an unreachable API server."""
MERGE_PATCH = "application/merge-patch+json"
SIZE_BUDGET = 1_000_000
"""Largest serialized ConfigMap (data + metadata) the store writes, in bytes."""

MANAGED_BY = "app.kubernetes.io/managed-by"
WRITER_LABEL = "stagecoach.dev/writer"
"""On an object a stage pod may update: the name of the Job whose pod that is."""
KEY_ANNOTATION = "stagecoach.dev/key"
PART_ANNOTATION = "stagecoach.dev/part"
OWN_TRACE_SHARE = 4
"""In prepared mode one process's events may fill at most 1/OWN_TRACE_SHARE of the
record's budget (a run-stage pod has two writing processes; a retried pod more)."""
FULL_ANNOTATION = "stagecoach.dev/full"
log = logging.getLogger("stagecoach.store")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MAX_NAME = 253
_MAX_LABEL = 63


class Conflict(StoreError):
    """The object already exists (create) or changed since it was read (replace)."""


class ConfigMapClient(Protocol):
    """The API calls the store needs, all in one namespace. Bodies are plain dicts."""

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None when it does not exist."""
        ...

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; raises :class:`Conflict` when it already exists."""
        ...

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace (``metadata.resourceVersion`` set: :class:`Conflict` when stale)."""
        ...

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """ConfigMaps matching a label selector."""
        ...

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a JSON merge patch (RFC 7386); None when the object does not exist."""
        ...


def _hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def configmap_name(raw: str) -> str:
    """A valid ConfigMap name for ``raw``: itself when valid, else a sanitized prefix
    plus a hash of ``raw`` (deterministic, at most 253 characters). No side effects."""
    if len(raw) <= _MAX_NAME and _DNS_SUBDOMAIN.match(raw):
        return raw
    clean = re.sub(r"[^a-z0-9.-]+", "-", raw.lower()).strip("-.")
    return f"{clean[: _MAX_NAME - 12].rstrip('-.')}-{_hash(raw)}".lstrip("-.")


def label_value(raw: str) -> str:
    """A valid label value for ``raw`` (shortened with a hash past 63 characters)."""
    if len(raw) <= _MAX_LABEL and re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", raw):
        return raw
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-_.")
    return f"{clean[: _MAX_LABEL - 11].rstrip('-_.')}-{_hash(raw)}".lstrip("-_.")


def _kind(key: str) -> str:
    if key.startswith(OUTPUTS):
        return "output"
    if key.startswith(TRACE):
        return "trace"
    if key.startswith(REPLAY):
        return "replay"
    if key.startswith(CACHE):
        return "cache"
    return "data"


def _data_key(key: str) -> str:
    base = key.rsplit("/", 1)[-1]
    return re.sub(r"[^-._a-zA-Z0-9]", "_", base) or "value"


class ConfigMapStore:
    """A :class:`~stagecoach.store.Store` over ConfigMaps of one pipeline.

    >>> store = ConfigMapStore(client, "ns", "battery-report", uid)   # doctest: +SKIP
    >>> await store.put("outputs/research/1.json", b"{}")             # doctest: +SKIP
    >>> store.ref("outputs/research/1.json")
    'configmap:battery-report-research-1'                            # doctest: +SKIP
    """

    def __init__(self, client: ConfigMapClient, namespace: str, pipeline: str,
                 uid: str = "", *, size_budget: int = SIZE_BUDGET,
                 api_version: str = "stagecoach.dev/v1alpha1",
                 kind: str = "AgentPipeline", prepared: bool = False) -> None:
        self.client = client
        self.prepared = prepared
        """Update-only: every object written was created by :meth:`prepare` (pods)."""
        self.namespace = namespace
        self.pipeline = pipeline
        self.uid = uid
        self.size_budget = size_budget
        self._owner = {"apiVersion": api_version, "kind": kind, "name": pipeline,
                       "uid": uid, "blockOwnerDeletion": False, "controller": False}
        self._parts: dict[str, int] = {}
        self._trace_cache: dict[str, dict[str, Any]] = {}
        self._own: dict[str, bytes] = {}
        """Prepared mode: this process's events per trace record (patched whole)."""
        self._own_key = secrets.token_hex(4)
        """Prepared mode: the suffix of this process's data key in a trace record."""

    def __repr__(self) -> str:
        return f"ConfigMapStore({self.namespace}/{self.pipeline})"

    # -- names ---------------------------------------------------------------------
    def name_for(self, key: str, part: int = 0) -> str:
        """The ConfigMap holding ``key`` (trace records: its ``part``)."""
        p = self.pipeline
        m = re.match(r"^outputs/([^/]+)/(\d+(?:-\d+)?)\.json$", key)
        if m:
            raw = f"{p}-{m.group(1)}-{m.group(2)}"
        elif key.startswith(TRACE) and key.endswith(".jsonl"):
            raw = f"{p}-trace-{key[len(TRACE):-len('.jsonl')]}" + (f"-p{part}" if part else "")
        elif key.startswith(REPLAY) and key.endswith(".json"):
            raw = f"{p}-replay-{key[len(REPLAY):-len('.json')].replace('/', '-')}"
        else:
            raw = f"{p}-k-{key.replace('/', '-')}"
        return configmap_name(raw)

    def ref(self, key: str) -> str:
        """``configmap:<name>``."""
        return f"configmap:{self.name_for(key)}"

    @property
    def trace_ref(self) -> str:
        """``configmap:<pipeline>-trace`` (the prefix of every trace record)."""
        return f"configmap:{configmap_name(self.pipeline + '-trace')}"

    def _labels(self, key: str) -> dict[str, str]:
        labels = {MANAGED_BY: "stagecoach", "stagecoach.dev/pipeline": label_value(self.pipeline),
                  "stagecoach.dev/kind": _kind(key)}
        m = re.match(r"^outputs/([^/]+)/(\d+)(?:-(\d+))?\.json$", key)
        if m:
            labels["stagecoach.dev/stage"] = label_value(m.group(1))
            labels["stagecoach.dev/iteration"] = m.group(2)
            if m.group(3) is not None:
                labels["stagecoach.dev/index"] = m.group(3)
        return labels

    def _body(self, key: str, name: str, data: bytes, part: int = 0,
              resource_version: str | None = None, full: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": self._labels(key),
            "annotations": {KEY_ANNOTATION: key, PART_ANNOTATION: str(part)},
        }
        if full:
            meta["annotations"][FULL_ANNOTATION] = "true"
        if self.uid:
            meta["ownerReferences"] = [self._owner]
        if resource_version:
            meta["resourceVersion"] = resource_version
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
        try:
            body["data"] = {_data_key(key): data.decode("utf-8")}
        except UnicodeDecodeError:
            body["binaryData"] = {_data_key(key): base64.b64encode(data).decode()}
        return body

    def _size(self, body: dict[str, Any]) -> int:
        return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())

    def _check_size(self, key: str, body: dict[str, Any]) -> None:
        size = self._size(body)
        if size > self.size_budget:
            raise TooLarge(key, size, self.size_budget)

    @staticmethod
    def _values(cm: dict[str, Any], key: str) -> builtins.list[bytes]:
        """The key's value and, for a prepared trace record, each writing process's
        (``<data key>.<suffix>``), in name order."""
        dk = _data_key(key)
        found: dict[str, bytes] = {}
        for name, value in (cm.get("data") or {}).items():
            if name == dk or name.startswith(dk + "."):
                found[name] = str(value).encode("utf-8")
        for name, value in (cm.get("binaryData") or {}).items():
            if name == dk or name.startswith(dk + "."):
                found[name] = base64.b64decode(value)
        return [found[n] for n in sorted(found)]

    @staticmethod
    def _value(cm: dict[str, Any], key: str) -> bytes:
        dk = _data_key(key)
        if dk in (cm.get("data") or {}):
            return str(cm["data"][dk]).encode("utf-8")
        if dk in (cm.get("binaryData") or {}):
            return base64.b64decode(cm["binaryData"][dk])
        return b""

    def _ours(self, cm: dict[str, Any]) -> bool:
        """Owned by this pipeline's UID (objects of an earlier pipeline of the same name
        may still exist while the garbage collector deletes them)."""
        if not self.uid:
            return True
        owners = cm.get("metadata", {}).get("ownerReferences") or []
        return any(o.get("uid") == self.uid for o in owners)

    def _owned(self, cm: dict[str, Any], key: str) -> bool:
        ann = cm.get("metadata", {}).get("annotations") or {}
        return ann.get(KEY_ANNOTATION) == key and self._ours(cm)

    def _with_data(self, old: dict[str, Any], key: str, data: bytes) -> dict[str, Any]:
        """``old`` with only its value replaced (metadata kept exactly: prepared mode)."""
        meta = {k: v for k, v in old["metadata"].items() if k != "managedFields"}
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
        fresh = self._body(key, old["metadata"]["name"], data)
        for field in ("data", "binaryData"):
            if field in fresh:
                body[field] = fresh[field]
        return body

    async def prepare(self, keys: builtins.list[str], writer: str) -> None:
        """Create (or take over) the objects of ``keys`` for the pod of Job ``writer``:
        labelled ``stagecoach.dev/writer=<writer>``, owned by the pipeline. An object
        that an earlier attempt wrote keeps its value; one left by another pipeline of
        the same name is overwritten empty (it is not ours to read). The objects are
        independent: prepared concurrently."""
        await asyncio.gather(*(self._prepare_one(key, writer) for key in keys))

    async def _prepare_one(self, key: str, writer: str) -> None:
        name = self.name_for(key)
        body = self._body(key, name, b"")
        body["metadata"]["labels"][WRITER_LABEL] = writer

        def takeover(old: dict[str, Any], key: str = key,
                     body: dict[str, Any] = body) -> dict[str, Any] | None:
            if not self._owned(old, key):
                return copy.deepcopy(body)  # not ours (an earlier pipeline): empty
            if (old["metadata"].get("labels") or {}).get(WRITER_LABEL) == writer:
                return None  # prepared already (a repeated reconcile)
            new = self._with_data(old, key, self._value(old, key))
            new["metadata"] = copy.deepcopy(body["metadata"])
            return new

        await self._upsert(name, body, takeover)

    async def _upsert(self, name: str, body: dict[str, Any],
                      replacement: Callable[[dict[str, Any]], dict[str, Any] | None]
                      ) -> None:
        """Create ``body``; when the object exists, replace it with ``replacement(old)``
        (None: leave it as it is), retrying when someone else wrote in between."""
        for _ in range(5):
            try:
                await self.client.create_configmap(self.namespace, body)
                return
            except Conflict:
                pass
            old = await self.client.get_configmap(self.namespace, name)
            if old is None:
                continue
            new = replacement(old)
            if new is None:
                return
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            try:
                await self.client.replace_configmap(self.namespace, new)
                return
            except Conflict:
                continue
        raise StoreError(f"cannot write ConfigMap {name}: it keeps changing")

    async def aclose(self) -> None:
        """Close the client's connections when it has any (the store is done)."""
        close = getattr(self.client, "close", None)
        if close is not None:
            await close()

    # -- the Store protocol -----------------------------------------------------------
    async def put(self, key: str, data: bytes) -> None:
        """Create or replace the key's ConfigMap (prepared mode: update its value)."""
        name = self.name_for(key)
        body = self._body(key, name, data)
        self._check_size(key, body)
        if self.prepared:
            await self._update_prepared(key, name, data)
            return

        def same_key(old: dict[str, Any]) -> dict[str, Any]:
            held = (old["metadata"].get("annotations") or {}).get(KEY_ANNOTATION)
            if held != key:
                raise StoreError(f"ConfigMap {name} holds another key ({held})")
            # Ours, or an earlier pipeline's of the same name: overwritten.
            return {**body, "metadata": dict(body["metadata"])}

        await self._upsert(name, body, same_key)

    @staticmethod
    def _data_patch(data_key: str, data: bytes) -> dict[str, Any]:
        """A merge patch setting one data key (text in ``data``, else ``binaryData``)."""
        try:
            return {"data": {data_key: data.decode("utf-8")}, "binaryData": {data_key: None}}
        except UnicodeDecodeError:
            return {"binaryData": {data_key: base64.b64encode(data).decode()},
                    "data": {data_key: None}}

    async def _patch_prepared(self, key: str, name: str, patch: dict[str, Any]) -> None:
        """One merge patch of a prepared object's data (the API server's policy refuses
        any other object). The answer is checked too: an object that was not prepared
        for this key and pipeline (a cluster without the policy) is an error."""
        written = await self.client.patch_configmap(self.namespace, name, patch)
        if written is None or not self._owned(written, key):
            raise StoreError(f"ConfigMap {name} was not prepared for this attempt "
                             "(a stage pod only updates what the operator created)")

    async def _update_prepared(self, key: str, name: str, data: bytes) -> None:
        await self._patch_prepared(key, name, self._data_patch(_data_key(key), data))

    async def get(self, key: str) -> bytes:
        """The key's value; :class:`NotFound` when missing."""
        cm = await self.client.get_configmap(self.namespace, self.name_for(key))
        if cm is None or not self._owned(cm, key):
            raise NotFound(key)
        return self._value(cm, key)

    async def delete(self, key: str) -> None:
        """Delete the key's ConfigMap (gone already is fine); needs a client that can
        delete (the operator's: only it collects expired stage-cache entries)."""
        delete = getattr(self.client, "delete_configmap", None)
        if delete is None:
            raise StoreError(f"{self}: this client cannot delete {key}")
        await delete(self.namespace, self.name_for(key))

    def _selector(self, kind: str | None) -> str:
        sel = f"{MANAGED_BY}=stagecoach,stagecoach.dev/pipeline={label_value(self.pipeline)}"
        return sel + (f",stagecoach.dev/kind={kind}" if kind else "")

    async def _items(self, prefix: str) -> builtins.list[dict[str, Any]]:
        kind = None
        for p, k in ((OUTPUTS, "output"), (TRACE, "trace"), (REPLAY, "replay"),
                     (CACHE, "cache")):
            if prefix.startswith(p):
                kind = k
        items = await self.client.list_configmaps(self.namespace, self._selector(kind))
        out = []
        for cm in items:
            ann = cm.get("metadata", {}).get("annotations") or {}
            key = ann.get(KEY_ANNOTATION)
            if key and key.startswith(prefix) and self._ours(cm):
                out.append(cm)
        return out

    async def read_all(self, prefix: str = "") -> dict[str, bytes]:
        """Every key under ``prefix`` with its value, in one list call (for reports)."""
        out: dict[str, bytes] = {}
        for cm in await self._items(prefix):
            key = cm["metadata"]["annotations"][KEY_ANNOTATION]
            if not key.startswith(TRACE):
                out[key] = self._value(cm, key)
        return out

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys under ``prefix``, sorted (one ConfigMap list call)."""
        keys = {cm["metadata"]["annotations"][KEY_ANNOTATION] for cm in await self._items(prefix)}
        return sorted(keys)

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """Append to this writer's record; a full part continues in the next one.

        The last version written is cached, so a writer's appends cost one PUT each;
        a conflict (another instance of the same writer, e.g. a restarted operator)
        re-reads it."""
        if not events:
            return
        key = trace_key(writer_id)
        chunk = encode_events(events)
        if self.prepared:
            await self._append_prepared(writer_id, key, chunk)
            return
        part = self._parts.get(writer_id, 0)
        cached = self._trace_cache.pop(writer_id, None)
        # A writer's first append here creates without a read (a run's new record); a
        # conflict (a record from before a restart) reads it on the next turn.
        fresh = cached is None and writer_id not in self._parts
        for _ in range(100):
            name = self.name_for(key, part)
            if fresh:
                old, fresh = None, False
            else:
                old = cached if cached is not None and cached["metadata"]["name"] == name \
                    else await self.client.get_configmap(self.namespace, name)
            cached = None
            if old is None:
                body = self._body(key, name, chunk, part)
                self._check_size(key, body)
                try:
                    written = await self.client.create_configmap(self.namespace, body)
                except Conflict:
                    continue
                self._parts[writer_id] = part
                self._remember(writer_id, written, body)
                return
            ann = old["metadata"].get("annotations") or {}
            ours = self._ours(old)
            if ours and ann.get(FULL_ANNOTATION) == "true":
                part += 1
                continue
            # A record left by an earlier pipeline of the same name is taken over, empty.
            data = (self._value(old, key) if ours else b"") + chunk
            body = self._body(key, name, data, part, old["metadata"]["resourceVersion"])
            if self._size(body) > self.size_budget:
                # Close this part (keep its data) and continue in the next one.
                closed = self._body(key, name, self._value(old, key), part,
                                    old["metadata"]["resourceVersion"], full=True)
                try:
                    await self.client.replace_configmap(self.namespace, closed)
                except Conflict:
                    continue
                part += 1
                continue
            try:
                written = await self.client.replace_configmap(self.namespace, body)
            except Conflict:
                continue
            self._parts[writer_id] = part
            self._remember(writer_id, written, body)
            return
        raise StoreError(f"cannot append to the trace record of {writer_id}")

    async def _append_prepared(self, writer_id: str, key: str, chunk: bytes) -> None:
        """Prepared mode: this process's events, patched whole under its own data key
        (no read, no conflict with the pod's other processes); past its share of the
        record's budget, events are dropped with a warning (a pod may not create the
        next part)."""
        name = self.name_for(key)
        own = self._own.get(writer_id, b"") + chunk
        if len(own) > self.size_budget // OWN_TRACE_SHARE:
            log.warning("trace record %s is full; %d bytes of events dropped", name,
                        len(chunk))
            return
        data_key = f"{_data_key(key)}.{self._own_key}"
        await self._patch_prepared(key, name, self._data_patch(data_key, own))
        self._own[writer_id] = own

    def _remember(self, writer_id: str, written: dict[str, Any], body: dict[str, Any]) -> None:
        rv = (written or {}).get("metadata", {}).get("resourceVersion")
        if rv:
            body["metadata"]["resourceVersion"] = rv
            self._trace_cache[writer_id] = body

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """Every writer's events (all parts, in order), merged by ``ts``."""
        parts: dict[str, builtins.list[tuple[int, int, bytes]]] = {}
        for cm in await self._items(TRACE):
            ann = cm["metadata"]["annotations"]
            key = ann[KEY_ANNOTATION]
            writer = key[len(TRACE):-len(".jsonl")]
            parts.setdefault(writer, []).extend(
                (int(ann.get(PART_ANNOTATION, "0")), n, value)
                for n, value in enumerate(self._values(cm, key)))
        # Each value is parsed alone: a torn last line ends only its own writer's.
        records = {w: [e for *_, value in sorted(ps) for e in parse_events(value)]
                   for w, ps in parts.items()}
        return merge_trace(records)


# -- the real client ---------------------------------------------------------------------


class RestClient:
    """A minimal JSON REST client over ``kubernetes_asyncio``'s configuration and
    connection handling. :meth:`request` returns ``(status, body)`` and never raises
    for HTTP errors; callers map statuses to meaning.

    >>> rest = await RestClient.connect()            # doctest: +SKIP
    >>> status, body = await rest.request("GET", "/api/v1/namespaces")  # doctest: +SKIP
    """

    def __init__(self, api_client: Any, retry_for: float = 0.0) -> None:
        self.api = api_client
        self.retry_for = retry_for
        """Seconds to keep retrying a request the API server could not answer (lost
        connection, 429, 5xx) before giving up: stage pods ride out an API server
        restart this way. 0 (the operator's): fail at once, its reconcile is retried."""

    @classmethod
    async def connect(cls, kubeconfig: str | None = None,
                      retry_for: float = 0.0) -> RestClient:
        """In-cluster configuration when running in a pod (no ``kubeconfig`` given and
        ``KUBERNETES_SERVICE_HOST`` set), else the kubeconfig (``$KUBECONFIG``)."""
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(config_file=path, client_configuration=cfg)
        return cls(client.ApiClient(cfg), retry_for)

    async def request(self, method: str, path: str, body: Any = None,
                      query: builtins.list[tuple[str, str]] | None = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        """One API call; returns the status and the decoded JSON body (retried for
        ``retry_for`` seconds while the API server is unreachable or overloaded)."""
        import asyncio
        import time

        deadline = time.monotonic() + self.retry_for
        delay = 0.5
        while True:
            try:
                status, data = await self._request(method, path, body, query, content_type)
            except StoreError:
                if time.monotonic() + delay > deadline:
                    raise
            else:
                if status not in (429, 500, 502, 503, 504) or time.monotonic() + delay > deadline:
                    return status, data
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)

    async def _request(self, method: str, path: str, body: Any,
                       query: builtins.list[tuple[str, str]] | None,
                       content_type: str) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            resp = await self.api.call_api(
                path, method, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False,
                _return_http_data_only=True)
        except Exception as e:  # connection refused, TLS, timeouts
            raise StoreError(f"{method} {path}: {type(e).__name__}: {e}") from e
        try:
            text = await resp.text()
        finally:
            resp.release()
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = {"message": text}
        return int(resp.status), data

    async def close(self) -> None:
        """Close the connection pool."""
        await self.api.close()


def _error(status: int, data: Any, what: str) -> StoreError:
    msg = data.get("message") if isinstance(data, dict) else str(data)
    if status == 409:
        return Conflict(f"{what}: {msg}")
    return StoreError(f"{what}: HTTP {status}: {msg}")


class RestConfigMapClient:
    """:class:`ConfigMapClient` over :class:`RestClient`."""

    def __init__(self, rest: RestClient) -> None:
        self.rest = rest

    @staticmethod
    def _path(namespace: str, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{namespace}/configmaps"
        return f"{base}/{name}" if name else base

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self.rest.request("GET", self._path(namespace, name))
        if status == 404:
            return None
        if status >= 300:
            raise _error(status, data, f"get configmap {name}")
        return dict(data)

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = await self.rest.request("POST", self._path(namespace), body)
        if status >= 300:
            raise _error(status, data, f"create configmap {body['metadata']['name']}")
        return dict(data)

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        status, data = await self.rest.request("PUT", self._path(namespace, name), body)
        if status >= 300:
            raise _error(status, data, f"replace configmap {name}")
        return dict(data)

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        status, data = await self.rest.request("GET", self._path(namespace),
                                               query=[("labelSelector", selector)])
        if status >= 300:
            raise _error(status, data, "list configmaps")
        return list(data.get("items") or [])

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        status, data = await self.rest.request("PATCH", self._path(namespace, name), patch,
                                               content_type=MERGE_PATCH)
        if status == 404:
            return None
        if status >= 300:
            raise _error(status, data, f"patch configmap {name}")
        return dict(data)


class LazyConfigMapClient:
    """Connects on first use (``open_store`` is synchronous; connecting is not)."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._client: RestConfigMapClient | None = None

    async def _c(self) -> RestConfigMapClient:
        if self._client is None:
            self._client = RestConfigMapClient(await RestClient.connect(
                self.kubeconfig, retry_for=POD_RETRY_SECONDS))
        return self._client

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await (await self._c()).get_configmap(namespace, name)

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await (await self._c()).create_configmap(namespace, body)

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await (await self._c()).replace_configmap(namespace, body)

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await (await self._c()).list_configmaps(namespace, selector)

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        return await (await self._c()).patch_configmap(namespace, name, patch)

    async def close(self) -> None:
        """Close the connection pool, if one was opened."""
        if self._client is not None:
            await self._client.rest.close()
            self._client = None
