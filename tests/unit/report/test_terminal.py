"""The plain-text report: bars per attempt, decisions, retries, tokens, output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stagecoach.report import load_run, render_terminal, summary_text

from .sample import ATTEMPT_LABELS, EVENTS, STATUS, ev, ts

MARKS = "✓✗▸◼"


def _bars(text: str) -> dict[str, str]:
    """Attempt label → the bar between the two │ of its timeline line."""
    out = {}
    for line in text.splitlines():
        if line.count("│") == 2 and any(m in line for m in MARKS):
            label, bar, _ = line.split("│")
            out[label.strip()] = bar
    return out


def test_one_bar_per_attempt(run_dir: Path) -> None:
    text = render_terminal(load_run(run_dir), width=100)
    bars = _bars(text)
    assert list(bars) == ATTEMPT_LABELS
    assert "✗┄┄" in bars["qa #1"]
    assert bars["qa #2"].rstrip().endswith("✓")
    assert bars["research #1"].startswith("━━")  # the first attempt starts at column 0
    assert all(len(line) <= 100 for line in text.splitlines()
               if line.count("│") == 2 or "┬" in line)


def test_bars_share_one_time_axis(run_dir: Path) -> None:
    bars = _bars(render_terminal(load_run(run_dir), width=100))
    first = bars["research #1"].index("✓")
    second = bars["research it2 #1"].index("✓")
    last = bars["qa #2"].index("✓")
    assert first < second < last
    assert last == len(bars["qa #2"]) - 1  # the run's last moment is the axis' end


def test_loop_skipped_and_legend(run_dir: Path) -> None:
    text = render_terminal(load_run(run_dir))
    assert "↺ verify → research: iteration 2" in text
    publish = next(line for line in text.splitlines() if line.startswith("  publish "))
    assert "skipped: when: stages.qa.output.score >= 0.8 ○│" in publish
    assert "┄ backoff" in text


def test_decisions_show_the_values_read(run_dir: Path) -> None:
    text = render_terminal(load_run(run_dir))
    section = text.split("\nDecisions\n")[1].split("\nErrors and retries\n")[0]
    assert "verify  route: stages.verify.output.failed_ratio > 0.2  = true  ⇒ goto research" \
        in section
    assert "read stages.verify.output.failed_ratio = 0.5" in section
    assert "read stages.research.output.sources = <list of 2 entries, 10 bytes>" in section
    assert "⇒ skip" in section


def test_errors_and_retries(run_dir: Path) -> None:
    text = render_terminal(load_run(run_dir))
    section = text.split("\nErrors and retries\n")[1].split("\nTokens")[0]
    assert "qa #1  MalformedOutput (will retry at +1.65s)" in section
    assert "the answer is not valid JSON" in section
    assert "research #1  provider replay answered 429; retried after 500ms" in section


def test_tokens_and_output(run_dir: Path) -> None:
    text = render_terminal(load_run(run_dir))
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    assert total.split() == ["total", "360", "143", "503"]
    assert "budget 10,000 tokens, 5.0% used" in text
    assert "assembled by the output template from qa (iteration 1), 40 bytes" in text
    assert "┆ Report <script>alert(1)</script> done" in text
    assert text.rstrip().endswith("Result: Succeeded (Succeeded)")


def test_partial_run_without_status(make_run: Callable[..., Path]) -> None:
    text = summary_text(make_run(status=None, events=EVENTS[:12], final=None), width=90)
    bars = _bars(text)
    assert bars["scrape[1] #1"].rstrip().endswith("▸")
    assert "running" in text
    assert "no output assembled (pipeline Running)" in text
    assert "status.json is missing" in text


def test_cancelled_run(make_run: Callable[..., Path]) -> None:
    events = [*EVENTS[:12], ev(850, "PipelineFailed", phase="Cancelled", reason="Cancelled",
                                  message="pipeline cancelled")]
    status = {**STATUS, "phase": "Cancelled", "reason": "Cancelled",
              "message": "pipeline cancelled", "finishedAt": ts(850)}
    text = summary_text(make_run(status=status, events=events, final=None))
    assert _bars(text)["scrape[1] #1"].rstrip().endswith("◼")
    assert text.rstrip().endswith("Result: Cancelled (Cancelled): pipeline cancelled")


def test_failed_run(make_run: Callable[..., Path]) -> None:
    events = [*EVENTS[:3],
              ev(40, "StageFailed", "research", 1, 1, errorClass="ProviderUnavailable",
                 message="no cassette entry for research", willRetry=False, durationMs=40),
              ev(40, "PipelineFailed", phase="Failed", reason="StageFailed",
                 message="stage research failed (ProviderUnavailable)")]
    text = summary_text(make_run(status=None, events=events, final=None, outputs={}))
    assert "research #1  ProviderUnavailable (no retry)" in text
    assert _bars(text)["research #1"].rstrip().endswith("✗")
    assert "Result: Failed (StageFailed): stage research failed" in text


def test_empty_run(tmp_path: Path) -> None:
    text = summary_text(tmp_path)
    assert "(no stage attempts recorded)" in text
    assert "Decisions\n  (none)" in text
    assert "Warnings" in text
