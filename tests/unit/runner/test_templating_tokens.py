"""Prompt rendering (sandboxed, strict) and context-window fitting."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach_runner import AttemptError
from stagecoach_runner.templating import render
from stagecoach_runner.tokens import count_tokens, fit

VARS: dict[str, Any] = {
    "params": {"topic": "batteries"},
    "stages": {"scrape": {"output": {"items": [1, 2]}, "phase": "Succeeded"}},
    "item": None,
    "index": None,
    "loop": {"iteration": 2, "from": "verify", "reason": "r"},
}


def test_render_variables_and_filters() -> None:
    assert render("{{ params.topic }}", VARS, field="f") == "batteries"
    assert render("{{ stages.scrape.output.items | tojson }}", VARS, field="f") == "[1, 2]"
    assert render("{% if loop.iteration > 1 %}again{% endif %}", VARS, field="f") == "again"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ params.missing }}", "missing"),
        ("{{ nope }}", "nope"),
        ("{{ stages.other.output }}", "other"),
    ],
)
def test_missing_variable_is_invalid_input(template: str, needle: str) -> None:
    with pytest.raises(AttemptError) as err:
        render(template, VARS, field="agent.prompt")
    assert err.value.error_class == "InvalidInput"
    assert "agent.prompt" in err.value.message and needle in err.value.message


def test_sandbox_and_syntax_errors() -> None:
    with pytest.raises(AttemptError) as err:
        render("{{ params.__class__.__mro__ }}", VARS, field="f")
    assert err.value.error_class == "InvalidInput"
    with pytest.raises(AttemptError) as err:
        render("{% if %}", VARS, field="f")
    assert "syntax" in err.value.message


def _render(v: dict[str, Any]) -> tuple[str | None, str]:
    return "sys", render(
        "Summarise: {{ stages.scrape.output.text }} / {{ params.note }}", v, field="p"
    )


BIG: dict[str, Any] = {
    "params": {"note": "short note " * 5},
    "stages": {"scrape": {"output": {"text": "lorem ipsum dolor sit amet " * 400}}},
}


def test_fit_passes_when_small_or_unknown_window() -> None:
    fitted = fit(_render, BIG, model="gpt-4o", limit=None, overflow="fail")
    assert fitted.truncations == ()
    assert fitted.input_tokens > 1000


def test_fit_fail_raises_context_overflow() -> None:
    with pytest.raises(AttemptError) as err:
        fit(_render, BIG, model="gpt-4o", limit=500, overflow="fail")
    assert err.value.error_class == "ContextOverflow"
    assert "500" in err.value.message


def test_fit_truncate_shortens_the_largest_input() -> None:
    fitted = fit(_render, BIG, model="gpt-4o", limit=500, overflow="truncate")
    assert fitted.input_tokens <= 500
    assert [t.path for t in fitted.truncations] == ["stages.scrape.output.text"]
    assert "[truncated]" in fitted.prompt
    assert "short note" in fitted.prompt
    assert BIG["stages"]["scrape"]["output"]["text"].endswith("amet "), "input not mutated"


def test_fit_truncate_gives_up_when_template_alone_is_too_big() -> None:
    def huge(v: dict[str, Any]) -> tuple[str | None, str]:
        return None, "x " * 2000

    with pytest.raises(AttemptError) as err:
        fit(huge, BIG, model="gpt-4o", limit=100, overflow="truncate")
    assert err.value.error_class == "ContextOverflow"


def test_count_tokens_known_and_unknown_models() -> None:
    assert count_tokens("hello world", "gpt-4o") == 2
    assert count_tokens("hello world", "some-local-llama") == 2


def test_values_print_as_json_and_tojson_is_unchanged() -> None:
    v = {**VARS, "params": {"n": None, "yes": True, "no": False, "obj": {"b": None, "a": 1},
                            "xs": [1, None]}}
    assert render("{{ params.n }} {{ params.yes }} {{ params.no }}", v, field="f") == \
        "null true false"
    assert render("{{ params.obj }} {{ params.xs }}", v, field="f") == \
        '{"b": null, "a": 1} [1, null]'
    assert render("{{ params.obj | tojson }}", v, field="f") == '{"a": 1, "b": null}'
    assert render("{{ 3 }} {{ 'None' }} {{ 1.5 }}", v, field="f") == "3 None 1.5"
    assert render("{% if params.n is none %}empty{% endif %}", v, field="f") == "empty"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Title:\n\n{{ stages.scrape.output.title }}",
         "agent.prompt: line 3: undefined variable: stages.scrape.output.title "
         "(stages.scrape.output has no key 'title'; its keys: items)"),
        ("{{ stages.scrape.output['items'][5] }}",
         "agent.prompt: line 1: undefined variable: stages.scrape.output.items[5] "
         "(stages.scrape.output.items has 2 items)"),
        ("{{ loop.from }}\n{{ item.name }}",
         "agent.prompt: line 2: undefined variable: item.name (item is null)"),
    ],
)
def test_undefined_variable_names_its_full_path_and_line(template: str, expected: str) -> None:
    with pytest.raises(AttemptError) as err:
        render(template, VARS, field="agent.prompt")
    assert err.value.message == expected
