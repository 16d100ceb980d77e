"""The group-commit store: writes wait in memory for ``commit()``, then reach the disk
together, outputs before trace lines; reads see pending values at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from stagecoach.local.commit import GroupCommitStore
from stagecoach.store import NotFound


async def test_writes_wait_for_the_commit_and_reads_see_them(tmp_path: Path) -> None:
    store = GroupCommitStore(tmp_path)
    await store.put("outputs/a/1.json", b'{"v": 1}')
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:00.000Z", "type": "A"}])
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:01.000Z", "type": "B"}])
    assert store.dirty
    assert not (tmp_path / "outputs" / "a" / "1.json").exists()
    assert not (tmp_path / "trace").exists()
    assert await store.get("outputs/a/1.json") == b'{"v": 1}'
    await store.commit()
    assert not store.dirty and store.commits == 1
    assert (tmp_path / "outputs" / "a" / "1.json").read_bytes() == b'{"v": 1}'
    lines = (tmp_path / "trace" / "executor.jsonl").read_text().splitlines()
    assert [line.count('"type"') for line in lines] == [1, 1]
    assert [e["type"] for e in await store.read_trace()] == ["A", "B"]
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary left
    await store.commit()
    assert store.commits == 1  # nothing to do


async def test_list_and_read_trace_include_pending_writes(tmp_path: Path) -> None:
    store = GroupCommitStore(tmp_path)
    await store.put("outputs/b/1.json", b"1")
    await store.append_trace("runner-b-1-1", [{"ts": "2026-01-01T00:00:00.000Z", "type": "X"}])
    assert await store.list("outputs/") == ["outputs/b/1.json"]
    assert [e["type"] for e in await store.read_trace()] == ["X"]


async def test_values_from_another_writer_come_from_disk(tmp_path: Path) -> None:
    (tmp_path / "outputs" / "c").mkdir(parents=True)
    (tmp_path / "outputs" / "c" / "1.json").write_bytes(b"disk")
    store = GroupCommitStore(tmp_path)
    assert await store.get("outputs/c/1.json") == b"disk"
    with pytest.raises(NotFound):
        await store.get("outputs/d/1.json")


async def test_the_cache_forgets_committed_values_first(tmp_path: Path) -> None:
    store = GroupCommitStore(tmp_path, cache_bytes=10)
    await store.put("outputs/a/1.json", b"aaaaaa")
    await store.commit()
    await store.put("outputs/b/1.json", b"bbbbbb")  # over the limit: a (committed) goes
    assert "outputs/a/1.json" not in store._cache
    assert await store.get("outputs/a/1.json") == b"aaaaaa"  # from disk
    await store.put("outputs/c/1.json", b"cccccc")  # b is pending: kept
    assert await store.get("outputs/b/1.json") == b"bbbbbb"
    await store.commit()
    assert (tmp_path / "outputs" / "b" / "1.json").read_bytes() == b"bbbbbb"


def test_commit_sync_writes_without_a_loop(tmp_path: Path) -> None:
    store = GroupCommitStore(tmp_path)
    store._pending[tmp_path / "outputs" / "e" / "1.json"] = b"e"
    store.commit_sync()
    assert (tmp_path / "outputs" / "e" / "1.json").read_bytes() == b"e"


@pytest.mark.parametrize("fsync", [True, False])
async def test_both_sync_strategies_write_everything(tmp_path: Path, fsync: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import stagecoach.local.commit as commit

    if fsync:
        monkeypatch.setattr(commit, "_syncfs", None)
    store = GroupCommitStore(tmp_path)
    for n in range(5):
        await store.put(f"outputs/s{n}/1.json", str(n).encode())
        await store.append_trace(f"runner-s{n}-1-1", [{"ts": "t", "type": "T"}])
    await store.commit()
    assert sorted(p.name for p in (tmp_path / "trace").iterdir()) == [
        f"runner-s{n}-1-1.jsonl" for n in range(5)]
    assert [(tmp_path / "outputs" / f"s{n}" / "1.json").read_text() for n in range(5)] == [
        str(n) for n in range(5)]
