"""The watch-fed caches (:mod:`stagecoach.operator.cache`) and the cached gather
(:mod:`stagecoach.operator.gather`): never older than our own write, never a lag taken
for a deletion."""

from __future__ import annotations

import asyncio
from typing import Any

from stagecoach.operator.cache import RESYNC, ObjectCache, owner_of
from stagecoach.operator.gather import Gatherer
from stagecoach.operator.jobs import pipeline_selector

from .fakekube import FakeKube


def job(name: str, rv: int, uid: str = "u1", owner: str = "p") -> dict[str, Any]:
    return {"kind": "Job", "metadata": {
        "name": name, "namespace": "ns", "uid": uid, "resourceVersion": str(rv),
        "labels": dict(p.split("=") for p in pipeline_selector(owner).split(",")),
        "ownerReferences": [{"kind": "AgentPipeline", "name": owner, "uid": "pu"}]}}


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = ObjectCache(owner=owner_of)
    cache.put(job("a", 5))
    cache.observe("MODIFIED", job("a", 4))  # a watch event older than our write
    assert cache.get("ns", "a")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]
    cache.observe("MODIFIED", job("a", 6))
    assert cache.get("ns", "a")["metadata"]["resourceVersion"] == "6"  # type: ignore[index]
    cache.put(job("a", 1, uid="u2"))  # deleted and created again: another object
    assert cache.get("ns", "a")["metadata"]["uid"] == "u2"  # type: ignore[index]


def test_a_deleted_object_is_not_brought_back_by_an_older_copy() -> None:
    cache = ObjectCache(owner=owner_of)
    cache.put(job("a", 5))
    cache.observe("DELETED", job("a", 7))
    assert cache.get("ns", "a") is None and cache.owned("ns", "p") == []
    cache.put(job("a", 6))  # a late write response
    assert cache.get("ns", "a") is None
    cache.put(job("a", 8))
    assert cache.get("ns", "a") is not None


def test_seed_drops_what_the_list_lacks_unless_it_is_newer() -> None:
    now = [0.0]
    cache = ObjectCache(owner=owner_of, clock=lambda: now[0])
    cache.put(job("gone", 3))
    cache.put(job("created-after", 12))
    assert not cache.seeded(("ns", "p"))
    cache.seed(("ns", "p"), [job("listed", 9)], "10")
    assert [j["metadata"]["name"] for j in cache.owned("ns", "p")] == [
        "created-after", "listed"]
    assert cache.seeded(("ns", "p"))
    now[0] = RESYNC + 1
    assert not cache.seeded(("ns", "p"))  # resync: list again


def pipeline_job(kube: FakeKube, name: str, finished: bool = False) -> None:
    body = job(name, int(kube._next()), uid=name)
    body["spec"] = {"template": {"metadata": {"labels": dict(body["metadata"]["labels"])}}}
    kube.jobs[("ns", name)] = body
    if finished:
        kube.finish_job("ns", name, termination="{}")


def test_watched_gather_reads_jobs_and_pods_only_when_it_must() -> None:
    async def main() -> None:
        kube = FakeKube()
        calls: list[str] = []
        for method in ("list_jobs_at", "list_pods", "get_job", "get_pipeline"):
            real = getattr(kube, method)

            async def counted(*a: Any, _real: Any = real, _m: str = method) -> Any:
                calls.append(_m)
                return await _real(*a)
            setattr(kube, method, counted)
        gather = Gatherer(kube, watched=True)  # type: ignore[arg-type]
        pipeline_job(kube, "p-a-1-1", finished=True)
        pipeline_job(kube, "p-b-1-1")
        jobs = await gather.owned_jobs(("ns", "p"), "pu")
        assert sorted(jobs) == ["p-a-1-1", "p-b-1-1"] and calls == ["list_jobs_at"]
        assert await gather.owned_jobs(("ns", "p"), "pu") == jobs and len(calls) == 1
        # First pass: pods once (a crash may have left some to collect) ...
        assert list(await gather.pods(("ns", "p"), jobs, set())) == ["p-a-1-1"]
        # ... then from the cache (the watch feeds it) ...
        assert list(await gather.pods(("ns", "p"), jobs, {"p-b-1-1"})) == ["p-a-1-1"]
        assert list(await gather.pods(("ns", "p"), jobs, {"p-a-1-1"})) == ["p-a-1-1"]
        assert calls == ["list_jobs_at", "list_pods"]
        # ... unless a Running attempt's Job finished and the cache has no pod for it.
        kube.finish_job("ns", "p-b-1-1", termination="{}")
        jobs["p-b-1-1"] = kube.jobs[("ns", "p-b-1-1")]
        assert sorted(await gather.pods(("ns", "p"), jobs, {"p-b-1-1"})) == [
            "p-a-1-1", "p-b-1-1"]
        assert calls == ["list_jobs_at", "list_pods", "list_pods"]
        gather.pod_cache.observe("DELETED", kube.pods[("ns", "p-a-1-1-pod")])
        assert list(await gather.pods(("ns", "p"), jobs, set())) == ["p-b-1-1"]
        assert gather.pipeline_of_pod(kube.pods[("ns", "p-b-1-1-pod")]) == ("ns", "p")
        # A Job the cache lacks is looked up before it counts as deleted.
        pipeline_job(kube, "p-c-1-1")
        assert (await gather.confirm("ns", "p-c-1-1", "pu")) is not None
        assert "p-c-1-1" in await gather.owned_jobs(("ns", "p"), "pu")
        kube.jobs.pop(("ns", "p-c-1-1"))
        assert await gather.confirm("ns", "p-c-1-1", "pu") is None
        # A failed pass lists again.
        gather.failed(("ns", "p"))
        await gather.owned_jobs(("ns", "p"), "pu")
        assert calls.count("list_jobs_at") == 2
        # Our own status patch's response is the cached pipeline.
        gather.wrote({"kind": "AgentPipeline", "metadata": {
            "name": "p", "namespace": "ns", "resourceVersion": "50"}})
        assert (await gather.pipeline("ns", "p")) is not None
        assert "get_pipeline" not in calls

    asyncio.run(main())


def test_a_failed_jobs_pod_cached_while_running_is_listed_again() -> None:
    """The pod watch carries only Succeeded pods: a pod listed while it ran (the first
    pass) and then Failed stays stale in the cache, so its finished Job is listed again
    (else its result read as "the runner container never finished")."""
    async def main() -> None:
        kube = FakeKube()
        gather = Gatherer(kube, watched=True)  # type: ignore[arg-type]
        pipeline_job(kube, "p-a-1-1", finished=True)
        pipeline_job(kube, "p-b-1-1")
        kube.finish_job("ns", "p-b-1-1", termination="{}")  # a pod, still running
        pod = kube.pods[("ns", "p-b-1-1-pod")]
        pod["status"] = {"phase": "Running", "containerStatuses": [
            {"name": "runner", "state": {"running": {}}}]}
        kube.jobs[("ns", "p-b-1-1")].pop("status")
        jobs = await gather.owned_jobs(("ns", "p"), "pu")
        first = await gather.pods(("ns", "p"), jobs, {"p-b-1-1"})
        assert first["p-b-1-1"][0]["status"]["phase"] == "Running"  # cached now
        kube.finish_job("ns", "p-b-1-1", termination='{"phase":"Failed"}', exit_code=5)
        kube.pods[("ns", "p-b-1-1-pod")]["status"]["phase"] = "Failed"
        jobs["p-b-1-1"] = kube.jobs[("ns", "p-b-1-1")]
        again = await gather.pods(("ns", "p"), jobs, {"p-b-1-1"})
        [final] = again["p-b-1-1"]
        assert final["status"]["phase"] == "Failed"
        assert final["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 5

    asyncio.run(main())
