"""Cost and the stage cache in the engine: exact sums, budget.maxCost, the Cached reason."""

from __future__ import annotations

from typing import Any

from stagecoach.engine import Tokens, to_status

from .sim import Result, resolved, simulate


def agent(name: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": deps or [],
            "agent": {"provider": "p", "prompt": "hi"}, **extra}


def test_costs_add_up_exactly_per_stage_and_pipeline_and_status_rounds_once() -> None:
    p = resolved({"stages": [agent("a"), agent("b", ["a"], retry={"limit": 1})]})
    attempts: dict[str, int] = {}

    def behave(a: Any, s: Any) -> Result:
        attempts[a.stage] = attempts.get(a.stage, 0) + 1
        if a.stage == "b" and a.attempt == 1:  # a rejected answer is billed too
            return Result(False, "MalformedOutput", tokens=Tokens(10, 5), cost="0.0000001")
        return Result(True, tokens=Tokens(10, 5), cost="0.0000004")

    r = simulate(p, behave)
    assert r.state.phase == "Succeeded"
    assert r.state.stages["a"].cost == "0.0000004"
    assert r.state.stages["b"].cost == "0.0000005"  # failed attempt + the success
    assert r.state.cost == "0.0000009"  # exact: no float ever summed it
    status = to_status(p, r.state)
    assert status.cost == "0.000001"  # rounded to a micro-dollar, half up, once
    assert [s.cost for s in status.stages] == ["0", "0.000001"]
    failed = [e for e in r.events("StageFailed") if e["stage"] == "b"]
    assert failed and failed[0]["data"]["cost"] == "0.0000001"
    ok = [e for e in r.events("StageSucceeded") if e["stage"] == "a"]
    assert ok[0]["data"]["cost"] == "0.0000004"


def test_unpriced_attempts_have_no_cost_never_zero() -> None:
    r = simulate(resolved({"stages": [agent("a")]}),
                 lambda a, s: Result(True, tokens=Tokens(100, 50)))
    assert r.state.cost is None and r.state.stages["a"].cost is None
    assert to_status(resolved({"stages": [agent("a")]}), r.state).cost is None
    assert "cost" not in r.events("StageSucceeded")[0]["data"]


def test_max_cost_stops_new_stages_like_max_tokens() -> None:
    p = resolved({"budget": {"maxCost": "0.05"}, "stages": [
        agent("a"), agent("b"), agent("c", ["a", "b"])]})
    r = simulate(p, lambda a, s: Result(True, tokens=Tokens(1, 1), cost="0.03"))
    assert r.state.phase == "Failed" and r.state.reason == "BudgetExceeded"
    assert r.state.stages["a"].phase == r.state.stages["b"].phase == "Succeeded"
    assert r.state.stages["c"].phase == "Skipped"
    assert r.state.message == "cost budget used up: $0.06 of $0.05; no new stage starts"
    (ev,) = r.events("BudgetExceeded")
    assert ev["data"]["maxCost"] == "0.05" and ev["data"]["cost"] == "0.06"


def test_both_budgets_may_be_set_and_the_first_reached_ends_the_run() -> None:
    p = resolved({"budget": {"maxTokens": 10, "maxCost": "100"}, "stages": [
        agent("a"), agent("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(True, tokens=Tokens(8, 4), cost="0.01"))
    assert r.state.reason == "BudgetExceeded"
    assert r.state.message is not None and r.state.message.startswith("token budget used up")


def test_a_cache_hit_succeeds_with_reason_cached_and_a_stage_cached_event() -> None:
    facts = {"key": "ab" * 32, "from": {"pipeline": "earlier", "uid": "u1", "stage": "a"},
             "createdAt": "2026-12-01T00:00:00.000Z",
             "saved": {"tokens": {"input": 10, "output": 5}, "cost": "0.001"}}
    p = resolved({"stages": [agent("a"), agent("b", ["a"])]})
    r = simulate(p, lambda a, s: Result(True, output="x", cost="0", cached=facts)
                 if a.stage == "a" else Result(True, tokens=Tokens(1, 1), cost="0.002"))
    a = r.state.stages["a"]
    assert a.phase == "Succeeded" and a.reason == "Cached"
    assert a.message is not None and "earlier" in a.message
    assert a.tokens.total == 0 and a.cost == "0"
    (ev,) = r.events("StageCached")
    assert ev["stage"] == "a" and ev["data"]["from"]["pipeline"] == "earlier"
    assert ev["data"]["saved"]["cost"] == "0.001"
    assert not [e for e in r.events("StageSucceeded") if e["stage"] == "a"]
    assert to_status(p, r.state).stages[0].reason == "Cached"
    assert r.state.stages["b"].reason is None


def test_a_foreach_is_cached_only_when_every_instance_was() -> None:
    facts = {"key": "cd" * 32, "from": {"pipeline": "x"}, "createdAt": "t", "saved": {}}
    p = resolved({"params": {"items": [1, 2]}, "stages": [
        {**agent("a"), "forEach": "params.items"}]})
    r = simulate(p, lambda a, s: Result(True, output=a.index,
                                        cached=facts if a.index == 0 else None))
    assert r.state.stages["a"].phase == "Succeeded"
    assert r.state.stages["a"].reason is None
    assert r.state.stages["a"].instances[0].reason == "Cached"
