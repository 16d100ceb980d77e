"""The S3-compatible object store backend (DESIGN §5), built on ``obstore``.

Outputs outgrow ConfigMaps (1 MiB each) and long traces outgrow etcd, so a pipeline may
keep both in a bucket (``spec.storage.type: s3``). Every key of one pipeline run lives
under ``<prefix>/<namespace>/<pipeline>/<uid>/`` (:func:`run_prefix`; namespace ``local``
in local mode), so one bucket serves many pipelines and ``ref()`` answers
``s3://<bucket>/<prefix>/<namespace>/<pipeline>/<uid>/<key>``. Values up to
:data:`MAX_VALUE_BYTES` (100 MiB) are accepted; anything over :data:`MULTIPART_CHUNK`
goes up as a multipart upload whose parts are sent concurrently.

S3 has no append, so each trace writer writes *numbered chunk objects*
``trace/<writer>/<seq>.jsonl`` (one per ``append_trace`` call, seq zero-padded so the
keys sort in write order). Nothing is ever rewritten: an append costs one small PUT
however long the trace already is, and a writer that restarts (the operator after a
crash) continues after the highest existing seq instead of overwriting it.
``read_trace`` lists ``trace/``, fetches the chunks concurrently and merges the writers.

Credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``) in the environment: the user's shell in local mode, the Secret
named by ``credentialsSecret`` (keys ``accessKeyId``/``secretAccessKey``) injected as
env by the operator in the cluster. Without them obstore's own chain applies (web
identity, instance metadata). Every obstore failure becomes a :class:`StoreError` whose
message a user can act on (access denied, no such bucket, endpoint unreachable), never
a Rust debug dump. The object store itself is injectable (``object_store=``), so unit
tests run on obstore's in-memory store.

obstore's blocking calls run in worker threads (``asyncio.to_thread``) rather than its
``*_async`` API: with obstore 0.12 the async API makes about one process in five abort
(SIGABRT, exit 134) at interpreter exit, measured here against SeaweedFS, which would turn
a runner pod's success into a failed Job. The blocking calls release the GIL, so the
event loop stays free either way.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stagecoach.api import StoreRef

from ._protocol import NotFound, StoreError, TooLarge
from .keys import TRACE, trace_key
from .trace import encode_events, merge_trace, parse_events

if TYPE_CHECKING:
    from obstore.store import ObjectStore

# obstore (a native extension, ~50 ms to load) is imported where an S3 store is used, so
# a local run or ``validate``, which only import this module, never pay for it; a
# long-lived process calls :func:`load_client` at start instead.

__all__ = [
    "CREDENTIAL_KEYS",
    "MAX_VALUE_BYTES",
    "MULTIPART_CHUNK",
    "S3Store",
    "credentials_env",
    "load_client",
    "run_prefix",
]


MAX_VALUE_BYTES = 100 * 1024 * 1024
"""Largest value :meth:`S3Store.put` accepts (larger raises :class:`TooLarge`)."""

MULTIPART_CHUNK = 8 * 1024 * 1024
"""Values over this size are uploaded in parts of this size, several at a time."""

_SEQ_DIGITS = 10
_READ_CONCURRENCY = 16
_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")
_UNREACHABLE = re.compile(
    r"error sending request|[Cc]onnection (refused|reset)|dns error|timed out"
)


CREDENTIAL_KEYS = {"AWS_ACCESS_KEY_ID": "accessKeyId",
                   "AWS_SECRET_ACCESS_KEY": "secretAccessKey"}
"""Env var → key in the ``credentialsSecret`` it is read from."""


def credentials_env(secret: str) -> builtins.list[dict[str, Any]]:
    """A container's ``env`` entries reading the S3 credentials from Secret ``secret``
    (keys ``accessKeyId``/``secretAccessKey``), for the operator's stage pods. No side
    effects.
    """
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for env, key in CREDENTIAL_KEYS.items()]


def run_prefix(prefix: str, namespace: str | None, pipeline: str, uid: str) -> str:
    """``<prefix>/<namespace>/<pipeline>/<uid>``: where one pipeline run's keys live.

    ``namespace`` is ``local`` when not in a cluster; empty parts are dropped and each
    part is made path-safe. No side effects.

    >>> run_prefix("runs", None, "report", "report-20261124T100000")
    'runs/local/report/report-20261124T100000'
    """
    parts = [p for p in prefix.strip("/").split("/") if p]
    for part in (namespace or "local", pipeline, uid):
        safe = _SEGMENT.sub("-", part).strip("-")
        if safe:
            parts.append(safe)
    return "/".join(parts)


def load_client() -> None:
    """Import obstore now: the operator's first S3 store must not stall its event loop."""
    import obstore.exceptions
    import obstore.store  # noqa: F401


class S3Store:
    """A :class:`~stagecoach.store.Store` over one bucket and key prefix.

    >>> store = S3Store("runs", prefix="stagecoach/local/demo/abc",
    ...                 endpoint="http://127.0.0.1:8333")       # doctest: +SKIP
    >>> await store.put("outputs/a/1.json", b"{}")             # doctest: +SKIP
    >>> store.ref("outputs/a/1.json")                           # doctest: +SKIP
    's3://runs/stagecoach/local/demo/abc/outputs/a/1.json'

    ``access_key_id``/``secret_access_key`` default to ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` in ``environ`` (default ``os.environ``). ``allow_http``
    defaults to true for ``http://`` endpoints (a local SeaweedFS or MinIO).
    ``object_store`` replaces the S3 client (tests pass ``obstore.store.MemoryStore()``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        environ: Mapping[str, str] | None = None,
        allow_http: bool | None = None,
        max_value_bytes: int = MAX_VALUE_BYTES,
        timeout: timedelta = timedelta(minutes=5),
        connect_timeout: timedelta = timedelta(seconds=5),
        max_retries: int = 3,
        object_store: ObjectStore | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.max_value_bytes = max_value_bytes
        self._trace_seq: dict[str, int] = {}
        self._trace_locks: dict[str, asyncio.Lock] = {}
        if object_store is not None:
            self._os: ObjectStore = object_store
            return
        env = os.environ if environ is None else environ
        config: dict[str, Any] = {"region": region or env.get("AWS_REGION") or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
        key = access_key_id or env.get("AWS_ACCESS_KEY_ID")
        secret = secret_access_key or env.get("AWS_SECRET_ACCESS_KEY")
        token = session_token or env.get("AWS_SESSION_TOKEN")
        if key and secret:
            config["access_key_id"] = key
            config["secret_access_key"] = secret
            if token:
                config["session_token"] = token
        if allow_http is None:
            allow_http = bool(endpoint and endpoint.startswith("http://"))
        from obstore.exceptions import BaseError
        from obstore.store import S3Store as _ObstoreS3

        try:
            self._os = _ObstoreS3(
                bucket,
                config=config,  # type: ignore[arg-type]
                client_options={"allow_http": allow_http, "timeout": timeout,
                                "connect_timeout": connect_timeout},
                retry_config={"max_retries": max_retries,
                              "retry_timeout": timedelta(seconds=30)},
            )
        except (BaseError, ValueError) as e:
            raise StoreError(f"cannot configure the S3 store for bucket {bucket}: "
                             f"{_first_line(str(e))}") from None

    @classmethod
    def from_ref(cls, ref: StoreRef, environ: Mapping[str, str] | None = None) -> S3Store:
        """The store an attempt's :class:`~stagecoach.api.StoreRef` names (type ``s3``)."""
        if ref.type != "s3" or not ref.bucket:
            raise ValueError("an s3 store ref needs type s3 and a bucket")
        return cls(ref.bucket, prefix=ref.prefix, endpoint=ref.endpoint, region=ref.region,
                   environ=environ)

    def __repr__(self) -> str:
        where = f", endpoint={self.endpoint!r}" if self.endpoint else ""
        return f"S3Store({self.bucket!r}, prefix={self.prefix!r}{where})"

    # -- keys --------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or "\\" in key:
            raise ValueError(f"invalid store key {key!r}")
        if any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid store key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, path: str) -> str:
        return path[len(self.prefix) + 1 :] if self.prefix else path

    def ref(self, key: str) -> str:
        """``s3://<bucket>/<prefix>/<key>``."""
        return f"s3://{self.bucket}/{self._path(key)}"

    # -- values ------------------------------------------------------------------------
    async def put(self, key: str, data: bytes) -> None:
        """Write one object (multipart above :data:`MULTIPART_CHUNK`); atomic in S3."""
        if len(data) > self.max_value_bytes:
            raise TooLarge(key, len(data), self.max_value_bytes)
        import obstore

        path = self._path(key)
        try:
            await asyncio.to_thread(obstore.put, self._os, path, data,
                                    use_multipart=len(data) > MULTIPART_CHUNK,
                                    chunk_size=MULTIPART_CHUNK, max_concurrency=4)
        except Exception as e:
            raise self._error(e, "write", key) from None

    async def get(self, key: str) -> bytes:
        """Read one object; :class:`NotFound` when missing."""
        import obstore

        path = self._path(key)
        try:
            return await asyncio.to_thread(lambda: obstore.get(self._os, path).bytes().to_bytes())
        except Exception as e:
            raise self._error(e, "read", key) from None

    async def delete(self, key: str) -> None:
        """Delete one object (missing is fine)."""
        import obstore

        path = self._path(key)
        try:
            await asyncio.to_thread(obstore.delete, self._os, path)
        except Exception as e:
            err = self._error(e, "delete", key)
            if not isinstance(err, NotFound):
                raise err from None

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as in every store), sorted."""
        import obstore

        directory = prefix.rpartition("/")[0]
        where = self._path(directory) if directory else (self.prefix or None)
        try:
            listed = await asyncio.to_thread(lambda: obstore.list(self._os, prefix=where).collect())
        except Exception as e:
            raise self._error(e, "list", prefix) from None
        keys = (self._key(meta["path"]) for meta in listed)
        return sorted(k for k in keys if k.startswith(prefix))

    # -- the trace ---------------------------------------------------------------------
    def _chunk_key(self, writer_id: str, seq: int) -> str:
        return f"{TRACE}{writer_id}/{seq:0{_SEQ_DIGITS}d}.jsonl"

    async def append_trace(self, writer_id: str, events: builtins.list[dict[str, Any]]) -> None:
        """Write ``events`` as the writer's next chunk object ``trace/<writer>/<seq>.jsonl``."""
        if not events:
            return
        _check_writer(writer_id)
        lock = self._trace_locks.setdefault(writer_id, asyncio.Lock())
        async with lock:
            seq = self._trace_seq.get(writer_id)
            if seq is None:  # continue after whatever an earlier process of this writer left
                existing = await self.list(f"{TRACE}{writer_id}/")
                seq = max((_seq_of(k) for k in existing), default=0)
            seq += 1
            await self.put(self._chunk_key(writer_id, seq), encode_events(events))
            self._trace_seq[writer_id] = seq

    async def read_trace(self) -> builtins.list[dict[str, Any]]:
        """Every writer's chunks, concatenated in seq order, merged by ``ts``."""
        chunks: dict[str, builtins.list[str]] = {}
        for key in await self.list(TRACE):
            writer, _, name = key[len(TRACE) :].rpartition("/")
            if writer and name.endswith(".jsonl"):
                chunks.setdefault(writer, []).append(key)
        gate = asyncio.Semaphore(_READ_CONCURRENCY)

        async def fetch(key: str) -> bytes:
            async with gate:
                data = await self.get(key)
            return data if data.endswith(b"\n") else data + b"\n"

        records: dict[str, builtins.list[dict[str, Any]]] = {}
        for writer, keys in chunks.items():
            parts = await asyncio.gather(*(fetch(k) for k in sorted(keys, key=_seq_of)))
            records[writer] = parse_events(b"".join(parts))
        return merge_trace(records)

    # -- errors ------------------------------------------------------------------------
    def _error(self, exc: Exception, op: str, key: str) -> StoreError:
        """A :class:`StoreError` a user can act on, from whatever obstore raised."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        text = str(exc)
        where = self.endpoint or "AWS S3"
        if "NoSuchBucket" in text:
            return StoreError(f"bucket {self.bucket} does not exist at {where}")
        if (isinstance(exc, PermissionDeniedError | UnauthenticatedError)
                or re.search(r"\b403\b|AccessDenied|SignatureDoesNotMatch|InvalidAccessKeyId",
                             text)):
            return StoreError(f"access denied for bucket {self.bucket} (check credentials: "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the "
                              "credentialsSecret)")
        if isinstance(exc, FileNotFoundError):
            return NotFound(key)
        if _UNREACHABLE.search(text):
            return StoreError(f"cannot reach the object store at {where} "
                              f"({op} {self._location(key)}): {_connection_reason(text)}")
        return StoreError(f"cannot {op} {self._location(key)}: {_first_line(text)}")

    def _location(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for messages (no key validation: never raises)."""
        path = "/".join(p for p in (self.prefix, key.strip("/")) if p)
        return f"s3://{self.bucket}/{path}"


def _check_writer(writer_id: str) -> None:
    trace_key(writer_id)  # raises ValueError for unsafe writer ids


def _seq_of(key: str) -> int:
    name = key.rpartition("/")[2].removesuffix(".jsonl")
    return int(name) if name.isdigit() else 0


def _first_line(text: str) -> str:
    """obstore messages carry a Rust debug dump after the first lines; keep the gist."""
    head = text.split("\n\nDebug source:", 1)[0]
    head = re.sub(r"<\?xml.*", "", head, flags=re.S).strip()
    return head.splitlines()[0][:300] if head else "unknown error"


def _connection_reason(text: str) -> str:
    if "timed out" in text:
        return "the connection timed out"
    if "dns error" in text:
        return "the host name does not resolve"
    return "connection refused or reset (is the endpoint right and the server running?)"
