"""ConfigMapStore against an in-memory fake of the API: names, labels, owner, sizes,
trace parts, listing by prefix."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from stagecoach.store import ConfigMapStore, Conflict, NotFound, Store, TooLarge
from stagecoach.store.configmap import SIZE_BUDGET, configmap_name, label_value

from tests.unit.mergepatch import merge_data


class FakeClient:
    """ConfigMaps in a dict, with resourceVersion conflicts and label selectors."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 0
        self.calls: list[str] = []

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get")
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise Conflict("exists")
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        return obj

    async def replace_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("replace")
        key = (namespace, body["metadata"]["name"])
        old = self.objects[key]
        if body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        return obj

    async def patch_configmap(self, namespace: str, name: str,
                              patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of ``data``/``binaryData`` (what the store sends)."""
        self.calls.append("patch")
        key = (namespace, name)
        old = self.objects.get(key)
        if old is None:
            return None
        obj = merge_data(old, patch)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append("list")
        want = dict(part.split("=", 1) for part in selector.split(","))
        return [copy.deepcopy(o) for (ns, _), o in self.objects.items()
                if ns == namespace and all(o["metadata"]["labels"].get(k) == v
                                           for k, v in want.items())]


def make(**kw: Any) -> tuple[ConfigMapStore, FakeClient]:
    client = FakeClient()
    return ConfigMapStore(client, "ns", "report", "uid-1", **kw), client


def test_names_are_valid_and_shortened() -> None:
    assert configmap_name("report-research-1") == "report-research-1"
    long = configmap_name("x" * 300)
    assert len(long) <= 253 and long.startswith("xxx")
    assert configmap_name("Bad_Name") != configmap_name("bad-name")
    assert len(label_value("p" * 100)) <= 63
    store, _ = make()
    assert store.name_for("outputs/research/1.json") == "report-research-1"
    assert store.name_for("outputs/scrape/2-3.json") == "report-scrape-2-3"
    assert store.name_for("trace/runner-a-1-1.jsonl") == "report-trace-runner-a-1-1"
    assert store.name_for("replay/replay/runner-a-1-1.json") == "report-replay-replay-runner-a-1-1"
    assert store.ref("outputs/research/1.json") == "configmap:report-research-1"


async def test_put_get_labels_owner_and_overwrite() -> None:
    store, client = make()
    assert isinstance(store, Store)
    await store.put("outputs/research/1.json", b'{"v":1}')
    await store.put("outputs/research/1.json", b'{"v":2}')
    assert await store.get("outputs/research/1.json") == b'{"v":2}'
    cm = client.objects[("ns", "report-research-1")]
    labels = cm["metadata"]["labels"]
    assert labels["stagecoach.dev/pipeline"] == "report"
    assert labels["stagecoach.dev/stage"] == "research"
    assert labels["stagecoach.dev/iteration"] == "1"
    assert labels["app.kubernetes.io/managed-by"] == "stagecoach"
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("AgentPipeline", "report", "uid-1")
    with pytest.raises(NotFound):
        await store.get("outputs/research/2.json")


async def test_binary_values_round_trip() -> None:
    store, _ = make()
    await store.put("k/blob", b"\xff\x00\xfe")
    assert await store.get("k/blob") == b"\xff\x00\xfe"


async def test_too_large_reports_the_size() -> None:
    store, client = make()
    with pytest.raises(TooLarge) as err:
        await store.put("outputs/big/1.json", b"x" * SIZE_BUDGET)
    assert err.value.size > SIZE_BUDGET and err.value.limit == SIZE_BUDGET
    assert not client.objects
    await store.put("outputs/ok/1.json", b"x" * (SIZE_BUDGET - 2000))


async def test_list_by_prefix_uses_the_kind_label() -> None:
    store, _client = make()
    await store.put("outputs/a/1.json", b"1")
    await store.put("outputs/b/1-0.json", b"2")
    await store.put("replay/replay/w1.json", b"{}")
    assert await store.list("outputs/") == ["outputs/a/1.json", "outputs/b/1-0.json"]
    assert await store.list("replay/replay/") == ["replay/replay/w1.json"]
    assert len(await store.list()) == 3


async def test_trace_appends_and_rolls_over_to_parts() -> None:
    store, client = make(size_budget=4000)
    events = [{"ts": f"2026-01-01T00:00:{i:02d}.000Z", "type": "X", "n": i, "pad": "p" * 300}
              for i in range(30)]
    for e in events:
        await store.append_trace("operator", [e])
    await store.append_trace("runner-a-1-1", [{"ts": "2026-01-01T00:00:05.500Z", "type": "Y"}])
    names = sorted(n for _, n in client.objects)
    assert "report-trace-operator" in names and "report-trace-operator-p1" in names
    merged = await store.read_trace()
    assert [e.get("n") for e in merged if e["type"] == "X"] == list(range(30))
    assert merged[6]["type"] == "Y"
    for obj in client.objects.values():
        assert len(json.dumps(obj)) <= 4000 + 200


async def test_a_second_writer_instance_continues_the_parts() -> None:
    store, client = make(size_budget=3000)
    for i in range(20):
        await store.append_trace("operator", [{"ts": f"t{i:02d}", "pad": "p" * 300}])
    fresh = ConfigMapStore(client, "ns", "report", "uid-1", size_budget=3000)
    await fresh.append_trace("operator", [{"ts": "t99"}])
    assert [e["ts"] for e in await fresh.read_trace()][-1] == "t99"
    assert len(await fresh.read_trace()) == 21


async def test_prepared_objects_are_updated_in_place_never_created() -> None:
    """A stage pod's store (prepared=True) only updates what the operator prepared for
    its Job, keeping labels, annotations and owners exactly (the admission policy
    rejects any other write)."""
    from stagecoach.store import WRITER_LABEL, StoreError

    client = FakeClient()
    operator = ConfigMapStore(client, "ns", "p", "uid-1")
    pod = ConfigMapStore(client, "ns", "p", "uid-1", prepared=True)
    with pytest.raises(StoreError, match="not prepared"):
        await pod.put("outputs/a/1.json", b"{}")
    with pytest.raises(StoreError, match="not prepared"):
        await pod.append_trace("runner-a-1-1", [{"ts": "t", "type": "X"}])
    await operator.prepare(["outputs/a/1.json", "trace/runner-a-1-1.jsonl"], "p-a-1-1")
    before = copy.deepcopy(client.objects[("ns", "p-a-1")]["metadata"])
    assert before["labels"][WRITER_LABEL] == "p-a-1-1"
    client.calls.clear()
    await pod.put("outputs/a/1.json", b'{"x": 1}')
    await pod.append_trace("runner-a-1-1", [{"ts": "t1", "type": "InputSnapshot"}])
    await pod.append_trace("runner-a-1-1", [{"ts": "t2", "type": "OutputSnapshot"}])
    assert client.calls == ["patch"] * 3  # one request per write, never a read first
    after = client.objects[("ns", "p-a-1")]["metadata"]
    for field in ("labels", "annotations", "ownerReferences"):
        assert after[field] == before[field]
    assert await operator.get("outputs/a/1.json") == b'{"x": 1}'
    assert [e["type"] for e in await operator.read_trace()] == ["InputSnapshot",
                                                                "OutputSnapshot"]
    # The next attempt's Job takes the object over; its value stays until overwritten.
    await operator.prepare(["outputs/a/1.json"], "p-a-1-2")
    assert client.objects[("ns", "p-a-1")]["metadata"]["labels"][WRITER_LABEL] == "p-a-1-2"
    assert await operator.get("outputs/a/1.json") == b'{"x": 1}'


async def test_the_processes_of_one_pod_write_one_trace_record_without_reading() -> None:
    """A run stage's ``prepare`` and ``collect`` are two processes writing the same
    prepared trace record: each patches its own data key, so neither reads first nor
    overwrites the other; readers merge them, and a torn line ends only its own."""
    client = FakeClient()
    operator = ConfigMapStore(client, "ns", "p", "uid-1")
    await operator.prepare(["trace/runner-a-1-1.jsonl"], "p-a-1-1")
    first = ConfigMapStore(client, "ns", "p", "uid-1", prepared=True)
    second = ConfigMapStore(client, "ns", "p", "uid-1", prepared=True)
    client.calls.clear()
    await first.append_trace("runner-a-1-1", [{"ts": "t1", "type": "InputSnapshot"}])
    await second.append_trace("runner-a-1-1", [{"ts": "t2", "type": "OutputSnapshot"}])
    await first.append_trace("runner-a-1-1", [{"ts": "t3", "type": "Late"}])
    assert client.calls == ["patch"] * 3
    record = client.objects[("ns", "p-trace-runner-a-1-1")]
    assert len(record["data"]) == 3  # the prepared key (empty) and one per process
    assert [e["type"] for e in await operator.read_trace()] == [
        "InputSnapshot", "OutputSnapshot", "Late"]
    own = next(k for k, v in record["data"].items() if "Late" in v)
    record["data"][own] += '{"ts": "t4", "ty'  # a process killed mid-write
    assert [e["type"] for e in await operator.read_trace()] == [
        "InputSnapshot", "OutputSnapshot", "Late"]


async def test_a_prepared_writer_past_its_share_drops_events_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    operator = ConfigMapStore(client, "ns", "p", "uid-1")
    await operator.prepare(["trace/runner-a-1-1.jsonl"], "p-a-1-1")
    pod = ConfigMapStore(client, "ns", "p", "uid-1", prepared=True, size_budget=4000)
    await pod.append_trace("runner-a-1-1", [{"ts": "t1", "type": "A", "data": "x" * 500}])
    await pod.append_trace("runner-a-1-1", [{"ts": "t2", "type": "B", "data": "x" * 900}])
    assert [e["type"] for e in await operator.read_trace()] == ["A"]
    assert "is full" in caplog.text


async def test_objects_of_an_earlier_pipeline_with_the_same_name_are_not_read() -> None:
    client = FakeClient()
    old = ConfigMapStore(client, "ns", "p", "uid-old")
    await old.put("outputs/a/1.json", b"old")
    await old.append_trace("operator", [{"ts": "t", "type": "PipelineStarted"}])
    new = ConfigMapStore(client, "ns", "p", "uid-new")
    with pytest.raises(NotFound):
        await new.get("outputs/a/1.json")
    assert await new.list("outputs/") == [] and await new.read_trace() == []
    await new.prepare(["outputs/a/1.json"], "p-a-1-1")  # taken over, emptied
    cm = client.objects[("ns", "p-a-1")]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-new"
    assert await new.get("outputs/a/1.json") == b""


async def test_a_trace_record_of_an_earlier_pipeline_is_taken_over_empty() -> None:
    client = FakeClient()
    old = ConfigMapStore(client, "ns", "p", "uid-old")
    await old.append_trace("operator", [{"ts": "1", "type": "PipelineStarted"}])
    await old.put("outputs/a/1.json", b"old")
    new = ConfigMapStore(client, "ns", "p", "uid-new")
    await new.append_trace("operator", [{"ts": "2", "type": "PipelineStarted"}])
    await new.put("outputs/a/1.json", b"new")
    assert [e["ts"] for e in await new.read_trace()] == ["2"]
    assert await new.get("outputs/a/1.json") == b"new"
