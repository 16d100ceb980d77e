"""The operator's side of the trust boundary (DESIGN §6, §10), against the in-memory
API: what a pod may write is prepared before its Job exists, Jobs and pods of an earlier
pipeline with the same name are never adopted, and a Job the API server refuses fails
its attempt at once instead of being retried forever."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from stagecoach.operator.rejections import rejected_attempt
from stagecoach.store import WRITER_LABEL

from .fakekube import FakeKube
from .test_reconciler import NS, agent_pipeline, setup


def _labels(kube: FakeKube, name: str) -> dict[str, str]:
    return dict(kube.configmaps[(NS, name)]["metadata"]["labels"])


async def test_objects_a_pod_writes_are_prepared_for_its_job() -> None:
    pipe = agent_pipeline()
    pipe["spec"]["defaults"]["retry"] = {"limit": 1, "backoff": {"initial": "1s"}}
    kube, rec = setup(pipe)
    await rec.reconcile(NS, "p")
    assert _labels(kube, "p-a-1")[WRITER_LABEL] == "p-a-1-1"
    assert _labels(kube, "p-trace-runner-a-1-1")[WRITER_LABEL] == "p-a-1-1"
    # The state is the operator's alone: no writer label, so no pod may update it.
    assert WRITER_LABEL not in _labels(kube, "p-state")
    # A retry hands the same output object to the next attempt's pod.
    del kube.jobs[(NS, "p-a-1-1")]
    await rec.reconcile(NS, "p")
    rec.clock = lambda: datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    await rec.reconcile(NS, "p")
    assert kube.job_creates[-1] == "p-a-1-2"
    assert _labels(kube, "p-a-1")[WRITER_LABEL] == "p-a-1-2"
    assert _labels(kube, "p-trace-runner-a-1-2")[WRITER_LABEL] == "p-a-1-2"


async def test_a_finished_job_of_an_earlier_pipeline_is_never_folded_in() -> None:
    """Delete and re-create a pipeline at once: the old run's Jobs, pods and outputs are
    still there while the garbage collector works; the new run ignores all of them."""
    from stagecoach.api import AttemptResult
    from stagecoach.store import ConfigMapStore, encode_output

    kube, rec = setup(agent_pipeline())
    old = ConfigMapStore(kube, NS, "p", "uid-old")  # type: ignore[arg-type]
    await old.put("outputs/a/1.json", encode_output("the old run's answer", "text"))
    kube.jobs[(NS, "p-a-1-1")] = {
        "metadata": {"name": "p-a-1-1", "uid": "job-old",
                     "labels": {"app.kubernetes.io/managed-by": "stagecoach",
                                "stagecoach.dev/pipeline": "p"},
                     "ownerReferences": [{"kind": "AgentPipeline", "uid": "uid-old"}]},
        "spec": {"template": {"metadata": {"labels": {"stagecoach.dev/pipeline": "p"}}}}}
    result = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json",
                           tokens={"input": 50, "output": 50})
    kube.finish_job(NS, "p-a-1-1", termination=result.to_termination_message())
    rec.wake = lambda key, at: None
    await rec.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    assert status["stages"][0]["phase"] == "Running"
    assert status["tokens"] == {"input": 0, "output": 0}
    assert (NS, "p-a-1-1") not in kube.jobs  # the old Job was deleted, not adopted
    # The old run's output object became ours, empty, for our attempt's pod to write.
    cm = kube.configmaps[(NS, "p-a-1")]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-p"
    assert "old run" not in str(cm.get("data"))
    await rec.reconcile(NS, "p")
    assert kube.jobs[(NS, "p-a-1-1")]["metadata"]["ownerReferences"][0]["uid"] == "uid-p"


async def test_a_stale_job_with_our_name_is_deleted_not_adopted() -> None:
    kube, rec = setup(agent_pipeline())
    stale = {"metadata": {"name": "p-a-1-1", "uid": "job-old", "labels": {},
                          "ownerReferences": [{"kind": "AgentPipeline", "uid": "uid-old"}]},
             "spec": {}}
    kube.jobs[(NS, "p-a-1-1")] = stale
    woken: list[object] = []
    rec.wake = lambda key, at: woken.append(at)
    await rec.reconcile(NS, "p")
    assert (NS, "p-a-1-1") not in kube.jobs and woken  # deleted, retried soon
    await rec.reconcile(NS, "p")
    assert kube.jobs[(NS, "p-a-1-1")]["metadata"]["ownerReferences"][0]["uid"] == "uid-p"


async def test_a_refused_job_fails_the_attempt_with_the_api_message() -> None:
    kube, rec = setup(agent_pipeline())
    message = ('Job.batch "p-a-1-1" is invalid: spec.template.spec.containers[0].resources.'
               'limits[cpu]: Invalid value: "lots": must match the regex')
    kube.reject_jobs["p-a-1-1"] = (422, message)
    triggered: list[object] = []
    rec.trigger = lambda key: triggered.append(key)
    await rec.reconcile(NS, "p")
    assert triggered == [(NS, "p")]  # the failure lands in the very next pass
    await rec.reconcile(NS, "p")
    status = kube.pipelines[(NS, "p")]["status"]
    stage = status["stages"][0]
    assert (stage["phase"], stage["reason"]) == ("Failed", "InvalidInput")
    assert "lots" in stage["message"] and "p-a-1-1" in stage["message"]
    assert status["phase"] == "Failed"
    assert kube.job_creates == ["p-a-1-1"]  # never tried again


async def test_a_quota_refusal_is_retried_per_policy() -> None:
    pipe = agent_pipeline()
    pipe["spec"]["defaults"]["retry"] = {"limit": 2, "backoff": {"initial": "1s"}}
    kube, rec = setup(pipe)
    kube.reject_jobs["p-a-1-1"] = (403, 'jobs "p-a-1-1" is forbidden: exceeded quota: q, '
                                        "requested: count/jobs.batch=1, limited: 5")
    rec.trigger = lambda key: None
    await rec.reconcile(NS, "p")
    await rec.reconcile(NS, "p")
    stage = kube.pipelines[(NS, "p")]["status"]["stages"][0]
    assert (stage["phase"], stage["reason"]) == ("Waiting", "Error")
    assert "exceeded quota" in stage["message"]


@pytest.mark.parametrize(("status", "message", "error_class"), [
    (422, "spec.template.spec.containers[0].resources.limits[cpu]: Invalid value", "InvalidInput"),
    (400, "bad request", "InvalidInput"),
    (403, "admission webhook denied the request", "InvalidInput"),
    (403, 'pods "x" is forbidden: violates PodSecurity "restricted:latest"', "InvalidInput"),
    (403, "exceeded quota: compute, requested: limits.cpu=2", "Error"),
    (413, "Request entity too large: limit is 3145728", "InvalidInput"),
    (500, "etcdserver: request is too large", "InvalidInput"),
    (500, "Internal error occurred", None),
    (429, "too many requests, please try again later", None),
    (503, "service unavailable", None),
])
def test_rejections(status: int, message: str, error_class: str | None) -> None:
    result = rejected_attempt(status, message, "p-a-1-1", 2048)
    if error_class is None:
        assert result is None
        return
    assert result is not None and result.error_class == error_class
    assert message in (result.message or "") and "p-a-1-1" in (result.message or "")
    if "large" in message:
        assert "2048 bytes" in (result.message or "")


async def test_a_second_operator_whose_state_write_loses_traces_nothing() -> None:
    """Two operators without leader election: the one planning from a stale state loses
    the state write on resourceVersion, and its plan never reaches the trace (the
    events travel in the state's outbox)."""
    from stagecoach.operator.reconciler import Reconciler
    from stagecoach.operator.slots import ProviderSlots
    from stagecoach.store import Conflict

    from .test_control import trace
    from .test_reconciler import succeed

    kube, a = setup(agent_pipeline())
    b = Reconciler(kube, ProviderSlots(), clock=a.clock)  # type: ignore[arg-type]
    await a.reconcile(NS, "p")
    await b.reconcile(NS, "p")  # b loads the same state (and holds it in memory)
    await succeed(kube, "p-a-1-1", "a", "hello")
    await a.reconcile(NS, "p")  # a folds the result in first
    before = trace(kube)
    with pytest.raises(Conflict):
        await b.reconcile(NS, "p")  # b plans the same step from its stale copy: loses
    assert trace(kube) == before
    await b.reconcile(NS, "p")  # the retry reloads the record and agrees with a
    assert [e["type"] for e in trace(kube)].count("StageSucceeded") == 1
