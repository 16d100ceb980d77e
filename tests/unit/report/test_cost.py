"""Cost in the reports: a column and total when priced, tokens only when not, the cache's
"saved" figure, and the USD budget."""

from __future__ import annotations

from decimal import Decimal

from stagecoach.api import PipelineStatus
from stagecoach.report import RunData, render_html, render_terminal

from .sample import ev

SAVED = {"tokens": {"input": 300, "output": 100}, "cost": "0.004"}


def _run(priced: bool = True, status_cost: str | None = None,
         max_cost: str | None = None) -> RunData:
    cost = {"cost": "0.0012345"} if priced else {}
    events = [
        {**ev(0, "PipelineStarted"), "data": {"stages": ["a", "b", "c"], "finally": []}},
        ev(1, "StageStarted", "a", 1, 1),
        ev(5, "StageFailed", "a", 1, 1, errorClass="MalformedOutput", message="bad",
           willRetry=True, tokens={"input": 10, "output": 5}, **cost),
        ev(6, "StageStarted", "a", 1, 2),
        ev(9, "StageSucceeded", "a", 1, 2, tokens={"input": 10, "output": 5}, **cost),
        ev(10, "StageStarted", "b", 1, 1),
        ev(11, "StageCached", "b", 1, 1, tokens={"input": 0, "output": 0},
           cost="0" if priced else None, key="ab" * 32, createdAt="2026-12-01T00:00:00.000Z",
           **{"from": {"pipeline": "earlier", "uid": "u-0", "stage": "b"}}, saved=SAVED),
        ev(12, "StageStarted", "c", 1, 1),
        ev(13, "StageSucceeded", "c", 1, 1, tokens={"input": 7, "output": 3}),  # unpriced
        ev(14, "PipelineSucceeded", phase="Succeeded"),
    ]
    status = PipelineStatus(phase="Succeeded", cost=status_cost)
    return RunData.from_parts(status, events, max_cost=max_cost)


def test_costs_fold_per_attempt_and_stage_and_the_cache_is_a_success() -> None:
    data = _run()
    assert data.cost_by_stage() == {"a": Decimal("0.002469"), "b": Decimal(0), "c": None}
    assert data.cost_total() == Decimal("0.002469")
    assert data.unpriced_tokens() == 10
    hits, tokens, cost = data.saved()
    assert (hits, tokens.total, cost) == (1, 400, Decimal("0.004"))
    b = next(a for a in data.attempts if a.stage == "b")
    assert b.outcome == "succeeded" and b.cached is not None


def test_the_status_figure_wins_over_the_trace_sum() -> None:
    assert _run(status_cost="0.5").cost_total() == Decimal("0.5")


def test_terminal_report_shows_cost_saving_and_budget() -> None:
    text = render_terminal(_run(max_cost="1.00"))
    assert "cost $0.002469" in text  # header
    assert "$0.002469" in text.split("Tokens", 1)[1]  # the total row
    assert "(cache)" in text
    assert "saved by the stage cache: 1 attempt, 400 tokens, $0.004" in text
    assert "10 tokens of models without pricing are not in the cost" in text
    assert "budget $1.00, 0.2% used" in text


def test_no_price_no_cost_column_and_never_zero_dollars() -> None:
    data = _run(priced=False)
    assert data.cost_total() is None
    text = render_terminal(data)
    header = next(line for line in text.splitlines() if line.startswith("Tokens"))
    assert "cost" not in header
    assert "$0" not in text.replace("$0.004", "")  # only the saving the entry recorded
    html = render_html(data)
    assert ">Cost<" not in html and "$0<" not in html


def test_html_report_has_the_cost_column_and_saving() -> None:
    html = render_html(_run())
    assert '<th class="num">cost</th>' in html and "$0.002469" in html
    assert "saved by the stage cache: 1 attempt" in html
    assert "answered by the stage cache from <b>earlier</b>" in html
