"""How values are named in messages: in the manifest's words (JSON/YAML), not Python's.

A user who wrote ``timeout: [1]`` or ``when: "'yes'"`` should read "got a list" or "got a
string", never ``list``, ``str`` or ``NoneType``; a value is shown as ``true`` or ``null``,
never ``True`` or ``None``. Used by the manifest reader and the engine's checks alike.
No side effects.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

__all__ = ["did_you_mean", "show_value", "type_word"]


def type_word(value: Any) -> str:
    """``"a string"``, ``"an integer"``, ``"a list"``, ``"an object"``, ``"null"``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, timedelta):
        return "a duration"
    if isinstance(value, datetime):
        return "a timestamp"
    return "a value of another type"


def show_value(value: Any, limit: int = 60) -> str | None:
    """A scalar as the user would write it (``true``, ``null``, ``5``, ``'x'``); None for
    lists, objects and anything longer than ``limit`` characters."""
    if isinstance(value, str):
        shown = repr(value)
    elif value is None or isinstance(value, bool | int | float):
        shown = json.dumps(value)
    else:
        return None
    return shown if len(shown) <= limit else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'tojson'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
