"""Stages the pipeline stops before they finish: timeout, cancel, budget, back-edges.

Status must tell the truth about them: the real phase and attempt count, every forEach
item counted, one token figure, and one end event for every attempt the engine stops.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stagecoach.engine import RecordDecision, StopAttempt, Tokens, to_status

from .sim import T0, Result, resolved, simulate
from .test_planner import agent, run_

SLOW_RETRY = {"limit": 3, "backoff": {"initial": "30s", "factor": 2, "max": "1m", "jitter": 0}}


def failed(run: Any) -> list[dict[str, Any]]:
    return run.events("StageFailed")


def test_pipeline_timeout_during_a_retry_backoff_fails_the_stage_with_its_attempts() -> None:
    p = resolved({"timeout": "10s", "stages": [run_("a", retry=SLOW_RETRY)]})
    r = simulate(p, lambda a, s: Result(False, "Error", "boom"))
    [a] = to_status(p, r.state).stages
    assert (a.phase, a.attempt, a.reason) == ("Failed", 1, "Timeout")
    assert "timeout of 10s" in (a.message or "") and "boom" in (a.message or "")
    assert "retry did not start" in (a.message or "")
    last = failed(r)[-1]
    assert (last["attempt"], last["data"]["errorClass"], last["data"]["willRetry"]) == (
        None, "Timeout", False)
    assert r.state.phase == "Failed" and r.state.reason == "Timeout"


def test_cancel_during_a_retry_backoff_fails_the_stage_cancelled() -> None:
    p = resolved({"stages": [run_("a", retry=SLOW_RETRY)]})
    r = simulate(p, lambda a, s: Result(False, "Error", "boom"),
                 cancel_at=T0 + timedelta(seconds=5))
    [a] = to_status(p, r.state).stages
    assert (a.phase, a.attempt, a.reason) == ("Failed", 1, "Cancelled")
    assert r.state.phase == "Cancelled"
    assert failed(r)[-1]["data"]["errorClass"] == "Cancelled"


def test_budget_stop_with_queued_instances_counts_them_and_agrees_on_tokens() -> None:
    p = resolved({"maxParallel": 2, "budget": {"maxTokens": 100},
                  "params": {"xs": [1, 2, 3, 4]},
                  "stages": [agent("f", forEach="params.xs")]})
    # 0 and 1 start together; 0 ends at 1 s (60 tokens) so 2 starts; 1 ends at 2 s (120:
    # over budget) while 2 still runs and adds 60 more; 3 never starts.
    r = simulate(p, lambda a, s: Result(True, tokens=Tokens(60, 0),
                                        seconds=1 + (a.index or 0)))
    status = to_status(p, r.state)
    [f] = status.stages
    assert (f.phase, f.reason, f.attempt) == ("Failed", "BudgetExceeded", 1)
    assert f.instances is not None
    assert (f.instances.total, f.instances.succeeded) == (4, 3)
    assert "1 of 4 instances did not start" in (f.message or "")
    assert status.tokens.total == 180
    assert "180 of 100 tokens" in (status.message or "")
    assert "180 of 100 tokens" in (f.message or "")
    assert r.events("PipelineFailed")[0]["data"]["message"] == status.message


def test_cancel_records_stage_failed_cancelled_for_each_running_attempt() -> None:
    p = resolved({"params": {"xs": [1, 2]}, "stages": [run_("f", forEach="params.xs")]})
    r = simulate(p, lambda a, s: Result(True, seconds=100), cancel_at=T0 + timedelta(seconds=5))
    stops = [a for a in r.of(StopAttempt) if isinstance(a, StopAttempt)]
    ends = failed(r)
    assert [(s.index, s.attempt) for s in stops] == [(e["index"], e["attempt"]) for e in ends]
    assert len(ends) == 2
    for e in ends:
        assert e["data"]["errorClass"] == "Cancelled" and e["data"]["willRetry"] is False
        assert e["data"]["durationMs"] == 5000
    [f] = to_status(p, r.state).stages
    assert (f.phase, f.reason, f.attempt) == ("Failed", "Cancelled", 1)
    assert f.instances is not None and (f.instances.total, f.instances.failed) == (2, 2)


def test_stopped_attempts_have_a_duration() -> None:
    p = resolved({"timeout": "10s", "stages": [run_("a", timeout="4s", retry={"limit": 1}),
                                               run_("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(True, seconds=8 if a.stage == "a" and a.attempt == 1
                                        else 100))
    durations = [(e["stage"], e["attempt"], e["data"]["errorClass"], e["data"]["durationMs"])
                 for e in failed(r)]
    assert durations[0] == ("a", 1, "Timeout", 4000)  # the attempt's own timeout
    assert all(d is not None for *_, d in durations)


def test_a_superseded_attempt_ends_with_stage_failed_cancelled() -> None:
    stages = [run_("a"), run_("slow", ["a"]), run_("v", ["a"], routes=[
        {"when": "loop.iteration < 2", "goto": "a", "maxIterations": 2}])]
    p = resolved({"stages": stages})
    r = simulate(p, lambda a, s: Result(True, seconds=50 if a.stage == "slow" else 1))
    [end] = [e for e in failed(r) if e["stage"] == "slow"]
    assert (end["iteration"], end["attempt"], end["data"]["errorClass"]) == (1, 1, "Cancelled")
    assert "superseded" in end["data"]["message"] and end["data"]["durationMs"] == 1000
    assert r.state.phase == "Succeeded"


def test_a_stage_that_never_ran_is_still_skipped_with_attempt_0() -> None:
    p = resolved({"timeout": "10s", "stages": [run_("a"), run_("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(True, seconds=60))
    status = {s.name: s for s in to_status(p, r.state).stages}
    assert (status["b"].phase, status["b"].attempt, status["b"].reason) == (
        "Skipped", 0, "Timeout")
    assert (status["a"].phase, status["a"].reason) == ("Failed", "Timeout")


def test_for_each_over_an_empty_list_has_a_stage_succeeded_event() -> None:
    p = resolved({"params": {"xs": []}, "stages": [run_("split", forEach="params.xs")]})
    r = simulate(p)
    [done] = r.events("StageSucceeded")
    assert (done["stage"], done["iteration"], done["attempt"]) == ("split", 1, None)
    assert done["data"]["instances"] == 0 and done["data"]["durationMs"] == 0
    [st] = to_status(p, r.state).stages
    assert st.instances is not None and st.instances.total == 0


def test_a_failing_route_records_the_values_it_read() -> None:
    stages = [run_("a", routes=[{"when": "stages.a.output.score > 0.5", "goto": "a",
                                 "maxIterations": 2}])]
    r = simulate(resolved({"stages": stages}), lambda a, s: Result(True, output={"score": "hi"}))
    [d] = [a for a in r.of(RecordDecision) if isinstance(a, RecordDecision)]
    assert d.action == "fail" and d.error
    assert d.values == {"stages.a.output.score": "hi"}
    assert r.state.stages["a"].reason == "InvalidInput"
