"""How rendered templates print values and explain failures (runner and engine alike)."""

from __future__ import annotations

import pytest
from stagecoach.api.rendering import as_text
from stagecoach.engine import ExpressionError, render_template


def test_as_text_prints_json_words() -> None:
    assert [as_text(v) for v in (None, True, False, 3, "x", [None], {"a": False})] == [
        "null", "true", "false", 3, "x", "[null]", '{"a": false}']


def test_the_output_assembly_prints_null_not_none() -> None:
    text, read = render_template("{{ stages.a.output }}/{{ stages.b.output }}",
                                 {"stages": {"a": {"output": None}, "b": {"output": [True]}}})
    assert (text, read) == ("null/[true]", ["a", "b"])


def test_the_output_assembly_names_the_undefined_path_and_line() -> None:
    with pytest.raises(ExpressionError) as err:
        render_template("# Report\n{{ stages.a.output.title }}",
                        {"stages": {"a": {"output": {"summary": "s"}}}})
    assert str(err.value) == ("line 2: undefined variable: stages.a.output.title "
                              "(stages.a.output has no key 'title'; its keys: summary)")
