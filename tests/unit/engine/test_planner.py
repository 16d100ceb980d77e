"""Scenario tests of plan()/observe() driven by the simulator (simulated time only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stagecoach.engine import (
    FinishPipeline,
    RecordDecision,
    ScheduleRetry,
    StartAttempt,
    StopAttempt,
    Tokens,
    new_state,
    plan,
)

from .sim import T0, Result, always_ok, resolved, simulate


def run_(name: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": deps or [],
            "run": {"image": "x", "command": ["true"]}, **extra}


def agent(name: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": deps or [],
            "agent": {"provider": "p", "prompt": "hi"}, **extra}


def starts(run: Any) -> list[StartAttempt]:
    return run.of(StartAttempt)


def test_linear_pipeline_runs_in_order_and_assembles_output() -> None:
    p = resolved({"stages": [run_("a"), run_("b", ["a"]), run_("c", ["b"])],
                  "output": "{{ stages.c.output.stage }}!"})
    r = simulate(p)
    assert [s.stage for s in starts(r)] == ["a", "b", "c"]
    assert r.state.phase == "Succeeded"
    assert r.state.final_output == "c!"
    assembled = r.events("OutputAssembled")[0]
    assert assembled["data"]["stages"] == ["c"]


def test_independent_stages_start_together_and_fan_in_waits_for_both() -> None:
    p = resolved({"stages": [run_("a"), run_("b", ["a"]), run_("c", ["a"]),
                             run_("d", ["b", "c"])]})
    durations = {"a": 1, "b": 5, "c": 2, "d": 1}
    r = simulate(p, lambda a, s: Result(True, output=a.stage, seconds=durations[a.stage]))
    t = {a.stage: ts for ts, a in r.actions if isinstance(a, StartAttempt)}
    assert t["b"] == t["c"] == T0 + timedelta(seconds=1)
    assert t["d"] == T0 + timedelta(seconds=6)


def test_max_parallel_is_never_exceeded() -> None:
    p = resolved({"maxParallel": 2, "stages": [run_(f"s{i}") for i in range(6)]})
    r = simulate(p)
    for st in r.states:
        running = sum(1 for s in st.stages.values() for i in s.instances if i.phase == "Running")
        assert running <= 2
    assert r.state.phase == "Succeeded"
    queued = r.events("StageQueued")
    assert queued and queued[0]["data"]["reason"] == "WaitingForParallelism"


def test_when_false_skips_and_records_decision_and_all_skipped_deps_skip() -> None:
    p = resolved({"params": {"go": False}, "stages": [
        run_("a", when="params.go"), run_("b", ["a"]), run_("c")]})
    r = simulate(p)
    assert r.state.stages["a"].phase == "Skipped"
    assert r.state.stages["b"].phase == "Skipped"
    assert r.state.stages["c"].phase == "Succeeded"
    d = [a for a in r.of(RecordDecision) if isinstance(a, RecordDecision)][0]
    assert (d.expression, d.result, d.action, d.values) == ("params.go", False, "skip",
                                                            {"params.go": False})
    assert r.state.phase == "Succeeded"


def test_condition_error_is_invalid_input_not_false() -> None:
    p = resolved({"stages": [run_("a"), run_("b", ["a"], when="stages.a.output.missing > 1")]})
    r = simulate(p, lambda a, s: Result(True, output={"x": 1}))
    b = r.state.stages["b"]
    assert (b.phase, b.reason) == ("Failed", "InvalidInput")
    assert "stages.a.output.missing" in (b.message or "")
    assert r.state.phase == "Failed" and r.state.reason == "StageFailed"


def test_for_each_fans_out_and_keeps_index_order() -> None:
    p = resolved({"params": {"xs": ["a", "b", "c"]}, "stages": [
        run_("split", forEach="params.xs"), run_("join", ["split"])]})
    r = simulate(p, lambda a, s: Result(True, output=f"{a.item}!",
                                        seconds=3 - (a.index or 0)))
    assert r.state.stages["split"].output == ["a!", "b!", "c!"]
    assert [a.index for a in starts(r) if a.stage == "split"] == [0, 1, 2]


def test_for_each_empty_list_succeeds_with_empty_output() -> None:
    p = resolved({"params": {"xs": []}, "stages": [run_("split", forEach="params.xs")]})
    r = simulate(p)
    assert r.state.stages["split"].output == [] and r.state.phase == "Succeeded"


def test_for_each_non_list_fails_invalid_input() -> None:
    p = resolved({"params": {"xs": 3}, "stages": [run_("split", forEach="params.xs")]})
    r = simulate(p)
    assert r.state.stages["split"].reason == "InvalidInput"


def test_for_each_continue_gives_null_for_failed_instance() -> None:
    p = resolved({"params": {"xs": [1, 2, 3]}, "stages": [
        run_("split", forEach="params.xs", onFailure="continue"), run_("next", ["split"])]})
    r = simulate(p, lambda a, s: Result(a.index != 1, "Error", output=a.item)
                 if a.stage == "split" else Result(True, output="ok"))
    assert r.state.stages["split"].output == [1, None, 3]
    assert r.state.stages["next"].phase == "Succeeded"
    assert r.state.phase == "Succeeded"


def test_retry_with_exponential_backoff_then_success() -> None:
    retry = {"limit": 3, "backoff": {"initial": "1s", "factor": 2, "max": "1m", "jitter": 0}}
    p = resolved({"stages": [run_("a", retry=retry)]})
    r = simulate(p, lambda a, s: Result(a.attempt == 3, "RateLimited", seconds=0.5))
    retries = [a for a in r.of(ScheduleRetry) if isinstance(a, ScheduleRetry)]
    assert [a.attempt for a in retries] == [1, 2]
    started = [ts for ts, a in r.actions if isinstance(a, StartAttempt)]
    gaps = [(b - a).total_seconds() for a, b in zip(started, started[1:], strict=False)]
    assert gaps == [1.5, 2.5]  # 0.5 s attempt + 1 s, then 0.5 s + 2 s
    assert r.state.phase == "Succeeded" and r.state.stages["a"].attempt == 3


def test_retry_exhausted_fails_pipeline_and_attempts_bounded() -> None:
    p = resolved({"stages": [run_("a", retry={"limit": 2}), run_("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(False, "Error", "boom"))
    assert r.state.stages["a"].attempt == 3
    assert r.state.stages["b"].phase == "Skipped"
    assert r.state.phase == "Failed" and "boom" in (r.state.message or "")


def test_invalid_input_and_unlisted_classes_are_not_retried() -> None:
    p = resolved({"stages": [run_("a", retry={"limit": 5}),
                             run_("b", retry={"limit": 5, "on": ["Timeout"]})]})
    r = simulate(p, lambda a, s: Result(False, "InvalidInput" if a.stage == "a" else "Error"))
    assert r.state.stages["a"].attempt == 1 and r.state.stages["b"].attempt == 1


def test_malformed_output_error_reaches_next_attempt() -> None:
    p = resolved({"stages": [agent("a", retry={"limit": 1})]})
    r = simulate(p, lambda a, s: Result(a.attempt == 2, "MalformedOutput", "missing 'x'"))
    second = starts(r)[1]
    assert second.previous_error == "missing 'x'"


def test_on_failure_continue_lets_downstream_run_with_null_output() -> None:
    p = resolved({"stages": [run_("a", onFailure="continue"), run_("b", ["a"])]})
    seen: dict[str, Any] = {}

    def behave(a: StartAttempt, s: Any) -> Result:
        if a.stage == "b":
            seen["a_output"] = s.stages["a"].output
        return Result(a.stage != "a", "Error")

    r = simulate(p, behave)
    assert r.state.stages["a"].phase == "Failed"
    assert seen == {"a_output": None}
    assert r.state.phase == "Succeeded"


LOOP = [run_("research"), run_("draft", ["research"]),
        run_("verify", ["draft"], routes=[{"when": "stages.verify.output.bad",
                                           "goto": "research", "maxIterations": 3}]),
        run_("publish", ["verify"])]


def test_back_edge_resets_target_and_descendants_until_condition_clears() -> None:
    p = resolved({"stages": LOOP})
    r = simulate(p, lambda a, s: Result(True, output={"bad": a.iteration < 2}))
    st = r.state.stages
    assert (st["research"].iteration, st["draft"].iteration, st["verify"].iteration) == (2, 2, 2)
    assert st["publish"].iteration == 1 and st["publish"].phase == "Succeeded"
    gotos = [a for a in r.of(RecordDecision) if isinstance(a, RecordDecision)
             and a.action == "goto"]
    assert len(gotos) == 1 and gotos[0].target == "research"
    assert [a.stage for a in starts(r)] == ["research", "draft", "verify"] * 2 + ["publish"]


def test_back_edge_bounded_by_max_iterations_then_continues() -> None:
    p = resolved({"stages": LOOP})
    r = simulate(p, lambda a, s: Result(True, output={"bad": True}))
    assert r.state.stages["research"].iteration == 3
    assert r.state.phase == "Succeeded"
    last = [a for a in r.of(RecordDecision) if isinstance(a, RecordDecision)][-1]
    assert last.action == "continue" and "used all 3" in (last.note or "")
    assert last.error is None  # continuing is the configured outcome, not an error


def test_back_edge_exhausted_with_otherwise_fail() -> None:
    stages = [dict(s) for s in LOOP]
    stages[2] = run_("verify", ["draft"], routes=[{"when": "true", "goto": "research",
                                                    "maxIterations": 2, "otherwise": "fail"}])
    r = simulate(resolved({"stages": stages}))
    assert r.state.phase == "Failed" and r.state.reason == "MaxIterationsExceeded"
    assert r.state.stages["publish"].phase == "Skipped"


def test_loop_variable_visible_in_conditions() -> None:
    stages = [run_("a"), run_("b", ["a"], routes=[
        {"when": "loop.iteration < 2", "goto": "a", "maxIterations": 5}])]
    r = simulate(resolved({"stages": stages}))
    assert r.state.stages["a"].iteration == 2
    assert r.state.stages["a"].loop_from == "b"


def test_attempt_timeout_stops_and_retries() -> None:
    p = resolved({"stages": [run_("a", timeout="5s", retry={"limit": 1})]})
    r = simulate(p, lambda a, s: Result(True, seconds=10 if a.attempt == 1 else 1))
    stops = [a for a in r.of(StopAttempt) if isinstance(a, StopAttempt)]
    assert stops and stops[0].reason == "Timeout" and stops[0].attempt == 1
    retry = [a for a in r.of(ScheduleRetry) if isinstance(a, ScheduleRetry)][0]
    assert retry.error_class == "Timeout"
    assert r.state.phase == "Succeeded"


def test_pipeline_timeout_fails_but_finally_runs() -> None:
    p = resolved({"timeout": "10s", "stages": [run_("slow")],
                  "finally": [{"name": "cleanup", "run": {"image": "x", "command": ["x"]}}]})
    r = simulate(p, lambda a, s: Result(True, seconds=60 if a.stage == "slow" else 1))
    assert r.state.phase == "Failed" and r.state.reason == "Timeout"
    assert r.state.stages["cleanup"].phase == "Succeeded"


def test_budget_stops_new_stages_and_lets_running_finish() -> None:
    p = resolved({"budget": {"maxTokens": 1000}, "stages": [
        agent("a"), agent("b"), agent("c", ["a", "b"])]})
    r = simulate(p, lambda a, s: Result(True, tokens=Tokens(400, 200)))
    assert r.state.phase == "Failed" and r.state.reason == "BudgetExceeded"
    assert r.state.stages["a"].phase == r.state.stages["b"].phase == "Succeeded"
    assert r.state.stages["c"].phase == "Skipped"
    assert r.state.tokens.total == 1200
    assert len(r.events("BudgetExceeded")) == 1


def test_finally_runs_after_failure_and_its_failure_fails_pipeline() -> None:
    fin = [{"name": "notify", "run": {"image": "x", "command": ["x"]}}]
    r = simulate(resolved({"stages": [run_("a")], "finally": fin}),
                 lambda a, s: Result(a.stage == "a", "Error"))
    assert r.state.phase == "Failed" and r.state.reason == "FinallyFailed"
    r2 = simulate(resolved({"stages": [run_("a")], "finally": fin}),
                  lambda a, s: Result(a.stage != "a", "Error"))
    assert r2.state.stages["notify"].phase == "Succeeded"
    assert r2.state.phase == "Failed" and r2.state.reason == "StageFailed"


def test_provider_slots_queue_stages_waiting_for_provider() -> None:
    p = resolved({"stages": [agent(f"s{i}") for i in range(4)]})

    def slots(st: Any) -> dict[str, int]:
        used = sum(1 for s in st.stages.values() for i in s.instances if i.phase == "Running")
        return {"p": 1 - used}

    r = simulate(p, free_slots=slots)
    for st in r.states:
        assert sum(1 for s in st.stages.values() for i in s.instances
                   if i.phase == "Running") <= 1
    assert r.events("StageQueued")[0]["data"]["reason"] == "WaitingForProvider"
    assert r.state.phase == "Succeeded"


def test_cancel_stops_running_attempts_and_skips_finally() -> None:
    fin = [{"name": "notify", "run": {"image": "x", "command": ["x"]}}]
    p = resolved({"stages": [run_("a"), run_("b", ["a"])], "finally": fin})
    r = simulate(p, lambda a, s: Result(True, seconds=100), cancel_at=T0 + timedelta(seconds=5))
    assert r.state.phase == "Cancelled"
    assert [a.reason for a in r.of(StopAttempt) if isinstance(a, StopAttempt)] == ["Cancelled"]
    assert r.state.stages["notify"].phase == "Skipped"


def test_plan_is_pure_and_deterministic() -> None:
    p = resolved({"stages": LOOP})
    s0 = new_state(p)
    a = plan(p, s0, T0)
    b = plan(p, s0, T0)
    assert a.actions == b.actions
    assert s0.phase == "Pending"  # input untouched
    r1 = simulate(p, lambda a, s: Result(True, output={"bad": a.iteration < 3}))
    r2 = simulate(p, lambda a, s: Result(True, output={"bad": a.iteration < 3}))
    assert [x for _, x in r1.actions] == [x for _, x in r2.actions]


def test_terminal_state_plans_nothing() -> None:
    p = resolved({"stages": [run_("a")]})
    r = simulate(p, always_ok)
    again = plan(p, r.state, T0 + timedelta(hours=1))
    assert again.actions == [] and again.wake_at is None
    assert [a for a in r.of(FinishPipeline)][0].event()["type"] == "PipelineSucceeded"


def test_no_livelock_when_a_retry_is_pending_while_the_pipeline_fails() -> None:
    # Found by the property test: a Waiting retry must not keep waking a failing pipeline.
    p = resolved({"stages": [run_("a", retry={"limit": 1}), run_("b"), run_("c")]})
    r = simulate(p, lambda a, s: Result(a.stage == "c", "Error",
                                        seconds={"a": 1, "b": 1.2, "c": 5}[a.stage]))
    assert r.state.phase == "Failed"
    assert r.state.stages["a"].phase == "Skipped" or r.state.stages["a"].phase == "Failed"


def test_state_round_trips_without_payloads() -> None:
    import json

    from stagecoach.engine import dump_state, load_state

    fan = run_("fan", ["research"], forEach="params.xs")
    p = resolved({"params": {"xs": [1, 2]}, "stages": [*LOOP, fan]})
    r = simulate(p, lambda a, s: Result(True, output={"bad": a.iteration < 2, "i": a.index}))
    data = json.loads(json.dumps(dump_state(r.state)))
    assert "output" not in data["stages"]["research"]
    again = load_state(data)
    assert again.stages["research"].iteration == 2 and again.phase == r.state.phase
    assert dump_state(again) == dump_state(r.state)
    full = load_state(json.loads(json.dumps(dump_state(r.state, with_outputs=True))))
    assert full.stages["fan"].output == r.state.stages["fan"].output


def test_waiting_stage_status_carries_the_retry_reason_and_message() -> None:
    from stagecoach.engine import observe, to_status
    from stagecoach.engine.planner import AttemptOutcome

    p = resolved({"stages": [run_("a", retry={"limit": 1})]})
    first = plan(p, new_state(p), T0)
    after = observe(p, first.state, AttemptOutcome("a", 1, 1, ok=False, error_class="Error",
                                                   message="boom"), T0)
    again = plan(p, after.state, T0)
    [stage] = to_status(p, again.state).stages
    assert (stage.phase, stage.reason, stage.message) == ("Waiting", "Error", "boom")
    assert stage.next_attempt_at is not None


def test_dumped_state_holds_no_final_output_payload() -> None:
    """The final output can be as large as any output: the persisted state only says
    that there is one (a 2 MiB assembly once made <pipeline>-state too large)."""
    from stagecoach.engine import RunState, dump_state

    state = RunState(stages={}, final_output="x" * 2_000_000)
    assert dump_state(state)["final_output"] == ""
    assert dump_state(state, with_outputs=True)["final_output"] == state.final_output
    assert dump_state(RunState(stages={}))["final_output"] is None


def test_for_each_beyond_max_instances_fails_clearly_before_any_attempt() -> None:
    p = resolved({"params": {"xs": list(range(6))}, "limits": {"maxInstances": 5},
                  "stages": [run_("split", forEach="params.xs")]})
    r = simulate(p)
    split = r.state.stages["split"]
    assert (split.phase, split.reason) == ("Failed", "InvalidInput")
    assert "yielded 6 items; at most 5 may run (spec.limits.maxInstances)" in (
        split.message or "")
    assert starts(r) == [] and r.state.phase == "Failed"
    assert resolved({"stages": [run_("a")]}).max_instances == 5000  # the default
