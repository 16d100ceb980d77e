"""Run control in the engine (DESIGN §9): suspend, stop, terminate, approval gates, reuse.

Every transition is driven through the simulator with timed interventions, the way a
shell would pass ``spec.suspend``/``spec.shutdown`` and StageApprovals into ``step``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stagecoach.engine import (
    ApprovalDecision,
    AttemptOutcome,
    Control,
    StartAttempt,
    StopAttempt,
    Tokens,
    apply_reuse,
    dump_state,
    load_state,
    new_state,
    observe,
    plan,
    prior_stages,
    reusable,
    to_status,
)

from .sim import T0, Result, always_ok, resolved, simulate
from .test_planner import agent, run_

SLOW_RETRY = {"limit": 2, "backoff": {"initial": "30s", "factor": 1, "max": "30s", "jitter": 0}}


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def gate(name: str, deps: list[str], **approval: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": deps,
            "approval": {"message": "Publish {{ params.topic }}? {{ stages.draft.output }}",
                         **approval}}


def approve(stage: str = "sign-off", name: str = "a1", **kw: Any) -> ApprovalDecision:
    return ApprovalDecision(name=name, stage=stage, decision="Approve", approver="alice", **kw)


def reject(stage: str = "sign-off", name: str = "r1", **kw: Any) -> ApprovalDecision:
    return ApprovalDecision(name=name, stage=stage, decision="Reject", approver="bob", **kw)


def start_times(r: Any, stage: str) -> list[Any]:
    return [t for t, a in r.actions if isinstance(a, StartAttempt) and a.stage == stage]


def types(r: Any) -> list[str]:
    out = []
    for _, a in r.actions:
        ev = a.event()
        if ev:
            out.append(ev["type"])
    return out


GATED = {"params": {"topic": "batteries"},
         "stages": [run_("draft"),
                    gate("sign-off", ["draft"], inputs=[
                        {"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"},
                        {"name": "note"}]),
                    run_("publish", ["sign-off"])],
         "finally": [{"name": "notify", "run": {"image": "x", "command": ["true"]}}]}


# -- suspend ---------------------------------------------------------------------------
def test_suspend_holds_new_attempts_running_ones_finish_and_resume_continues() -> None:
    p = resolved({"stages": [run_("a"), run_("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(True, seconds=10),
                 script=[(at(5), Control(suspend=True)), (at(60), Control(suspend=False))])
    assert r.state.phase == "Succeeded"
    assert start_times(r, "a") == [T0]
    assert start_times(r, "b") == [at(60)]  # a finished at 10 s, b waited for resume
    suspended = [s for s in r.states if s.phase == "Suspended"]
    assert suspended and all(s.reason == "Suspended" for s in suspended)
    assert types(r).count("PipelineSuspended") == 1 and types(r).count("PipelineResumed") == 1


def test_suspend_during_backoff_holds_the_retry_until_resume() -> None:
    p = resolved({"stages": [run_("a", retry=SLOW_RETRY)]})
    calls: list[int] = []

    def behave(a: StartAttempt, s: Any) -> Result:
        calls.append(a.attempt or 0)
        return Result(a.attempt == 2, "Error", "flaky", seconds=1)

    r = simulate(p, behave, script=[(at(5), Control(suspend=True)),
                                    (at(100), Control(suspend=False))])
    assert r.state.phase == "Succeeded" and calls == [1, 2]
    # the retry was due at 31 s; suspended, it started only at resume
    assert start_times(r, "a") == [T0, at(100)]
    status = to_status(p, next(s for s in r.states if s.phase == "Suspended"))
    assert status.phase == "Suspended" and status.stages[0].phase == "Waiting"


def test_pipeline_timeout_keeps_counting_while_suspended() -> None:
    p = resolved({"timeout": "1m", "stages": [run_("a"), run_("b", ["a"])],
                  "finally": [{"name": "f", "run": {"image": "x", "command": ["true"]}}]})
    r = simulate(p, lambda a, s: Result(True, seconds=1),
                 script=[(at(0.5), Control(suspend=True))])
    assert r.state.phase == "Failed" and r.state.reason == "Timeout"
    assert r.state.finished_at is not None and r.state.finished_at >= at(60)
    assert start_times(r, "b") == []
    assert start_times(r, "f") == [at(60)]  # the run is ending: finally is not held back


def test_suspended_from_the_start_starts_nothing() -> None:
    p = resolved({"stages": [run_("a")]})
    first = plan(p, new_state(p), T0, control=Control(suspend=True))
    assert first.starts() == [] and first.state.phase == "Suspended"
    assert to_status(p, first.state).phase == "Suspended"


# -- stop / terminate ------------------------------------------------------------------
def test_stop_during_foreach_lets_running_instances_finish_and_runs_finally() -> None:
    p = resolved({"maxParallel": 2, "params": {"xs": [1, 2, 3, 4]},
                  "stages": [run_("f", forEach="params.xs"), run_("after", ["f"])],
                  "finally": [{"name": "cleanup", "run": {"image": "x", "command": ["true"]}}]})
    r = simulate(p, lambda a, s: Result(True, seconds=10),
                 script=[(at(5), Control(shutdown="Stop"))])
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Stopped")
    assert not r.of(StopAttempt)  # nothing was killed
    f = r.state.stages["f"]
    assert [i.phase for i in f.instances] == ["Succeeded", "Succeeded", "Skipped", "Skipped"]
    assert f.phase == "Failed" and f.reason == "Cancelled"
    assert "2 of 4 instances did not start" in (f.message or "")
    assert r.state.stages["after"].phase == "Skipped"
    assert start_times(r, "cleanup") == [at(10)]
    assert r.events("ShutdownRequested")[0]["data"]["mode"] == "Stop"


def test_terminate_stops_running_attempts_skips_finally_and_records_cancelled() -> None:
    p = resolved({"stages": [run_("a"), run_("b")],
                  "finally": [{"name": "cleanup", "run": {"image": "x", "command": ["true"]}}]})
    r = simulate(p, lambda a, s: Result(True, seconds=100),
                 script=[(at(5), Control(shutdown="Terminate"))])
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Terminated")
    assert sorted(s.stage or "" for s in r.of(StopAttempt)) == ["a", "b"]
    ends = [e for e in r.events("StageFailed") if e["stage"] in {"a", "b"}]
    assert len(ends) == 2 and {e["data"]["errorClass"] for e in ends} == {"Cancelled"}
    assert r.state.stages["cleanup"].phase == "Skipped" and start_times(r, "cleanup") == []


def test_terminate_is_final_and_stop_can_escalate_to_terminate() -> None:
    p = resolved({"stages": [run_("a")]})
    r = simulate(p, lambda a, s: Result(True, seconds=100),
                 script=[(at(1), Control(shutdown="Stop")),
                         (at(2), Control(shutdown="Terminate"))])
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Terminated")
    assert [e["data"]["mode"] for e in r.events("ShutdownRequested")] == ["Stop", "Terminate"]


def test_stop_while_suspended_still_runs_finally() -> None:
    p = resolved({"stages": [run_("a"), run_("b", ["a"])],
                  "finally": [{"name": "cleanup", "run": {"image": "x", "command": ["true"]}}]})
    r = simulate(p, lambda a, s: Result(True, seconds=10),
                 script=[(at(1), Control(suspend=True)),
                         (at(30), Control(suspend=True, shutdown="Stop"))])
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Stopped")
    assert start_times(r, "b") == [] and start_times(r, "cleanup") == [at(30)]


def test_ctrl_c_is_terminate() -> None:
    p = resolved({"stages": [run_("a")]})
    r = simulate(p, lambda a, s: Result(True, seconds=100), cancel_at=at(3))
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Terminated")


# -- approvals -------------------------------------------------------------------------
def test_approval_waits_with_the_rendered_message_then_approve_passes_inputs() -> None:
    p = resolved(GATED)
    r = simulate(p, lambda a, s: Result(True, output="DRAFT", seconds=1),
                 script=[(at(50), approve(inputs={"channel": "newsletter"}, message="ok"))])
    assert r.state.phase == "Succeeded"
    waiting = next(s for s in r.states if s.stages["sign-off"].phase == "Waiting")
    st = to_status(p, waiting).stages[1]
    assert (st.phase, st.reason) == ("Waiting", "AwaitingApproval")
    assert st.message == "Publish batteries? DRAFT"
    [req] = r.events("ApprovalRequested")
    assert req["data"]["message"] == "Publish batteries? DRAFT"
    assert [i["name"] for i in req["data"]["inputs"]] == ["channel", "note"]
    [dec] = r.events("ApprovalDecided")
    assert (dec["data"]["decision"], dec["data"]["approver"], dec["data"]["approval"]) == (
        "Approve", "alice", "a1")
    out = r.state.stages["sign-off"].output
    assert out["approved"] is True and out["inputs"] == {"channel": "newsletter"}
    assert out["approver"] == "alice" and out["message"] == "ok"
    assert start_times(r, "publish") == [at(50)]
    assert [v.phase for v in r.verdicts] == ["Accepted"]
    assert not [a for _, a in r.actions if isinstance(a, StartAttempt) and a.stage == "sign-off"]


def test_reject_fails_the_stage_rejected_never_retried_and_continue_routes_around() -> None:
    doc = {**GATED, "stages": [run_("draft"), {**gate("sign-off", ["draft"]),
                                               "onFailure": "continue"},
                               run_("publish", ["sign-off"],
                                    when="stages['sign-off'].output == null")]}
    p = resolved(doc)
    r = simulate(p, lambda a, s: Result(True, output="D", seconds=1),
                 script=[(at(10), reject(message="not yet"))])
    so = r.state.stages["sign-off"]
    assert (so.phase, so.reason) == ("Failed", "Rejected")
    assert so.message == "rejected by bob: not yet" and so.attempt == 1
    assert r.state.phase == "Succeeded" and start_times(r, "publish") == [at(10)]
    assert r.events("StageFailed")[0]["data"]["willRetry"] is False


def test_reject_without_continue_fails_the_pipeline_and_runs_finally() -> None:
    p = resolved(GATED)
    r = simulate(p, lambda a, s: Result(True, output="D", seconds=1),
                 script=[(at(10), reject())])
    assert r.state.phase == "Failed" and "(Rejected)" in (r.state.message or "")
    assert r.state.stages["publish"].phase == "Skipped"
    assert start_times(r, "notify") == [at(10)]


def test_approval_timeout_rejects_by_default_and_approves_when_asked() -> None:
    for on_timeout, phase in (("reject", "Failed"), ("approve", "Succeeded")):
        doc = {**GATED, "stages": [run_("draft"), gate("sign-off", ["draft"], timeout="1h",
                                                        onTimeout=on_timeout),
                                   run_("publish", ["sign-off"])]}
        p = resolved(doc)
        r = simulate(p, lambda a, s: Result(True, output="D", seconds=1))
        assert r.state.phase == phase, on_timeout
        [dec] = r.events("ApprovalDecided")
        assert dec["data"]["by"] == "timeout" and dec["data"]["approver"] is None
        assert r.state.stages["sign-off"].finished_at == at(1) + timedelta(hours=1)
        if on_timeout == "reject":
            assert "no decision within 1h" in (r.state.stages["sign-off"].message or "")


def test_approval_timeout_survives_a_restart_of_the_shell() -> None:
    """The deadline is derived from the persisted start: a reloaded state still ends."""
    doc = {"stages": [gate("sign-off", [], timeout="10m")]}
    doc["stages"][0]["approval"]["message"] = "ok?"
    p = resolved(doc)
    first = plan(p, new_state(p), T0)
    assert first.wake_at == T0 + timedelta(minutes=10)
    reloaded = load_state(dump_state(first.state))
    later = plan(p, reloaded, T0 + timedelta(minutes=11))
    assert later.state.phase == "Failed"
    assert later.state.stages["sign-off"].reason == "Rejected"


def test_terminate_during_an_approval_wait_ends_it_cancelled() -> None:
    p = resolved(GATED)
    r = simulate(p, lambda a, s: Result(True, output="D", seconds=1),
                 script=[(at(20), Control(shutdown="Terminate")), (at(30), approve())])
    so = r.state.stages["sign-off"]
    assert (so.phase, so.reason) == ("Failed", "Cancelled")
    assert "no decision was made" in (so.message or "")
    assert (r.state.phase, r.state.reason) == ("Cancelled", "Terminated")


def test_refused_decisions_change_nothing_and_say_why() -> None:
    p = resolved(GATED)
    s0 = plan(p, new_state(p), T0).state  # draft running, sign-off Pending
    early = plan(p, s0, at(1), approvals=[approve()])
    [v] = early.verdicts
    assert (v.accepted, v.reason) == (False, "NotWaiting")
    assert "dependencies have not finished" in v.message
    assert early.state.stages["sign-off"].phase == "Pending"

    r = simulate(p, lambda a, s: Result(True, output="D", seconds=1), script=[
        (at(5), approve(stage="draft", name="x1")),
        (at(5), approve(stage="nope", name="x2")),
        (at(5), approve(name="x3", inputs={"channel": "tv"})),
        (at(5), approve(name="x4", inputs={"colour": "red"})),
        (at(5), approve(name="x5", iteration=2)),
        (at(6), approve(name="ok")),
        (at(7), reject(name="late")),
        (at(7), approve(name="ok")),  # the same object again: same verdict, applied once
    ])
    by = {v.name: v for v in r.verdicts}
    assert by["x1"].reason == "NotAnApprovalStage" and "approval stages: sign-off" in \
        by["x1"].message
    assert by["x2"].reason == "UnknownStage"
    assert by["x3"].reason == "InvalidInputs" and "one of blog, newsletter" in by["x3"].message
    assert by["x4"].reason == "InvalidInputs" and "'colour'" in by["x4"].message
    assert by["x5"].reason == "StaleIteration"
    assert by["ok"].accepted and by["late"].reason == "NotWaiting"
    assert "decided by alice" in by["late"].message
    assert len(r.events("ApprovalDecided")) == 1
    assert r.state.phase == "Succeeded"
    # two decisions judged in one pass: the second sees the first's result
    s1 = plan(p, new_state(p), T0).state
    s1 = observe(p, s1, AttemptOutcome("draft", 1, 1, ok=True, output="D"), at(1)).state
    s1 = plan(p, s1, at(1)).state
    both = plan(p, s1, at(2), approvals=[approve(name="p1"), reject(name="p2")])
    assert [v.accepted for v in both.verdicts] == [True, False]
    assert both.verdicts[1].message == ("stage sign-off is not waiting for approval "
                                        "(it is Succeeded; decided by alice)")
    after = plan(p, r.state, at(100), approvals=[approve(name="post")])
    assert after.verdicts[0].reason == "PipelineFinished"


def test_required_input_needs_a_value_for_approval_but_not_for_rejection() -> None:
    doc = {"stages": [gate("sign-off", [], inputs=[{"name": "ticket", "required": True}])]}
    doc["stages"][0]["approval"]["message"] = "ok?"
    p = resolved(doc)
    s = plan(p, new_state(p), T0).state
    missing = plan(p, s, at(1), approvals=[approve()])
    assert missing.verdicts[0].reason == "InvalidInputs"
    assert "'ticket' is required" in missing.verdicts[0].message
    no = plan(p, s, at(1), approvals=[reject()])
    assert no.verdicts[0].accepted


def test_a_loop_opens_a_new_wait_and_an_old_iterations_decision_is_refused() -> None:
    doc = {"stages": [run_("draft"),
                      {**gate("sign-off", ["draft"]),
                       "routes": [{"when": "!stages['sign-off'].output.approved || "
                                           "stages['sign-off'].output.inputs.redo == 'yes'",
                                   "goto": "draft", "maxIterations": 2}]}]}
    doc["stages"][1]["approval"]["inputs"] = [{"name": "redo", "default": "no"}]
    doc["stages"][1]["approval"]["message"] = "ok?"
    p = resolved(doc)
    r = simulate(p, lambda a, s: Result(True, output="D", seconds=1), script=[
        (at(5), approve(name="first", iteration=1, inputs={"redo": "yes"})),
        (at(20), approve(name="stale", iteration=1)),
        (at(21), approve(name="second", iteration=2)),
    ])
    by = {v.name: v for v in r.verdicts}
    assert by["first"].accepted and by["second"].accepted
    assert by["stale"].reason == "StaleIteration"
    assert r.state.stages["sign-off"].iteration == 2 and r.state.phase == "Succeeded"
    assert len(r.events("ApprovalRequested")) == 2


def test_approval_output_survives_dump_and_load_without_a_store() -> None:
    doc = {"stages": [gate("sign-off", []), run_("after", ["sign-off"])]}
    doc["stages"][0]["approval"]["message"] = "ok?"
    p_msg = resolved(doc)
    s = plan(p_msg, new_state(p_msg), T0).state
    s = plan(p_msg, s, at(1), approvals=[approve()]).state
    back = load_state(dump_state(s))
    assert back.stages["sign-off"].output["approver"] == "alice"
    assert back.stages["sign-off"].instances[0].output["approved"] is True
    assert back.approvals["a1"]["accepted"] is True


# -- reuse (resumeFrom) ----------------------------------------------------------------
def test_resume_reuses_succeeded_unchanged_stages_and_reruns_the_rest() -> None:
    doc = {"stages": [agent("research"), agent("verify", ["research"]),
                      agent("draft", ["verify"]), agent("side")]}
    old_p = resolved(doc)
    old = simulate(old_p, lambda a, s: Result(a.stage != "draft", "Error", "boom",
                                               output=f"{a.stage}-out"))
    assert old.state.phase == "Failed"
    new_p = resolved(doc)
    prior = prior_stages(old.state)
    verdict = reusable(new_p, prior)
    assert verdict.reused == ("research", "verify", "side")
    assert verdict.rerun == {"draft": "it was Failed there"}
    started = apply_reuse(new_p, new_state(new_p), verdict, prior, "t", "uid-1", T0)
    assert [e.event()["type"] for e in started.actions] == [  # type: ignore[index]
        "PipelineStarted", "StageReused", "StageReused", "StageReused", "ResumeDecided"]
    r = simulate(new_p, lambda a, s: Result(True, output=f"{a.stage}-new", tokens=Tokens(3, 2)),
                 state=started.state)
    assert r.state.phase == "Succeeded"
    assert [a.stage for a in r.of(StartAttempt)] == ["draft"]  # type: ignore[attr-defined]
    status = to_status(new_p, r.state)
    reasons = {s.name: s.reason for s in status.stages}
    assert reasons["research"] == "Reused" and reasons["draft"] is None
    assert r.state.stages["draft"].output == "draft-new"
    assert r.state.tokens.total == 5  # only draft's tokens: reused ones are not counted


def test_resume_with_a_changed_stage_reruns_it_and_everything_downstream() -> None:
    doc = {"stages": [agent("research"), agent("verify", ["research"]),
                      agent("draft", ["verify"]), agent("side")]}
    old = simulate(resolved(doc), always_ok)
    changed = {"stages": [agent("research"),
                          {**agent("verify", ["research"]),
                           "agent": {"provider": "p", "prompt": "stricter"}},
                          agent("draft", ["verify"]), agent("side")]}
    verdict = reusable(resolved(changed), prior_stages(old.state))
    assert verdict.reused == ("research", "side")
    assert verdict.rerun["verify"] == "its resolved spec changed"
    assert verdict.rerun["draft"] == "it depends on verify, which runs again"
    assert "verify: its resolved spec changed" in verdict.explain()


def test_params_are_part_of_every_stage_hash_and_finally_always_runs() -> None:
    doc = {"params": {"topic": "a"}, "stages": [agent("x")],
           "finally": [{"name": "f", "run": {"image": "x", "command": ["true"]}}]}
    old = simulate(resolved(doc), always_ok)
    same = reusable(resolved(doc), prior_stages(old.state))
    assert same.reused == ("x",) and same.rerun == {"f": "finally stages always run"}
    other = reusable(resolved({**doc, "params": {"topic": "b"}}), prior_stages(old.state))
    assert other.reused == ()


def test_resume_copies_foreach_outputs_and_approval_decisions() -> None:
    doc = {"params": {"xs": [1, 2]},
           "stages": [run_("f", forEach="params.xs"), gate("ok", ["f"]), run_("z", ["ok"])]}
    doc["stages"][1]["approval"]["message"] = "ok?"
    p = resolved(doc)
    old = simulate(p, lambda a, s: Result(a.stage != "z", "Error", "x", output=a.item),
                   script=[(at(5), approve(stage="ok"))])
    prior = prior_stages(old.state)
    verdict = reusable(p, prior)
    assert verdict.reused == ("f", "ok")
    state = apply_reuse(p, new_state(p), verdict, prior, "t", "uid-1", T0).state
    assert state.stages["f"].output == [1, 2]
    assert to_status(p, state).stages[0].instances.succeeded == 2  # type: ignore[union-attr]
    back = load_state(dump_state(state), {})
    assert back.stages["ok"].output["approver"] == "alice"  # inline: no store needed
