"""The compact JSON Schema validator."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach_runner.schema import SchemaError, first_error, validate

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sources", "score"],
    "additionalProperties": False,
    "properties": {
        "sources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string", "pattern": "^https?://"}},
            },
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "kind": {"enum": ["a", "b"]},
        "name": {"type": "string", "minLength": 2, "maxLength": 4},
        "count": {"type": "integer"},
        "tags": {"type": "array", "uniqueItems": True, "maxItems": 2},
        "maybe": {"type": ["string", "null"]},
    },
}


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({"sources": [{"url": "https://a"}], "score": 0.5}, []),
        ({"sources": [{"url": "https://a"}], "score": 1, "count": 3, "maybe": None}, []),
        ({"score": 0.5}, ["$: missing required property 'sources'"]),
        ([], ["$: expected object, got array"]),
        ({"sources": [], "score": 0.5}, ["$.sources: needs at least 1 items, has 0"]),
        (
            {"sources": [{"url": 1}], "score": 0.5},
            ["$.sources[0].url: expected string, got integer"],
        ),
        (
            {"sources": [{"url": "ftp://x"}], "score": 0.5},
            ["$.sources[0].url: does not match pattern '^https?://'"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 2},
            ["$.score: 2 is greater than the maximum 1"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": -1},
            ["$.score: -1 is less than the minimum 0"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": True},
            ["$.score: expected number, got boolean"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "kind": "c"},
            ['$.kind: "c" is not one of ["a", "b"]'],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "name": "x"},
            ["$.name: shorter than 2 characters"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "name": "xxxxx"},
            ["$.name: longer than 4 characters"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "count": 1.5},
            ["$.count: expected integer, got number"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "tags": [1, 1]},
            ["$.tags: items must be unique"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "tags": [1, 2, 3]},
            ["$.tags: allows at most 2 items, has 3"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "extra": 1},
            ["$: unexpected property 'extra'"],
        ),
        (
            {"sources": [{"url": "http://a"}], "score": 0, "maybe": 3},
            ["$.maybe: expected string or null, got integer"],
        ),
    ],
)
def test_validate(instance: Any, expected: list[str]) -> None:
    assert validate(instance, SCHEMA) == expected


def test_combinators_and_misc() -> None:
    assert validate(3, {"anyOf": [{"type": "string"}, {"type": "integer"}]}) == []
    assert validate(3.5, {"anyOf": [{"type": "string"}, {"type": "integer"}]}) != []
    assert validate(3, {"oneOf": [{"type": "number"}, {"type": "integer"}]}) != []
    assert validate(3, {"allOf": [{"minimum": 4}]}) == ["$: 3 is less than the minimum 4"]
    assert validate("x", {"not": {"type": "string"}}) != []
    assert validate(1, {"const": 1}) == []
    assert validate(5, {"exclusiveMaximum": 5}) == ["$: 5 must be less than 5"]
    assert validate({"a": 1}, {"additionalProperties": {"type": "string"}}) == [
        "$.a: expected string, got integer"
    ]
    assert validate({"a b": 1}, {"properties": {"a b": {"type": "string"}}}) == [
        "$['a b']: expected string, got integer"
    ]
    assert validate(1, {"title": "ignored", "description": "x", "$schema": "y"}) == []
    assert validate(1.0, {"type": "integer"}) == []


def test_first_error_and_bad_schema() -> None:
    assert first_error({}, {"required": ["a", "b"]}, limit=1) == (
        "$: missing required property 'a' (and 1 more)"
    )
    assert first_error({"a": 1}, {"required": ["a"]}) is None
    with pytest.raises(SchemaError):
        validate(1, {"type": "bogus"})
    with pytest.raises(SchemaError):
        validate("x", {"pattern": "("})
