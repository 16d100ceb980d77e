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


async def test_pod_gc_never_keeps_pods() -> None:
    kube, rec = setup(agent_pipeline())
    rec.pod_gc = "Never"
    await rec.reconcile(NS, "p")
    await succeed(kube, "p-a-1-1", "a", "hello")
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1-pod") in kube.pods
