"""Table tests of the small pure decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from stagecoach.api import ResolvedStage, RetryPolicy, Route
from stagecoach.engine import policies
from stagecoach.engine.state import StageRun, Tokens


def _policy(**kw: object) -> RetryPolicy:
    return RetryPolicy.model_validate(kw)


@pytest.mark.parametrize(
    ("backoff", "attempt", "jitter", "seconds"),
    [
        ({"initial": "2s", "factor": 2, "max": "1m", "jitter": 0}, 1, 0.0, 2),
        ({"initial": "2s", "factor": 2, "max": "1m", "jitter": 0}, 3, 0.0, 8),
        ({"initial": "2s", "factor": 2, "max": "5s", "jitter": 0}, 4, 0.0, 5),
        ({"initial": "10s", "factor": 1, "max": "1m", "jitter": 0.2}, 2, 1.0, 12),
        ({"initial": "10s", "factor": 1, "max": "1m", "jitter": 0.2}, 2, -1.0, 8),
        ({"initial": "10s", "factor": 1, "max": "1m", "jitter": 0.2}, 2, 5.0, 12),
    ],
)
def test_backoff_delay(backoff: dict[str, object], attempt: int, jitter: float,
                       seconds: float) -> None:
    delay = policies.backoff_delay(_policy(backoff=backoff), attempt, jitter)
    assert delay == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("limit", "on", "cls", "attempt", "expected"),
    [
        (2, None, "Error", 1, True),
        (2, None, "Error", 3, False),
        (2, None, "InvalidInput", 1, False),
        (2, ["InvalidInput"], "InvalidInput", 1, False),
        (2, ["Timeout"], "Error", 1, False),
        (0, None, "Error", 1, False),
        (2, None, "ContextOverflow", 1, False),
    ],
)
def test_should_retry(limit: int, on: list[str] | None, cls: str, attempt: int,
                      expected: bool) -> None:
    kw: dict[str, object] = {"limit": limit}
    if on is not None:
        kw["on"] = on
    assert policies.should_retry(_policy(**kw), cls, attempt) is expected


def _stage(deps: tuple[str, ...]) -> ResolvedStage:
    return ResolvedStage(name="x", agent=None, run=None, depends_on=deps)


@pytest.mark.parametrize(
    ("phases", "on_failure", "verdict"),
    [
        ({}, {}, "ready"),
        ({"a": "Succeeded", "b": "Succeeded"}, {}, "ready"),
        ({"a": "Succeeded", "b": "Running"}, {}, "wait"),
        ({"a": "Skipped", "b": "Skipped"}, {}, "all_skipped"),
        ({"a": "Skipped", "b": "Succeeded"}, {}, "ready"),
        ({"a": "Failed", "b": "Succeeded"}, {}, "blocked"),
        ({"a": "Failed", "b": "Succeeded"}, {"a": "continue"}, "ready"),
        ({"a": "Waiting"}, {}, "wait"),
    ],
)
def test_dependency_verdict(phases: dict[str, str], on_failure: dict[str, str],
                            verdict: str) -> None:
    runs = {n: StageRun(n, phase=ph) for n, ph in phases.items()}
    assert policies.dependency_verdict(_stage(tuple(phases)), runs, on_failure) == verdict


@pytest.mark.parametrize(("max_it", "taken", "ok"), [(1, 0, False), (2, 0, True),
                                                     (2, 1, False), (3, 1, True)])
def test_loop_allowed(max_it: int, taken: int, ok: bool) -> None:
    route = Route(when="true", goto="a", max_iterations=max_it)
    assert policies.loop_allowed(route, taken) is ok


def test_budget_and_jitter() -> None:
    assert policies.over_budget(None, Tokens(10**9, 0)) is False
    assert policies.over_budget(100, Tokens(60, 40)) is True
    assert policies.over_budget(100, Tokens(60, 39)) is False
    values = [policies.hash_jitter(str(i)) for i in range(500)]
    assert all(-1 <= v <= 1 for v in values)
    assert min(values) < -0.8 and max(values) > 0.8
    assert policies.hash_jitter("k") == policies.hash_jitter("k")
