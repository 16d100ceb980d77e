"""How a rendered Jinja2 template shows values and explains why it failed.

Shared by the two places that render at run time, which cannot import each other: the
runner (prompts, :mod:`stagecoach_runner.templating`) and the engine (the pipeline's
output assembly, :func:`stagecoach.engine.render_template`). Values print in the words
of the outputs they come from, JSON (``null``, ``true``, ``{"a": 1}``), never Python's
``None``/``True``/``{'a': 1}``; a failure names the template line and, for an undefined
variable, its full path (``stages.src.output.title``) and why it is missing.
No side effects.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes

__all__ = ["as_text", "render_error"]


def as_text(value: Any) -> Any:
    """What ``{{ value }}`` prints: JSON for null, booleans, lists and objects (the
    engine's output assembly does the same); strings, numbers and ``tojson``'s result
    unchanged."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return value
    return value


def render_error(exc: BaseException, template: str, variables: Mapping[str, Any],
                 env: jinja2.Environment) -> str:
    """The message for ``exc``, raised while rendering ``template`` with ``variables``:
    ``line 3: undefined variable: stages.src.output.title (stages.src.output has no key
    'title'; its keys: summary)`` or ``line 1: TypeError: ...``."""
    line = _template_line(exc.__traceback__)
    where = f"line {line}: " if line else ""
    if isinstance(exc, jinja2.UndefinedError):
        found = _undefined_path(template, variables, line, env)
        what = f"{found[0]} ({found[1]})" if found else str(exc.message)
        return f"{where}undefined variable: {what}"
    return f"{where}{type(exc).__name__}: {exc}"


def _template_line(tb: types.TracebackType | None) -> int | None:
    """The template line that raised (Jinja2 rewrites tracebacks to point at it)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_MISSING = object()


def _step(value: Any, key: str | int, attribute: bool) -> Any:
    """``value.key`` / ``value[key]`` as the environment resolves it, or ``_MISSING``."""
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
    elif isinstance(key, int) and isinstance(value, Sequence) and not isinstance(value, str):
        return value[key] if -len(value) <= key < len(value) else _MISSING
    if isinstance(key, str) and not key.startswith("_") and (attribute or isinstance(value, str)):
        return getattr(value, key, _MISSING)
    return _MISSING


def _why(value: Any, key: str | int, path: str) -> str:
    """Why ``path`` does not have ``key``, in the outputs' (JSON) words."""
    if value is None:
        return f"{path} is null"
    if isinstance(value, Mapping):
        keys = ", ".join(sorted(str(k) for k in value)[:8])
        return f"{path} has no key {key!r}" + (f"; its keys: {keys}" if keys else "; it is empty")
    if isinstance(value, list | tuple) and isinstance(key, int):
        return f"{path} has {len(value)} items"
    kind = {str: "a string", int: "a number", float: "a number", bool: "a boolean",
            list: "a list", tuple: "a list"}.get(type(value), type(value).__name__)
    return f"{path} is {kind}"


def _chain(node: nodes.Node) -> tuple[str, list[tuple[str | int, bool]]] | None:
    """``stages.src.output.title`` as (root name, [(key, is-attribute)...]), or None when
    a step is not a constant (``stages[name]``) or the root is not a plain name."""
    steps: list[tuple[str | int, bool]] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            steps.append((node.attr, True))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            steps.append((node.arg.value, False))
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name) or not steps:
        return None
    return node.name, steps[::-1]


def _undefined_path(template: str, variables: Mapping[str, Any], line: int | None,
                    env: jinja2.Environment) -> tuple[str, str] | None:
    """(the full path that is undefined, why) for the first failing chain of variables on
    ``line`` (any line when unknown); None when it cannot be told (a loop variable, say)."""
    try:
        ast = env.parse(template)
    except jinja2.TemplateSyntaxError:
        return None
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if line is not None and node.lineno != line:
            continue
        chain = _chain(node)
        if chain is None or chain[0] not in variables:
            continue
        root, steps = chain
        value, path = variables[root], root
        for key, attribute in steps:
            nxt = _step(value, key, attribute)
            shown = f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
            if nxt is _MISSING:
                return path + shown, _why(value, key, path)
            value, path = nxt, path + shown
    return None
