"""Reports of runs that did not simply succeed: stopped attempts, retries that never
happened, stages with nothing to run, exhausted loops, kept logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stagecoach.api import PipelineStatus
from stagecoach.report import RunData, load_run, render_html, render_terminal, write_report

from .sample import ev, ok
from .test_page import check

START = {**ev(0, "PipelineStarted"), "data": {"stages": ["a", "split"], "finally": []}}


def test_a_cancelled_attempt_ends_at_its_stage_failed_event() -> None:
    events = [START, ev(0, "StageStarted", "a", 1, 1),
              ev(900, "StageFailed", "a", 1, 1, errorClass="Cancelled",
                 message="attempt 1 of a stopped: pipeline cancelled", willRetry=False,
                 durationMs=900),
              ev(2000, "StageReady", "split", 1)]
    # The status still says Running: the outcome comes from the event, not inferred.
    [a] = RunData.from_parts(PipelineStatus(phase="Running"), events).attempts
    assert (a.outcome, a.error_class, a.ended, a.seconds) == ("stopped", "Cancelled", True, 0.9)
    text = render_terminal(RunData.from_parts(PipelineStatus(phase="Running"), events))
    bar = next(line for line in text.splitlines() if line.startswith("  a #1"))
    assert "◼" in bar and bar.rstrip().endswith("Cancelled")


def test_a_retry_the_pipeline_end_cancelled_is_not_counted_as_retried() -> None:
    events = [START, ev(0, "StageStarted", "a", 1, 1),
              ev(100, "StageFailed", "a", 1, 1, errorClass="Error", message="boom",
                 willRetry=True, nextAttemptAt="2026-11-24T10:00:30.000Z", durationMs=100),
              ev(1000, "StageFailed", "a", 1, None, errorClass="Timeout", willRetry=False,
                 message="pipeline exceeded its timeout of 1s; attempt 1 of a had failed "
                         "(Error: boom) and its retry did not start"),
              ev(1000, "PipelineFailed", phase="Failed", reason="Timeout",
                 message="pipeline exceeded its timeout of 1s")]
    data = RunData.from_parts(None, events)
    [a] = data.attempts
    assert (a.outcome, a.error_class) == ("failed", "Error")
    text = render_terminal(data)
    assert "1 attempts, 0 retried" in text
    assert "retry did not start" in text


def test_a_for_each_over_an_empty_list_has_a_row_and_a_token_line(
        make_run: Callable[..., Path]) -> None:
    events = [START, ev(0, "StageReady", "split", 1, instances=0),
              ev(0, "StageSucceeded", "split", 1, None, durationMs=0,
                 tokens={"input": 0, "output": 0}, outputRef=None, instances=0),
              ev(0, "StageStarted", "a", 1, 1), ok(500, "a", 1, tokens=(3, 4), dur=500),
              ev(500, "PipelineSucceeded", phase="Succeeded", reason="Succeeded")]
    run = make_run(events=events, status=None, outputs={}, final=None)
    text = render_terminal(load_run(run))
    row = next(line for line in text.splitlines() if line.startswith("  split "))
    assert "✓ succeeded: nothing to run" in row
    tokens = text.split("\nTokens")[1]
    assert any(line.split()[:4] == ["split", "0", "0", "0"] for line in tokens.splitlines())
    html = render_html(load_run(run))
    check(html)
    assert "nothing to run (forEach over an empty list)" in html


def test_an_exhausted_route_that_continues_is_a_note_not_an_error(
        make_run: Callable[..., Path]) -> None:
    events = [START, ev(0, "Decision", "a", 3, kind="route", expression="true", values={},
                        result=True, action="continue", target="a",
                        note="back-edge a -> a used all 3 iterations")]
    run = make_run(events=events, status=None, outputs={}, final=None)
    text = render_terminal(load_run(run))
    assert "note: back-edge a -> a used all 3 iterations" in text
    assert "error:" not in text
    html = render_html(load_run(run))
    assert 'class="note err"' not in html and "used all 3 iterations" in html


def test_a_stage_without_output_in_the_assembly_never_reads_iteration_none(
        make_run: Callable[..., Path]) -> None:
    events = [START, ev(0, "StageSkipped", "a", 1, reason="when: false"),
              ev(0, "OutputAssembled", stages=["a"], template=True, bytes=4,
                 iterations={"a": None}),
              ev(0, "PipelineSucceeded", phase="Succeeded", reason="Succeeded")]
    run = make_run(events=events, status=None, outputs={}, final="null")
    for text in (render_terminal(load_run(run)), render_html(load_run(run))):
        assert "iteration None" not in text
        assert "a (no output)" in text.replace("<b>", "").replace("</b>", "")


def test_kept_logs_are_linked_relative_to_the_report(make_run: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    events = [START, ev(0, "StageStarted", "a", 1, 1), ok(100, "a", 1, dur=100),
              ev(0, "StageStarted", "split", 1, 1, 2), ok(100, "split", 1, 1, 2, dur=100)]
    run = make_run(events=events, status=None, outputs={}, final=None)
    for name in ("a/1-1.stdout", "a/1-1.stderr", "split/1-2-1.stdout"):
        (run / "logs" / name).parent.mkdir(parents=True, exist_ok=True)
        (run / "logs" / name).write_text("hello\n")
    data = load_run(run)
    by_label = {a.label: a for a in data.attempts}
    assert by_label["a #1"].logs == {"stdout": "logs/a/1-1.stdout",
                                     "stderr": "logs/a/1-1.stderr"}
    assert by_label["split[2] #1"].logs == {"stdout": "logs/split/1-2-1.stdout"}
    write_report(run, run / "report.html")
    html = (run / "report.html").read_text()
    check(html)
    assert 'href="logs/a/1-1.stdout"' in html and 'href="logs/split/1-2-1.stdout"' in html
    elsewhere = tmp_path / "out" / "r.html"
    write_report(run, elsewhere)
    assert f'href="../{run.name}/logs/a/1-1.stderr"' in elsewhere.read_text()
