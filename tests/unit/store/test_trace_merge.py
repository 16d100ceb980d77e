"""Reading the trace exactly once although it is written at least once."""

from __future__ import annotations

from stagecoach.store import merge_trace
from stagecoach.store.trace import with_outbox


def ev(ts: str, type_: str, stage: str | None = "a", attempt: int | None = 1,
       **data: object) -> dict[str, object]:
    return {"ts": ts, "type": type_, "stage": stage, "iteration": 1, "attempt": attempt,
            "index": None, "data": data}


def test_events_written_twice_are_read_once() -> None:
    # Operator 1 appended, then lost the state write to operator 2, which planned the
    # same step again; a restarted operator repeats what it had not saved.
    first = [ev("1", "PipelineStarted", None, None), ev("2", "StageStarted"),
             ev("5", "StageSucceeded", durationMs=10)]
    second = [ev("3", "PipelineStarted", None, None), ev("4", "StageStarted"),
              ev("6", "StageSucceeded", durationMs=11), ev("7", "StageStarted", "b")]
    merged = merge_trace({"operator": first + second})
    assert [(e["ts"], e["type"], e["stage"]) for e in merged] == [
        ("1", "PipelineStarted", None), ("2", "StageStarted", "a"),
        ("5", "StageSucceeded", "a"), ("7", "StageStarted", "b")]


def test_events_that_may_repeat_are_all_kept() -> None:
    retries = [ev("1", "ProviderRetry", status=429), ev("2", "ProviderRetry", status=429),
               ev("3", "Decision", expression="x"), ev("4", "Decision", expression="x")]
    assert len(merge_trace({"runner": retries})) == 4
    attempts = [ev("1", "StageStarted", attempt=1), ev("2", "StageStarted", attempt=2)]
    assert len(merge_trace({"operator": attempts})) == 2


def test_readers_merge_the_outbox_by_time_and_count_a_copy_once() -> None:
    a = {"ts": "2026-01-01T00:00:01Z", "type": "Decision", "stage": "v"}
    b = {"ts": "2026-01-01T00:00:02Z", "type": "StageStarted", "stage": "w"}
    c = {"ts": "2026-01-01T00:00:00Z", "type": "StageReady", "stage": "w"}
    assert with_outbox([a], []) == [a]
    assert with_outbox([a, b], [b, c]) == [c, a, b]
    assert with_outbox([a], [dict(a)]) == [a]  # a re-appended Decision is not doubled
