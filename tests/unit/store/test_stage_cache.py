"""Stage-cache entries in a store: TTL, expiry, damaged entries, collection, spilling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stagecoach.store import LocalStore, SpillStore
from stagecoach.store.cache import CacheEntry, StageCache, entry_key

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
KEY = "ab" * 32


def entry(key: str = KEY, ttl: timedelta = timedelta(hours=1), value: object = None,
          created: datetime = T0) -> CacheEntry:
    return CacheEntry(key, format="json", value={"a": 1} if value is None else value,
                      origin={"pipeline": "p", "uid": "u", "stage": "s", "iteration": 1,
                              "attempt": 1},
                      created_at=created, expires_at=created + ttl,
                      tokens={"input": 3, "output": 2}, cost="0.01")


async def test_an_entry_answers_within_the_ttl_and_not_after(tmp_path: Path) -> None:
    cache = StageCache(LocalStore(tmp_path))
    assert await cache.save(entry())
    hit = await cache.lookup(KEY, T0 + timedelta(minutes=30), timedelta(hours=1))
    assert hit is not None and hit.value == {"a": 1} and hit.cost == "0.01"
    assert hit.describe()["saved"] == {"tokens": {"input": 3, "output": 2}, "cost": "0.01"}
    # the consumer's own TTL counts too: a shorter one turns an old entry down
    assert await cache.lookup(KEY, T0 + timedelta(minutes=30), timedelta(minutes=10)) is None
    assert await cache.lookup(KEY, T0 + timedelta(hours=2), timedelta(days=1)) is None
    assert await cache.lookup("cd" * 32, T0, timedelta(hours=1)) is None


async def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cache = StageCache(store)
    await store.put(entry_key(KEY), b"{not json")
    assert await cache.lookup(KEY, T0, timedelta(hours=1)) is None
    await store.put(entry_key(KEY), entry(key="cd" * 32).to_json())  # another key's document
    assert await cache.lookup(KEY, T0, timedelta(hours=1)) is None


def test_keys_are_hex_only() -> None:
    with pytest.raises(ValueError):
        entry_key("../../etc/passwd")


async def test_collect_deletes_expired_entries_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cache = StageCache(store)
    await cache.save(entry("aa" * 32, ttl=timedelta(minutes=5)))
    await cache.save(entry("bb" * 32, ttl=timedelta(hours=5)))
    assert await cache.collect(T0 + timedelta(hours=1)) == 1
    assert await store.list("cache/") == [entry_key("bb" * 32)]


async def test_a_large_entry_spills_to_the_object_store(tmp_path: Path) -> None:
    primary, overflow = LocalStore(tmp_path / "cm", max_value_bytes=1000), \
        LocalStore(tmp_path / "s3")
    cache = StageCache(SpillStore(primary, overflow, threshold=500))
    big = "x" * 5000
    assert await cache.save(entry(value={"big": big}))
    assert await overflow.list("cache/") == [entry_key(KEY)]
    hit = await cache.lookup(KEY, T0, timedelta(hours=1))
    assert hit is not None and hit.value == {"big": big}
    assert await cache.collect(T0 + timedelta(days=1)) == 1
    assert await overflow.list("cache/") == [] and await primary.list("cache/") == []


async def test_the_cluster_cache_is_namespace_wide_configmaps_owned_by_no_pipeline() -> None:
    from stagecoach.store import ConfigMapStore
    from stagecoach.store.cache import CLUSTER_PREFIX
    from test_configmap_store import FakeClient  # this directory is on sys.path (no package)

    class Deleting(FakeClient):
        async def delete_configmap(self, namespace: str, name: str) -> None:
            self.calls.append("delete")
            self.objects.pop((namespace, name), None)

    client = Deleting()
    cache = StageCache(ConfigMapStore(client, "ns", CLUSTER_PREFIX))
    await cache.save(entry("aa" * 32, ttl=timedelta(minutes=5)))
    await cache.save(entry("bb" * 32, ttl=timedelta(hours=5)))
    objs = list(client.objects.values())
    assert [o["metadata"]["name"] for o in objs] == [
        f"stagecoach-cache-k-cache-{'aa' * 32}.json", f"stagecoach-cache-k-cache-{'bb' * 32}.json"]
    for o in objs:
        assert "ownerReferences" not in o["metadata"]  # outlives every pipeline
        assert o["metadata"]["labels"]["stagecoach.dev/kind"] == "cache"
        assert "stagecoach.dev/writer" not in o["metadata"]["labels"]  # no pod may update it
    await cache.save(entry("aa" * 32, ttl=timedelta(minutes=5), value={"new": 1}))  # replaced
    assert (await cache.lookup("aa" * 32, T0, timedelta(hours=1))).value == {"new": 1}  # type: ignore[union-attr]
    assert await cache.collect(T0 + timedelta(hours=1)) == 1
    assert [o["metadata"]["name"] for o in client.objects.values()] == [
        f"stagecoach-cache-k-cache-{'bb' * 32}.json"]


def test_cache_storage_follows_the_runs_storage() -> None:
    from stagecoach.api import S3Storage, Storage
    from stagecoach.operator.storage import cache_storage

    bucket = Storage(type="s3", s3=S3Storage(bucket="b", prefix="runs", endpoint="http://s3"))
    assert cache_storage("team", None, None) == (False, None)
    in_bucket, ref = cache_storage("team", bucket, None)
    assert in_bucket and ref is not None and (ref.bucket, ref.prefix) == (
        "b", "runs/team/stagecoach-cache")
    spill, ref = cache_storage("team", Storage(type="configmap"), bucket)
    assert not spill and ref is not None and ref.prefix == "runs/team/stagecoach-cache"
