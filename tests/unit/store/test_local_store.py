"""LocalStore: atomic puts, typed NotFound, listing, per-writer trace records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from stagecoach.api import StoreRef
from stagecoach.store import (
    LocalStore,
    NotFound,
    Store,
    TooLarge,
    decode_output,
    encode_output,
    merge_trace,
    open_store,
    output_key,
    parse_output_key,
    trace_key,
)


def test_output_key_layout() -> None:
    assert output_key("research", 1) == "outputs/research/1.json"
    assert output_key("scrape", 2, 0) == "outputs/scrape/2-0.json"
    assert parse_output_key("outputs/scrape/2-0.json") == ("scrape", 2, 0)
    assert parse_output_key("outputs/research/1.json") == ("research", 1, None)
    with pytest.raises(ValueError):
        output_key("x", 0)
    with pytest.raises(ValueError):
        trace_key("../evil")


def test_output_encoding_round_trip() -> None:
    data = encode_output({"a": [1, "é"]}, "json", stage="s", iteration=1, index=None)
    doc = json.loads(data)
    assert doc == {"format": "json", "value": {"a": [1, "é"]}, "stage": "s", "iteration": 1}
    assert decode_output(data).value == {"a": [1, "é"]}
    assert decode_output(encode_output("42", "text")).format == "text"
    with pytest.raises(TypeError):
        encode_output(42, "text")
    with pytest.raises(ValueError):
        decode_output(b'{"nope": 1}')


async def test_put_get_list(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert isinstance(store, Store)
    await store.put("outputs/a/1.json", b"one")
    await store.put("outputs/a/1.json", b"two")
    await store.put("outputs/b/1-0.json", b"x")
    assert await store.get("outputs/a/1.json") == b"two"
    assert await store.list("outputs/") == ["outputs/a/1.json", "outputs/b/1-0.json"]
    assert await store.list("outputs/b") == ["outputs/b/1-0.json"]
    assert not [p for p in tmp_path.rglob(".*")], "no temp files left behind"
    assert store.ref("outputs/a/1.json") == str(tmp_path / "outputs" / "a" / "1.json")


async def test_missing_key_and_bad_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "never-created")
    with pytest.raises(NotFound) as err:
        await store.get("outputs/a/1.json")
    assert err.value.key == "outputs/a/1.json"
    assert isinstance(err.value, KeyError)
    assert await store.list() == []
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", ""):
        with pytest.raises(ValueError):
            await store.put(bad, b"")


async def test_too_large(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, max_value_bytes=3)
    with pytest.raises(TooLarge):
        await store.put("k", b"1234")


async def test_trace_per_writer_and_merged_by_ts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:00.000Z", "type": "A"}])
    await store.append_trace("runner-x-1-1", [{"ts": "2026-01-01T00:00:01.000Z", "type": "B"}])
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:02.000Z", "type": "C"}])
    await store.append_trace("executor", [])
    assert await store.list("trace/") == ["trace/executor.jsonl", "trace/runner-x-1-1.jsonl"]
    assert [e["type"] for e in await store.read_trace()] == ["A", "B", "C"]


async def test_concurrent_appends_keep_every_line(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    events = [{"ts": f"2026-01-01T00:00:{i % 60:02d}.000Z", "n": i} for i in range(100)]
    await asyncio.gather(*(store.append_trace("w", [e]) for e in events))
    merged = await store.read_trace()
    assert sorted(e["n"] for e in merged) == list(range(100))


async def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.append_trace("w", [{"ts": "1", "type": "ok"}])
    with (tmp_path / "trace" / "w.jsonl").open("ab") as f:
        f.write(b'{"ts": "2", "ty')
    assert [e["type"] for e in await store.read_trace()] == ["ok"]


def test_merge_is_stable_and_deterministic() -> None:
    merged = merge_trace(
        {
            "b": [{"ts": "1", "id": "b1"}, {"ts": "1", "id": "b2"}],
            "a": [{"ts": "1", "id": "a1"}, {"ts": "0", "id": "a0"}],
        }
    )
    assert [e["id"] for e in merged] == ["a0", "a1", "b1", "b2"]


def test_open_store(tmp_path: Path) -> None:
    store = open_store(StoreRef(type="local", path=str(tmp_path)))
    assert isinstance(store, LocalStore)
    with pytest.raises(ValueError):
        open_store(StoreRef(type="local"))
