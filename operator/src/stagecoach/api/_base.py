"""Shared building blocks of the API models: the base model and the duration type.

Every API model derives from :class:`ApiModel` so the whole schema agrees on camelCase
field names, rejects unknown fields (a typo is an error, never silently ignored) and
carries a description on every field (the CRD generator copies them for ``kubectl
explain``). No side effects.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "DURATION_PATTERN",
    "POSITIVE_DURATION_PATTERN",
    "ApiModel",
    "Duration",
    "PositiveDuration",
    "format_duration",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ANY_PART = r"[0-9]+(\.[0-9]+)?(ms|s|m|h|d)"
_NONZERO_PART = r"([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)(ms|s|m|h|d)"
DURATION_PATTERN = rf"^({_ANY_PART})+$"
POSITIVE_DURATION_PATTERN = rf"^({_ANY_PART})*{_NONZERO_PART}({_ANY_PART})*$"
"""A duration with at least one non-zero part. RE2-compatible (no look-ahead), so the
API server checks it as cheaply as :data:`DURATION_PATTERN`."""


def parse_duration(value: object) -> timedelta:
    """Parse ``90s``, ``5m``, ``1h30m``, ``250ms`` (or a number of seconds) to a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '90s', '5m' or '1h30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '90s', '5m' or '1h30m'")
    text = value.strip()
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"invalid duration {value!r}: use a number with a unit (ms, s, m, h, d), "
            "e.g. '90s', '5m' or '1h30m'"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a timedelta the way users write it (``1h30m``, ``90s`` → ``1m30s``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A duration written as ``90s``, ``5m``, ``1h30m``; serialized back in that form."""


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than 0")
    if value < timedelta(milliseconds=1):
        raise ValueError("must be at least 1ms")
    return value


PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": POSITIVE_DURATION_PATTERN}),
]
"""A duration that must be greater than zero (timeouts: ``0s`` would fail at once)."""


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=False,
        # A model's validator is built on its first use, not at import: `validate`
        # never touches the attempt or status models, and starts ~80 ms sooner.
        defer_build=True,
    )

    def dump(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
