"""S3Store against a real SeaweedFS: round trips, a 50 MiB output, trace chunks, spilling,
and the errors a user sees for wrong credentials, a missing bucket, no server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stagecoach.store import (
    LocalStore,
    NotFound,
    S3Store,
    SpillStore,
    StoreError,
    encode_output,
    output_key,
)

from tests.fixtures.seaweed import SeaweedServer

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
TIMINGS: dict[str, float] = {}


def s3(server: SeaweedServer, bucket: str, **kw: object) -> S3Store:
    kw.setdefault("environ", server.env)
    return S3Store(bucket, prefix="stagecoach/local/demo/u1", endpoint=server.endpoint,
                   **kw)  # type: ignore[arg-type]


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


async def test_put_get_list_round_trip(s3_server: SeaweedServer, bucket: str) -> None:
    store = s3(s3_server, bucket)
    data = encode_output({"sources": ["a", "é"]}, "json", stage="research", iteration=1)
    await store.put(output_key("research", 1), data)
    await store.put(output_key("scrape", 1, 0), b"")
    await store.put(output_key("scrape", 1, 1), b"1")
    assert await store.get(output_key("research", 1)) == data
    assert await store.get(output_key("scrape", 1, 0)) == b""
    assert await store.list("outputs/scr") == ["outputs/scrape/1-0.json",
                                               "outputs/scrape/1-1.json"]
    assert await store.list() == ["outputs/research/1.json", "outputs/scrape/1-0.json",
                                  "outputs/scrape/1-1.json"]
    assert store.ref("outputs/research/1.json") == (
        f"s3://{bucket}/stagecoach/local/demo/u1/outputs/research/1.json")
    with pytest.raises(NotFound):
        await store.get(output_key("missing", 1))


async def test_trace_round_trip(s3_server: SeaweedServer, bucket: str) -> None:
    store = s3(s3_server, bucket)
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:00.000Z", "type": "A"}])
    await store.append_trace("runner-s-1-1", [{"ts": "2026-01-01T00:00:00.500Z", "type": "B"}])
    await store.append_trace("executor", [{"ts": "2026-01-01T00:00:01.000Z", "type": "C"}])
    reader = s3(s3_server, bucket)  # another process reading
    assert [e["type"] for e in await reader.read_trace()] == ["A", "B", "C"]


async def test_a_50_mib_output_round_trips(s3_server: SeaweedServer, bucket: str) -> None:
    store = s3(s3_server, bucket)
    data = os.urandom(50 * MiB)
    base = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    started = time.perf_counter()
    await store.put("outputs/big/1.json", data)
    TIMINGS["put_50MiB_s"] = time.perf_counter() - started
    started = time.perf_counter()
    back = await store.get("outputs/big/1.json")
    TIMINGS["get_50MiB_s"] = time.perf_counter() - started
    peak = _vm("VmHWM") - base
    TIMINGS["peak_extra_MiB"] = peak / MiB
    assert back == data
    # the input and one copy of the result, plus part buffers: nowhere near 4x
    assert peak < 160 * MiB, f"peak RSS grew by {peak / MiB:.0f} MiB"
    print(f"\n50 MiB: {TIMINGS}")


async def test_over_the_limit_is_too_large(s3_server: SeaweedServer, bucket: str) -> None:
    store = s3(s3_server, bucket, max_value_bytes=MiB)
    with pytest.raises(StoreError, match="exceed the store's limit"):
        await store.put("outputs/x/1.json", b"x" * (MiB + 1))


async def test_wrong_credentials_are_named(s3_server: SeaweedServer, bucket: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": "wrong"}
    store = s3(s3_server, bucket, environ=env)
    for call in (store.put("k", b"1"), store.get("k"), store.list(),
                 store.append_trace("w", [{"ts": "1"}])):
        with pytest.raises(StoreError) as info:
            await call
        assert str(info.value) .startswith(f"access denied for bucket {bucket} (check credentials")
        assert info.value.__cause__ is None and "Debug" not in str(info.value)


async def test_a_missing_bucket_is_named(s3_server: SeaweedServer) -> None:
    store = s3(s3_server, "no-such-bucket")
    for call in (store.put("k", b"1"), store.put("big", b"1" * (9 * MiB)), store.get("k"),
                 store.list(), store.read_trace()):
        with pytest.raises(StoreError) as info:
            await call
        assert str(info.value) == (
            f"bucket no-such-bucket does not exist at {s3_server.endpoint}")


async def test_an_unreachable_endpoint_is_named(s3_server: SeaweedServer) -> None:
    store = S3Store("b", endpoint="http://127.0.0.1:9", environ=s3_server.env, max_retries=0)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await store.get("k")
    assert str(info.value).startswith("cannot reach the object store at http://127.0.0.1:9")
    assert "Debug" not in str(info.value)
    assert time.monotonic() - started < 30


async def test_spill_store_over_seaweed(s3_server: SeaweedServer, bucket: str,
                                        tmp_path: Path) -> None:
    overflow = s3(s3_server, bucket)
    store = SpillStore(LocalStore(tmp_path), overflow, threshold=64 * 1024)
    small, large = b"s" * 100, os.urandom(2 * MiB)
    await store.put("outputs/a/1.json", small)
    await store.put("outputs/b/1.json", large)
    assert await overflow.list() == ["outputs/b/1.json"]
    assert (tmp_path / "outputs/b/1.json").stat().st_size < 200
    reader = SpillStore(LocalStore(tmp_path), s3(s3_server, bucket), threshold=64 * 1024)
    assert await reader.get("outputs/a/1.json") == small
    assert await reader.get("outputs/b/1.json") == large
    assert store.ref("outputs/b/1.json").startswith(f"s3://{bucket}/")


EXIT_SCRIPT = """
import asyncio, sys
from stagecoach.store import S3Store, StoreError
async def main():
    store = S3Store(sys.argv[1], endpoint=sys.argv[2], prefix="exit")
    await store.put("k", b"x" * 100)
    await store.get("k")
    await store.list()
    for bad in (S3Store(sys.argv[1], endpoint=sys.argv[2], secret_access_key="wrong"),
                S3Store(sys.argv[1], endpoint="http://127.0.0.1:9", max_retries=0)):
        try:
            await bad.get("k")
        except StoreError:
            pass
asyncio.run(main())
"""


def test_processes_using_the_store_exit_cleanly(s3_server: SeaweedServer, bucket: str) -> None:
    """obstore's async API aborted ~1 exit in 5 (SIGABRT); the store must never do that."""
    env = {**os.environ, **s3_server.env}
    codes = [subprocess.run([sys.executable, "-c", EXIT_SCRIPT, bucket, s3_server.endpoint],
                            env=env, capture_output=True, timeout=60, check=False).returncode
             for _ in range(10)]
    assert codes == [0] * 10
