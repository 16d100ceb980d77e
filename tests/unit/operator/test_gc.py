"""Garbage and memory (DESIGN §10): an attempt's pod goes once its result is saved, and
a finished run leaves nothing in the operator's memory."""

from __future__ import annotations

from .test_reconciler import NS, agent_pipeline, setup, succeed


async def test_pods_go_once_their_result_is_saved_and_finished_runs_leave_memory() -> None:
    kube, rec = setup(agent_pipeline())
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "hello")
    assert (NS, "p-a-1-1-pod") in kube.pods
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1-pod") not in kube.pods  # its result is in the saved state
    assert (NS, "p-a-1-1") in kube.jobs  # the Job stays (history) until the pipeline goes
    await succeed(kube, "p-b-1-1", "b", "done")
    await rec.reconcile(NS, "p")
    assert kube.pipelines[(NS, "p")]["status"]["phase"] == "Succeeded"
    assert kube.pods == {}
    assert rec.runs == {} and rec.last_status == {}
    await rec.reconcile(NS, "p")  # a later event: nothing to load, nothing written
    assert kube.pipelines[(NS, "p")]["status"]["phase"] == "Succeeded"


async def test_pod_gc_never_keeps_pods_but_not_in_the_operators_memory() -> None:
    kube, rec = setup(agent_pipeline())
    rec.pod_gc = "Never"
    rec.gather.watched = True
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "hello")
    rec.gather.jobs.observe("MODIFIED", kube.jobs[(NS, "p-a-1-1")])  # what the watches
    rec.gather.pod_cache.observe("ADDED", kube.pods[(NS, "p-a-1-1-pod")])  # deliver
    await rec.reconcile(NS, "p")
    stage = kube.pipelines[(NS, "p")]["status"]["stages"][0]
    assert stage["phase"] == "Succeeded"
    assert (NS, "p-a-1-1-pod") in kube.pods
    assert len(rec.gather.pod_cache) == 0  # its result is saved: nothing to keep it for


def test_expiry_counts_from_finished_at() -> None:
    from datetime import UTC, datetime

    import pytest
    from stagecoach.operator.retention import default_ttl, expires_at

    done = {"status": {"phase": "Succeeded", "finishedAt": "2026-01-01T00:00:00Z"}}
    assert expires_at(done, 60) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert expires_at({**done, "spec": {"ttlSecondsAfterFinished": 0}}, 60) == datetime(
        2026, 1, 1, tzinfo=UTC)
    assert expires_at(done, None) is None
    assert expires_at({"status": {"phase": "Invalid"}}, 60) is None
    assert default_ttl({}) is None and default_ttl({"STAGECOACH_TTL_SECONDS_AFTER_FINISHED":
                                                    "3600"}) == 3600
    with pytest.raises(ValueError, match="not a number"):
        default_ttl({"STAGECOACH_TTL_SECONDS_AFTER_FINISHED": "1h"})


async def test_a_finished_pipeline_is_deleted_after_its_ttl() -> None:
    from datetime import datetime, timedelta

    pipe = agent_pipeline()
    pipe["spec"]["ttlSecondsAfterFinished"] = 30
    kube, rec = setup(pipe)
    woken: list[datetime] = []
    rec.wake = lambda key, at: woken.append(at)
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "x")
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-b-1-1", "b", "y")
    await rec.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    finished = datetime.fromisoformat(status["finishedAt"].replace("Z", "+00:00"))
    assert (woken[-1] - finished).total_seconds() == 30
    deleted: list[str] = []

    async def delete(ns: str, name: str, uid: str) -> None:
        deleted.append(name)
        kube.pipelines.pop((ns, name))

    kube.delete_pipeline = delete  # type: ignore[attr-defined]
    rec.clock = lambda: finished + timedelta(seconds=10)
    await rec.reconcile(NS, "p")
    assert deleted == []  # not yet
    rec.clock = lambda: finished + timedelta(seconds=31)
    await rec.reconcile(NS, "p")
    assert deleted == ["p"]
