"""CEL and Jinja2 evaluation, syntax checks and recorded reads."""

from __future__ import annotations

import cel
import pytest
from stagecoach.engine.expressions import (
    CEL_FUNCTIONS,
    ExpressionError,
    cel_stage_refs,
    check_cel,
    check_template,
    evaluate_cel,
    render_template,
    template_error,
    template_stage_refs,
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


@pytest.mark.parametrize(
    ("source", "expect", "error"),
    [
        ("size2(params.x) > 1", None, "unknown CEL function 'size2' (did you mean 'size'?)"),
        ("stages.a.output.foo()", None, "unknown CEL function 'foo'"),
        ("params.s.lowerAscii() == 'a'", None, "CEL function 'lowerAscii' is not available"),
        ("max(params.a, params.b) > 1", None, "write a > b ? a : b"),
        ("params.s.startsWith('a') && params.l.size() > 0 && params.s.matches('x')",
         "bool", None),
        ("has(params.x) && type(params.x) == string", "bool", None),
        ("duration('1s') < duration('2s')", "bool", None),
        ("'yes'", "bool", "must be a boolean condition, got a string ('yes')"),
        ("1", "bool", "must be a boolean condition, got an integer (1)"),
        ("1.5", "bool", "must be a boolean condition, got a number (1.5)"),
        ("null", "bool", "must be a boolean condition, got null"),
        ("{'a': 1}", "bool", "must be a boolean condition, got an object"),
        ("true", "bool", None),
        ("1 < 2", "bool", None),
        ("1 / 0 > 1", "bool", "always fails: division by zero"),
        ("[1, 2]", "list", None),
        ("'abc'", "list", "must yield a list, got a string ('abc')"),
        ("params.x", "bool", None),  # type known only at run time
        ("stages.a.output.items", "list", None),
        ("(" * 120 + "true" + ")" * 120, "bool", "nested too deeply"),
        ("params.x >", None, "Syntax error: mismatched input '<EOF>'"),
    ],
)
def test_check_cel_finds_what_fails_on_every_evaluation(
        source: str, expect: str | None, error: str | None) -> None:
    result = check_cel(source, expect)
    assert (result is None) if error is None else (error in (result or "")), result


SAMPLES = {
    "size": "size('ab') == 2", "int": "int(1.0) == 1", "uint": "uint(1) == 1u",
    "double": "double(1) == 1.0", "string": "string(1) == '1'", "bytes": "bytes('a') == b'a'",
    "dyn": "dyn(1) == 1", "type": "type(1) == int", "duration": "duration('1s') > duration('0s')",
    "timestamp": "timestamp('2020-01-01T00:00:00Z') < timestamp('2021-01-01T00:00:00Z')",
    "contains": "'ab'.contains('a')", "startsWith": "'ab'.startsWith('a')",
    "endsWith": "'ab'.endsWith('b')", "matches": "'ab'.matches('a.')",
}
TIME = "timestamp('2020-03-04T05:06:07Z')"


def test_every_listed_cel_function_exists_in_the_evaluator() -> None:
    """CEL_FUNCTIONS must match the library: an upgrade that drops one fails here."""
    for name in CEL_FUNCTIONS:
        source = SAMPLES.get(name, f"{TIME}.{name}() >= 0")
        assert name in cel.compile(source).functions(), name
        assert cel.evaluate(source, {}) is True, name


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("{{ x | tojsn }}", "unknown Jinja filter 'tojsn' (did you mean 'tojson'?)", 1),
        ("a\nb\n{% if params.n is evn %}x{% endif %}",
         "unknown Jinja test 'evn' (did you mean 'even'?)", 3),
        ("{{ params.l | map('uper') | join }}", "unknown Jinja filter 'uper'", 1),
        ("{{ params.l | select('od') | list }}", "unknown Jinja test 'od'", 1),
        ("{% filter uper %}x{% endfilter %}", "unknown Jinja filter 'uper'", 1),
        ("\n{% include 'x' %}", "{% include %} is not supported", 2),
        ("{% import 'x' as y %}", "{% import %} is not supported", 1),
        ("{% from 'x' import y %}", "{% from %} is not supported", 1),
        ("{% extends 'x' %}", "{% extends %} is not supported", 1),
        ("x\n{{ params.x ", "template syntax error", 2),
        ("{% for loop in params.l %}{% endfor %}", "special loop variable", 1),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply", None),
    ],
)
def test_template_error_names_the_problem_and_its_line(
        source: str, message: str, line: int | None) -> None:
    err = template_error(source)
    assert err is not None and message in err.message and err.line == line, err


def test_valid_templates_have_no_error() -> None:
    for source in ("{{ stages.a.output | tojson }}", "{% for x in params.l %}{{ loop.index }}"
                   "{% endfor %}", "{% if params.n is even %}{{ params.l | map('upper') | join }}"
                   "{% endif %}", "{% set y = 1 %}{{ y }}", "{{ params.l | map(attribute='x') }}"):
        assert template_error(source) is None, source


def test_rendering_a_bad_template_is_an_expression_error_not_a_crash() -> None:
    for source in ("{{ 1 | tojsn }}", "{% if 1 is evn %}x{% endif %}", "{% include 'x' %}",
                   "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"):
        with pytest.raises(ExpressionError):
            render_template(source, {"params": {}})


def test_stage_references_ignore_string_literals() -> None:
    assert cel_stage_refs("stages.a.output == 'stages.b' && stages['fact-check'].ok "
                          "&& xstages.c && \"stages.d\" != ''") == {"a", "fact-check"}
    assert template_stage_refs("{{ stages.a.output }}{{ stages['b-c'].x }}{{ 'stages.z' }}"
                               "{% if stages.d %}{% endif %}") == {"a", "b-c", "d"}
    assert template_stage_refs("{{ (") == set()


@pytest.mark.parametrize("source", [
    "plain text", "{{ params.topic }} and {{ stages.a.output | tojson }}",
    "{% if params.n is even %}{{ x }}{% else %}{{ y.z }}{% endif %}",
    "{{ params.l | map(attribute='x') | join(sep) }}", "{{ [a, b] | length }} {{ c[d] }}",
    "{% for x in params.l %}{{ x }}{{ loop.index }}{{ q }}{% endfor %}{{ x }}",
    "{% set y = 1 %}{{ y }}{{ z }}", "{% with w = 1 %}{{ w }}{% endwith %}{{ w }}",
    "{% macro m(a) %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}",
    "{% set ns = namespace(k=0) %}{% set ns.k = 1 %}{{ ns.k }}",
    "{% filter upper %}{{ f }}{% endfilter %}", "{{ g if h else i }}",
])
def test_undeclared_names_agree_with_jinja(source: str) -> None:
    """The fast path for prompts that declare nothing gives Jinja2's own answer."""
    from jinja2 import meta
    from stagecoach.engine.expressions import _undeclared, template_env

    ast = template_env().parse(source)
    assert _undeclared(ast) == meta.find_undeclared_variables(ast)
