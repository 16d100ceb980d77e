"""CEL and Jinja2 evaluation, syntax checks and recorded reads."""

from __future__ import annotations

import pytest
from stagecoach.engine.expressions import (
    ExpressionError,
    check_cel,
    check_template,
    evaluate_cel,
    render_template,
)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("stages.a.output.x > 1", None),
        ("loop.iteration < 3", None),
        ("stages['fact-check'].output.ok", None),
        ("stages.a.output.all(s, s > 1)", None),
        ("a >", "Syntax error"),
        ("foo == 1", "unknown variable 'foo'"),
        ("", "empty expression"),
    ],
)
def test_check_cel(source: str, error: str | None) -> None:
    result = check_cel(source)
    assert (result is None) if error is None else (error in (result or ""))


def test_evaluate_records_values_read() -> None:
    res = evaluate_cel("stages.verify.output.failed_ratio > 0.2 && params.n == 2",
                       {"stages": {"verify": {"output": {"failed_ratio": 0.5}}},
                        "params": {"n": 2}})
    assert res.value is True
    assert res.reads == {"stages.verify.output.failed_ratio": 0.5, "params.n": 2}


def test_runtime_errors_are_errors_not_false() -> None:
    with pytest.raises(ExpressionError) as exc:
        evaluate_cel("stages.a.output.score > 1", {"stages": {"a": {"output": None}}})
    assert "stages.a.output" in str(exc.value)
    with pytest.raises(ExpressionError, match="no such key"):
        evaluate_cel("params.missing", {"params": {}})


def test_templates_check_render_and_record_stage_reads() -> None:
    assert check_template("{{ stages.a.output | tojson }}") is None
    assert "syntax" in (check_template("{% if %}") or "")
    assert "unknown variable 'x'" in (check_template("{{ x }}") or "")
    text, read = render_template("{{ stages.a.output }}-{{ params.t }}",
                                 {"stages": {"a": {"output": 1}, "b": {}}, "params": {"t": 2}})
    assert (text, read) == ("1-2", ["a"])
    with pytest.raises(ExpressionError, match="undefined"):
        render_template("{{ params.nope }}", {"params": {}})


def test_sandbox_blocks_unsafe_attribute_access() -> None:
    with pytest.raises(ExpressionError):
        render_template("{{ params.__class__.__mro__ }}", {"params": {}})
