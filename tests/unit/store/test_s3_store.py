"""S3Store on obstore's in-memory store: key scoping, plain-prefix listing, trace chunks,
size limit, and the messages users see for S3 failures (no network needed)."""

from __future__ import annotations

import asyncio

import pytest
from obstore.store import MemoryStore
from stagecoach.api import StoreRef
from stagecoach.api.pipeline import S3Storage
from stagecoach.store import (
    NotFound,
    S3Store,
    SpillStore,
    Store,
    StoreError,
    TooLarge,
    open_store,
    run_prefix,
    s3_store_ref,
)
from stagecoach.store.s3 import credentials_env


def memory_store(prefix: str = "p/local/demo/u1", **kw: object) -> S3Store:
    return S3Store("bucket", prefix=prefix, object_store=MemoryStore(), **kw)  # type: ignore[arg-type]


def test_run_prefix_layout() -> None:
    assert run_prefix("", None, "demo", "u1") == "local/demo/u1"
    assert run_prefix("/runs/x/", "team-a", "demo", "u1") == "runs/x/team-a/demo/u1"
    assert run_prefix("r", "ns", "demo", "a b/c") == "r/ns/demo/a-b-c"


def test_credentials_env_for_pods() -> None:
    assert credentials_env("s3-creds") == [
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "accessKeyId"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secretAccessKey"}}},
    ]


def test_s3_store_ref_scopes_one_run() -> None:
    ref = s3_store_ref(S3Storage(bucket="b", prefix="runs", endpoint="http://h:1"),
                       pipeline="demo", uid="u1")
    assert ref == StoreRef(type="s3", bucket="b", prefix="runs/local/demo/u1",
                           endpoint="http://h:1")
    store = open_store(ref, environ={})
    assert isinstance(store, S3Store)
    assert store.ref("outputs/a/1.json") == "s3://b/runs/local/demo/u1/outputs/a/1.json"


def test_open_store_wraps_overflow_in_a_spill_store(tmp_path: object) -> None:
    ref = StoreRef(type="local", path=str(tmp_path),
                   overflow=StoreRef(type="s3", bucket="b"), spill_threshold=10)
    store = open_store(ref, environ={})
    assert isinstance(store, SpillStore) and store.threshold == 10


async def test_put_get_list_with_plain_string_prefixes() -> None:
    store = memory_store()
    assert isinstance(store, Store)
    for key in ("outputs/a/1.json", "outputs/ab/1.json", "outputs/b/1-0.json"):
        await store.put(key, key.encode())
    assert await store.get("outputs/ab/1.json") == b"outputs/ab/1.json"
    assert await store.list("outputs/a") == ["outputs/a/1.json", "outputs/ab/1.json"]
    assert await store.list("outputs/a/") == ["outputs/a/1.json"]
    assert len(await store.list()) == 3
    with pytest.raises(NotFound):
        await store.get("outputs/zz/1.json")
    with pytest.raises(ValueError):
        await store.put("../x", b"")


async def test_keys_of_other_runs_are_invisible() -> None:
    backing = MemoryStore()
    one = S3Store("b", prefix="local/demo/u1", object_store=backing)
    two = S3Store("b", prefix="local/demo/u2", object_store=backing)
    await one.put("outputs/a/1.json", b"1")
    await two.put("outputs/a/1.json", b"2")
    assert await one.list() == ["outputs/a/1.json"]
    assert await two.get("outputs/a/1.json") == b"2"


async def test_size_limit() -> None:
    store = memory_store(max_value_bytes=10)
    with pytest.raises(TooLarge):
        await store.put("outputs/a/1.json", b"x" * 11)


async def test_trace_is_written_as_numbered_chunks_and_merged() -> None:
    store = memory_store()
    await store.append_trace("executor", [{"ts": "2", "type": "B"}])
    await store.append_trace("runner-x-1-1", [{"ts": "1", "type": "A"}])
    await store.append_trace("executor", [{"ts": "3", "type": "C"}, {"ts": "3", "type": "D"}])
    await store.append_trace("executor", [])
    assert await store.list("trace/") == [
        "trace/executor/0000000001.jsonl",
        "trace/executor/0000000002.jsonl",
        "trace/runner-x-1-1/0000000001.jsonl",
    ]
    assert [e["type"] for e in await store.read_trace()] == ["A", "B", "C", "D"]
    with pytest.raises(ValueError):
        await store.append_trace("../evil", [{"ts": "1"}])


async def test_a_restarted_writer_continues_after_the_last_chunk() -> None:
    backing = MemoryStore()
    first = S3Store("b", prefix="r", object_store=backing)
    await first.append_trace("operator", [{"ts": "1", "n": 1}])
    await first.append_trace("operator", [{"ts": "2", "n": 2}])
    again = S3Store("b", prefix="r", object_store=backing)  # a new process
    await again.append_trace("operator", [{"ts": "3", "n": 3}])
    assert [e["n"] for e in await again.read_trace()] == [1, 2, 3]


async def test_concurrent_appends_of_one_writer_never_collide() -> None:
    store = memory_store()
    await asyncio.gather(*(store.append_trace("w", [{"ts": f"{i:03d}", "i": i}])
                           for i in range(40)))
    assert sorted(e["i"] for e in await store.read_trace()) == list(range(40))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError("Object at location x not found: ... <Code>NoSuchBucket</Code>"),
         "bucket bucket does not exist at http://127.0.0.1:9"),
        (PermissionError("403 Forbidden: <Code>SignatureDoesNotMatch</Code>"),
         "access denied for bucket bucket (check credentials"),
        (RuntimeError("Generic S3 error: Error performing GET http://127.0.0.1:9/b in 1ms, "
                      "after 3 retries - HTTP error: error sending request\n\nDebug source:..."),
         "cannot reach the object store at http://127.0.0.1:9"),
        (RuntimeError("Generic S3 error: something odd\n\nDebug source:\nGeneric {...}"),
         "cannot read s3://bucket/p/local/demo/u1/k: Generic S3 error: something odd"),
    ],
)
def test_error_messages_are_actionable(exc: Exception, expected: str) -> None:
    store = S3Store("bucket", prefix="p/local/demo/u1", endpoint="http://127.0.0.1:9",
                    object_store=MemoryStore())
    err = store._error(exc, "read", "k")
    assert isinstance(err, StoreError)
    assert str(err).startswith(expected)
    assert "Debug source" not in str(err)


def test_a_missing_object_is_not_found() -> None:
    store = memory_store()
    assert isinstance(store._error(FileNotFoundError("Object at location k not found"),
                                   "read", "k"), NotFound)
