"""SpillStore: small values stay in the primary, large ones go to the overflow with a
pointer left behind, reads follow pointers, and the primary's own limit also spills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from obstore.store import MemoryStore
from stagecoach.store import LocalStore, NotFound, S3Store, SpillStore, Store, StoreError
from stagecoach.store.spill import SPILL_MARKER, is_pointer


def stores(tmp_path: Path, *, primary_limit: int | None = None) -> tuple[LocalStore, S3Store]:
    return (LocalStore(tmp_path, max_value_bytes=primary_limit),
            S3Store("big", prefix="local/p/u", object_store=MemoryStore()))


async def test_small_values_stay_in_the_primary(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=100)
    assert isinstance(store, Store)
    await store.put("outputs/a/1.json", b"small")
    assert await primary.get("outputs/a/1.json") == b"small"
    assert await overflow.list() == []
    assert store.ref("outputs/a/1.json") == primary.ref("outputs/a/1.json")


async def test_large_values_spill_and_read_back(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=100)
    big = b"x" * 1000
    await store.put("outputs/a/1.json", big)
    pointer = json.loads(await primary.get("outputs/a/1.json"))
    assert pointer == {SPILL_MARKER: "s3://big/local/p/u/outputs/a/1.json",
                       "key": "outputs/a/1.json", "size": 1000}
    assert await overflow.get("outputs/a/1.json") == big
    assert await store.get("outputs/a/1.json") == big
    assert store.ref("outputs/a/1.json") == "s3://big/local/p/u/outputs/a/1.json"
    assert await store.list("outputs/") == ["outputs/a/1.json"]
    # a fresh reader (another process) follows the pointer too
    assert await SpillStore(primary, overflow, threshold=100).get("outputs/a/1.json") == big


async def test_overwriting_a_spilled_value_with_a_small_one(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=10)
    await store.put("k", b"y" * 50)
    await store.put("k", b"small")
    assert await store.get("k") == b"small"
    assert store.ref("k") == primary.ref("k")


async def test_the_primarys_own_limit_spills_too(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path, primary_limit=100)
    store = SpillStore(primary, overflow, threshold=1000)
    await store.put("k", b"z" * 500)
    assert is_pointer(await primary.get("k"))
    assert await store.get("k") == b"z" * 500


async def test_a_value_that_looks_like_a_pointer_is_spilled(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=1000)
    tricky = b'{"' + SPILL_MARKER.encode() + b'":"not really"}'
    await store.put("k", tricky)
    assert await store.get("k") == tricky


async def test_missing_keys_and_lost_overflow_objects(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=10)
    with pytest.raises(NotFound):
        await store.get("nope")
    await store.put("k", b"q" * 50)
    await overflow.put("k", b"short")  # someone overwrote the object behind our back
    with pytest.raises(StoreError, match="the pointer says 50"):
        await store.get("k")


async def test_the_trace_stays_in_the_primary(tmp_path: Path) -> None:
    primary, overflow = stores(tmp_path)
    store = SpillStore(primary, overflow, threshold=10)
    await store.append_trace("w", [{"ts": "1", "type": "A", "data": "x" * 100}])
    assert [e["type"] for e in await store.read_trace()] == ["A"]
    assert await overflow.list() == []
