"""The cluster verbs' own decisions (:mod:`stagecoach.cli.kubecontrol`), on pipeline
bodies as the API server returns them: which patch a verb sends, what it refuses before
writing, which StageApproval ``approve`` creates, how the operator's answer is reported,
and what ``retry`` creates under which name. The API calls themselves run against the
real control plane in tests/e2e/test_control_cli.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from stagecoach.cli import kubecontrol as kc
from stagecoach.engine.control import ControlError


def pipeline(name: str = "p", *, phase: str | None = None, reason: str | None = None,
             stages: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
        "metadata": {"name": name, "namespace": "ns", "uid": "u1", "labels": {"team": "a"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"stages": [
            {"name": "draft", "run": {"image": "x", "command": ["true"]}},
            {"name": "sign-off", "dependsOn": ["draft"], "approval": {
                "message": "ok?", "inputs": [{"name": "channel", "enum": ["blog", "news"],
                                              "default": "blog"},
                                             {"name": "ticket", "required": True}]}},
        ], **spec}}
    if phase is not None:
        body["status"] = {"phase": phase, "stages": stages or []}
        if reason:
            body["status"]["reason"] = reason
    return body


WAITING = [{"name": "draft", "phase": "Succeeded", "iteration": 2},
           {"name": "sign-off", "phase": "Waiting", "reason": "AwaitingApproval",
            "iteration": 2, "message": "ok?"}]


# -- suspend / resume / stop / terminate -------------------------------------------------

@pytest.mark.parametrize(("verb", "spec", "patch", "line"), [
    ("suspend", {}, {"suspend": True}, "agentpipeline/p suspended"),
    ("resume", {"suspend": True}, {"suspend": False}, "agentpipeline/p resumed"),
    ("resume", {"suspend": True, "shutdown": "Stop"}, {"suspend": False},
     "agentpipeline/p resumed"),
    ("stop", {}, {"shutdown": "Stop"}, "agentpipeline/p stopping: nothing new starts; "
     "running attempts and finally finish"),
    ("stop", {"suspend": True}, {"shutdown": "Stop"}, "agentpipeline/p stopping: nothing new "
     "starts; running attempts and finally finish"),
    ("terminate", {}, {"shutdown": "Terminate"}, "agentpipeline/p terminating: running "
     "attempts are stopped; finally is skipped"),
    ("terminate", {"shutdown": "Stop"}, {"shutdown": "Terminate"}, "agentpipeline/p "
     "terminating: running attempts are stopped; finally is skipped"),
    # The CRD refuses it, with its own words: the CLI does not second-guess the API.
    ("stop", {"shutdown": "Terminate"}, {"shutdown": "Stop"}, "agentpipeline/p stopping: "
     "nothing new starts; running attempts and finally finish"),
])
def test_each_verb_patches_one_field(verb: str, spec: dict[str, Any],
                                     patch: dict[str, Any], line: str) -> None:
    assert kc.control_patch(verb, pipeline(phase="Running", **spec)) == ({"spec": patch}, line)


@pytest.mark.parametrize(("verb", "spec", "message"), [
    ("suspend", {"suspend": True}, "agentpipeline/p is already suspended"),
    ("suspend", {"shutdown": "Stop"}, "agentpipeline/p is stopping: suspend would change "
     "nothing"),
    ("suspend", {"shutdown": "Terminate"}, "agentpipeline/p is terminating: suspend would "
     "change nothing"),
    ("resume", {}, "agentpipeline/p is not suspended"),
    ("resume", {"suspend": False}, "agentpipeline/p is not suspended"),
    ("stop", {"shutdown": "Stop"}, "agentpipeline/p is already stopping"),
    ("terminate", {"shutdown": "Terminate"}, "agentpipeline/p is already terminating"),
    ("pause", {}, "unknown verb 'pause' (suspend, resume, stop or terminate)"),
])
def test_a_verb_that_would_change_nothing_is_refused(verb: str, spec: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ControlError) as e:
        kc.control_patch(verb, pipeline(phase="Running", **spec))
    assert str(e.value) == message


@pytest.mark.parametrize(("phase", "reason", "shown"), [
    ("Succeeded", None, "Succeeded"), ("Failed", "BudgetExceeded", "Failed, BudgetExceeded"),
    ("Cancelled", "Stopped", "Cancelled, Stopped"), ("Invalid", "Invalid", "Invalid")])
@pytest.mark.parametrize("verb", ["suspend", "resume", "stop", "terminate"])
def test_no_verb_acts_on_a_finished_pipeline(verb: str, phase: str, reason: str | None,
                                             shown: str) -> None:
    with pytest.raises(ControlError) as e:
        kc.control_patch(verb, pipeline(phase=phase, reason=reason, suspend=True))
    assert str(e.value) == f"agentpipeline/p already finished ({shown}): nothing to {verb}"


def test_a_pipeline_the_operator_has_not_seen_yet_can_be_suspended() -> None:
    assert kc.control_patch("suspend", pipeline())[0] == {"spec": {"suspend": True}}


# -- approve / reject ---------------------------------------------------------------------

def test_the_waiting_iteration_is_the_one_decided() -> None:
    body = pipeline(phase="Running", stages=WAITING)
    assert kc.approval_iteration(body, "sign-off", "Approve", {"ticket": "T-1"}) == 2
    assert kc.approval_iteration(body, "sign-off", "Reject", {}) == 2  # no inputs needed


@pytest.mark.parametrize(("body", "stage", "decision", "inputs", "message"), [
    (pipeline(phase="Succeeded", stages=WAITING), "sign-off", "Approve", {"ticket": "1"},
     "pipeline p already finished (Succeeded); stage sign-off is not waiting"),
    (pipeline(phase="Running", stages=WAITING), "publish", "Approve", {},
     "pipeline p has no stage 'publish' (approval stages: sign-off)"),
    (pipeline(phase="Running", stages=WAITING), "draft", "Approve", {},
     "stage draft is not an approval stage (approval stages: sign-off)"),
    (pipeline(phase="Running", stages=[{"name": "sign-off", "phase": "Pending"}]),
     "sign-off", "Approve", {"ticket": "1"},
     "stage sign-off is not waiting for approval (it is Pending)"),
    (pipeline(phase="Running", stages=[{"name": "sign-off", "phase": "Failed",
                                        "reason": "Rejected"}]),
     "sign-off", "Reject", {}, "stage sign-off is not waiting for approval (it is Failed, "
     "Rejected)"),
    (pipeline(), "sign-off", "Approve", {"ticket": "1"},
     "pipeline p has not started yet; stage sign-off is not waiting"),
    (pipeline(phase="Running", stages=WAITING), "sign-off", "Approve", {},
     "stage sign-off: input 'ticket' is required"),
    (pipeline(phase="Running", stages=WAITING), "sign-off", "Approve",
     {"ticket": "1", "channel": "tv", "colour": "red"},
     "stage sign-off: input 'colour' is not one of the stage's inputs (channel, ticket); "
     "input 'channel' must be one of blog, news, got 'tv'"),
])
def test_what_the_operator_would_refuse_is_refused_before_writing(
        body: dict[str, Any], stage: str, decision: str, inputs: dict[str, str],
        message: str) -> None:
    with pytest.raises(ControlError) as e:
        kc.approval_iteration(body, stage, decision, inputs)
    assert str(e.value) == message


def test_a_templated_pipeline_is_judged_by_its_status() -> None:
    body = pipeline(phase="Running", stages=WAITING)
    body["spec"] = {"templateRef": {"name": "t"}}
    assert kc.approval_iteration(body, "sign-off", "Approve", {}) == 2  # inputs: operator's
    with pytest.raises(ControlError, match=r"pipeline p has no stage 'publish'$"):
        kc.approval_iteration(body, "publish", "Approve", {})
    with pytest.raises(ControlError, match="stage draft is not waiting for approval"):
        kc.approval_iteration(body, "draft", "Approve", {})


def test_the_stage_approval_names_the_pipeline_the_stage_and_the_approver() -> None:
    body = kc.approval_body("p", "sign-off", 2, "Approve", {"ticket": "T-1"}, "ship it",
                            "alice")
    assert body == {
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "StageApproval",
        "metadata": {"generateName": "p-sign-off-", "labels": {
            "stagecoach.dev/pipeline": "p", "stagecoach.dev/stage": "sign-off",
            "stagecoach.dev/iteration": "2"}},
        "spec": {"pipeline": "p", "stage": "sign-off", "iteration": 2, "decision": "Approve",
                 "inputs": {"ticket": "T-1"}, "message": "ship it", "approver": "alice"}}
    from stagecoach.api import StageApproval

    StageApproval.model_validate({**body, "metadata": {"name": "p-sign-off-x7k2q"}})
    long = kc.approval_body("p" * 253, "s", None, "Reject", {}, None, "bob")
    assert len(long["metadata"]["labels"]["stagecoach.dev/pipeline"]) <= 63
    assert len(long["metadata"]["generateName"]) <= 248
    assert "iteration" not in long["spec"] and "message" not in long["spec"]


def test_the_operators_answer_is_what_the_user_reads() -> None:
    assert kc.approval_outcome("p-s-x", None) is None
    assert kc.approval_outcome("p-s-x", {}) is None
    assert kc.approval_outcome("p-s-x", {"phase": "Accepted", "reason": "Approved",
                                         "message": "stage s approved by alice"}) == (
        "stageapproval/p-s-x: stage s approved by alice")
    with pytest.raises(ControlError) as e:
        kc.approval_outcome("p-s-x", {"phase": "Refused", "reason": "NotWaiting",
                                      "message": "stage s is not waiting for approval"})
    assert str(e.value) == ("stageapproval/p-s-x refused (NotWaiting): stage s is not "
                            "waiting for approval")


# -- retry ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("phase", "message"), [
    (None, "agentpipeline/p is still Pending: retry it once it has finished "
           "(stagecoach stop p ends it)"),
    ("Running", "agentpipeline/p is still Running: retry it once it has finished "
                "(stagecoach stop p ends it)"),
    ("Suspended", "agentpipeline/p is still Suspended: retry it once it has finished "
                  "(stagecoach stop p ends it)"),
    ("Succeeded", "agentpipeline/p Succeeded: nothing to retry"),
])
def test_only_a_pipeline_that_ended_short_of_success_is_retried(phase: str | None,
                                                                message: str) -> None:
    with pytest.raises(ControlError) as e:
        kc.retry_refusal(pipeline(phase=phase))
    assert str(e.value) == message
    for ended in ("Failed", "Cancelled", "Invalid"):
        kc.retry_refusal(pipeline(phase=ended))


def test_the_retry_is_the_old_spec_resuming_from_it() -> None:
    old = pipeline(phase="Cancelled", suspend=True, shutdown="Terminate",
                   resumeFrom={"name": "earlier"}, params={"topic": "x"})
    new = kc.retry_body(old, "p-r1")
    assert new["metadata"] == {"name": "p-r1", "labels": {"team": "a"}}
    assert new["spec"] == {"stages": old["spec"]["stages"], "params": {"topic": "x"},
                           "resumeFrom": {"name": "p"}}
    assert "status" not in new
    gitops = pipeline(phase="Failed")
    gitops["metadata"]["labels"] = {"team": "a", "app.kubernetes.io/instance": "reports",
                                    "argocd.argoproj.io/instance": "reports",
                                    "kustomize.toolkit.fluxcd.io/name": "apps"}
    assert kc.retry_body(gitops, "p-r1")["metadata"]["labels"] == {"team": "a"}
    gitops["metadata"]["labels"] = {"app.kubernetes.io/instance": "reports"}
    assert "labels" not in kc.retry_body(gitops, "p-r1")["metadata"]
    assert old["spec"]["shutdown"] == "Terminate"  # OLD is never changed
    from stagecoach.api import AgentPipeline

    AgentPipeline.model_validate(new)


def test_retries_are_numbered_from_the_original() -> None:
    assert kc.retry_base(pipeline("p")) == "p"
    assert kc.retry_base(pipeline("p-r1", resumeFrom={"name": "p"})) == "p"
    assert kc.retry_base(pipeline("p-r12", resumeFrom={"name": "p"})) == "p"
    # Not a retry of what it resumes from: its own name counts.
    assert kc.retry_base(pipeline("p-r1", resumeFrom={"name": "q"})) == "p-r1"
    assert kc.retry_base(pipeline("cluster-r2")) == "cluster-r2"
    assert kc.retry_base(pipeline("p-rx", resumeFrom={"name": "p"})) == "p-rx"
    assert kc.retry_name("p", 1) == "p-r1" and kc.retry_name("p", 10) == "p-r10"


def test_a_retry_name_stays_a_valid_object_name() -> None:
    from stagecoach.api import name_problem

    for base in ("a" * 253, "a" * 250 + "-bc", "a" * 248 + ".b-cd"):
        name = kc.retry_name(base, 12)
        assert len(name) <= 253 and name.endswith("-r12")
        assert name_problem(name) is None, name


# -- which cluster, which namespace ------------------------------------------------------------

def _kubeconfig(path: Any, namespace: str | None) -> str:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": context}]}))
    return str(path)


def test_the_namespace_is_the_flag_the_env_or_the_kubeconfigs(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECOACH_NAMESPACE", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    team = _kubeconfig(tmp_path / "team", "team-a")
    plain = _kubeconfig(tmp_path / "plain", None)
    assert kc._namespace("given", team) == "given"
    assert kc._namespace(None, team) == "team-a"
    assert kc._namespace(None, plain) == "default"
    monkeypatch.setenv("KUBECONFIG", team)
    assert kc._namespace(None, None) == "team-a"
    monkeypatch.setenv("STAGECOACH_NAMESPACE", "from-env")
    assert kc._namespace(None, team) == "from-env"
    assert kc._namespace(None, str(tmp_path / "missing")) == "from-env"


def test_a_missing_kubeconfig_is_named(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    here = _kubeconfig(tmp_path / "here", None)
    assert kc._missing_kubeconfig(here) is None
    assert kc._missing_kubeconfig(str(tmp_path / "gone")) == (
        f"no cluster to ask: no kubeconfig at {tmp_path}/gone (give --kubeconfig or set "
        "$KUBECONFIG)")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/gone:{here}")  # a list: one is enough
    assert kc._missing_kubeconfig(None) is None
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/gone")
    assert kc._missing_kubeconfig(None) is not None
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod: its own account
    assert kc._missing_kubeconfig(None) is None
    assert kc._missing_kubeconfig(str(tmp_path / "gone")) is not None
    with pytest.raises(ControlError, match="no kubeconfig at"):
        kc.control("p", "suspend", namespace=None, kubeconfig=str(tmp_path / "gone"))
