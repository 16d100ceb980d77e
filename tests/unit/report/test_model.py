"""Folding a trace into attempts, loops and token counts (``RunData.from_parts``)."""

from __future__ import annotations

from stagecoach.api import PipelineStatus
from stagecoach.report import RunData

from .sample import ATTEMPT_LABELS, EVENTS, OUTPUTS, STATUS, ev, ok


def _data() -> RunData:
    status = PipelineStatus.model_validate(STATUS)
    return RunData.from_parts(status, EVENTS, {**OUTPUTS}, "final")


def test_one_attempt_per_start_and_end() -> None:
    data = _data()
    assert [a.label for a in data.timeline()] == ATTEMPT_LABELS
    by_label = {a.label: a for a in data.attempts}
    qa1, qa2 = by_label["qa #1"], by_label["qa #2"]
    assert (qa1.outcome, qa1.error_class, qa1.seconds) == ("retrying", "MalformedOutput", 0.05)
    assert qa1.next_attempt_at == qa2.start
    assert qa2.outcome == "succeeded"
    assert all(a.ended for a in data.attempts)


def test_runner_events_attach_to_their_attempt() -> None:
    research = next(a for a in _data().attempts if a.label == "research #1")
    assert [e["type"] for e in research.details] == [
        "InputSnapshot", "ProviderRetry", "OutputSnapshot"]
    assert research.provider == "replay"


def test_outputs_attach_to_the_succeeded_attempt() -> None:
    data = _data()
    qa2 = next(a for a in data.attempts if a.label == "qa #2")
    assert qa2.output is not None and qa2.output.value["score"] == 0.5
    assert qa2.output.key == "outputs/qa/1.json"
    scrape = next(a for a in data.attempts if a.label == "scrape[1] #1")
    assert scrape.output is not None and scrape.output.value == {"url": "b"}


def test_loop_marks_the_new_iteration() -> None:
    (loop,) = _data().loops
    assert (loop.stage, loop.target, loop.iteration) == ("verify", "research", 2)


def test_tokens_per_stage_and_total() -> None:
    data = _data()
    by_stage = {k: (v.input, v.output) for k, v in data.tokens_by_stage().items()}
    assert by_stage == {"research": (220, 110), "scrape": (0, 0), "verify": (80, 20),
                        "qa": (60, 13)}  # scrape ran and used none: still a row
    assert (data.tokens_total().input, data.tokens_total().output) == (360, 143)


def test_without_status_phase_and_tokens_come_from_the_trace() -> None:
    data = RunData.from_parts(None, EVENTS, None, None)
    assert data.phase == "Succeeded"
    assert data.name == "demo"
    assert data.tokens_total().total == 503  # qa #1's rejected answer is counted (billed)
    assert data.stage_order == ["research", "scrape", "verify", "qa", "publish"]


def test_unended_attempt_runs_until_the_last_event() -> None:
    events = [ev(0, "StageStarted", "a", 1, 1), ev(700, "InputSnapshot", "a", 1, 1),
              ev(900, "StageReady", "b", 1)]
    running = RunData.from_parts(PipelineStatus(phase="Running"), events).attempts[0]
    assert running.outcome == "running" and not running.ended
    assert running.seconds == 0.9
    stopped = RunData.from_parts(PipelineStatus(phase="Cancelled"), events).attempts[0]
    assert stopped.outcome == "stopped"


def test_superseded_attempt_stops_at_the_back_edge() -> None:
    events = [ev(0, "StageStarted", "a", 1, 1),
              ev(300, "Decision", "b", 1, kind="route", action="goto", target="a"),
              ev(300, "StageStarted", "a", 2, 1), ok(500, "a", 2)]
    first = RunData.from_parts(PipelineStatus(phase="Running"), events).attempts[0]
    assert (first.outcome, first.seconds) == ("stopped", 0.3)


def test_tolerates_odd_events() -> None:
    events = [
        ev(0, "PipelineStarted"),
        {"type": "StageStarted", "stage": "x", "iteration": 1, "attempt": 1},  # no ts
        "not an event",
        ev(100, "BudgetExceeded", used=5, maxTokens=4),
        ev(200, "StageFailed", "a", 1, 1, errorClass="Timeout", willRetry=False,
           durationMs=150),  # no StageStarted
        ev(300, "StageFailed", "a", 1, None, errorClass="InvalidInput"),  # no attempt
    ]
    data = RunData.from_parts(None, events)  # type: ignore[arg-type]
    (a,) = data.attempts
    assert (a.outcome, a.error_class, a.seconds) == ("failed", "Timeout", 0.15)
    assert a.start.microsecond == 50_000
    assert any("without StageStarted" in w for w in data.warnings)


def test_outputs_as_stored_bytes_or_bad_keys() -> None:
    status = PipelineStatus.model_validate(STATUS)
    stored = {"outputs/qa/1.json": b'{"format":"json","value":{"score":1},"attempt":2}',
              "outputs/verify/2.json": b"not json",
              "elsewhere.txt": b"{}"}
    data = RunData.from_parts(status, EVENTS, stored)
    qa2 = next(a for a in data.attempts if a.label == "qa #2")
    assert qa2.output is not None and qa2.output.value == {"score": 1}
    assert data.outputs["outputs/verify/2.json"].format == "text"
    assert any("elsewhere.txt" in w for w in data.warnings)
