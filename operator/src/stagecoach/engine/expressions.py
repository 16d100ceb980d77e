"""CEL conditions and Jinja2 templates: compiled once, evaluated with recorded reads.

``when``, ``forEach`` and ``routes[].when`` are CEL; ``prompt``, ``system`` and
``output`` are Jinja2 in a sandbox with StrictUndefined. Compilation is cached per
source string. Evaluation returns the result together with the values the expression
read, so every Decision in the trace shows *why*. A run-time failure is an
:class:`ExpressionError` (class ``InvalidInput``), never a silent false. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel
import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CelResult",
    "ExpressionError",
    "check_cel",
    "check_template",
    "evaluate_cel",
    "render_template",
    "template_env",
]

_VARIABLES = ("params", "stages", "item", "index", "loop")


class ExpressionError(Exception):
    """A CEL or Jinja2 expression failed to compile or to evaluate."""


@dataclass(frozen=True)
class CelResult:
    """The value of a CEL expression and the values it read."""

    value: Any
    reads: dict[str, Any]


_LOOP_ALIAS = "__stagecoach_loop"
_STRING_OR_LOOP = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?<![.\w])loop\b""")


def _rewrite(source: str) -> str:
    """``loop`` is a reserved word in CEL; DESIGN exposes it anyway, so it is renamed
    (outside string literals) to an internal identifier before compiling."""
    return _STRING_OR_LOOP.sub(lambda m: m.group(1) or _LOOP_ALIAS, source)


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    try:
        return cel.compile(_rewrite(source))
    except Exception as exc:  # the binding raises ValueError with the parser message
        raise ExpressionError(_clean(str(exc))) from None


def _clean(message: str) -> str:
    return " ".join(message.replace("<input>", "expression").split())


def check_cel(source: str) -> str | None:
    """Return a syntax error message, or None when the expression compiles."""
    if not source.strip():
        return "empty expression"
    try:
        program = _compile(source)
    except ExpressionError as exc:
        return str(exc)
    unknown = [
        v for v in (("loop" if n == _LOOP_ALIAS else n) for n in program.variables())
        if v not in _VARIABLES and not _is_comprehension_var(source, v)
    ]
    if unknown:
        return (
            f"unknown variable {unknown[0]!r}; expressions can read "
            f"{', '.join(_VARIABLES)} (hyphenated stage names: stages['fact-check'])"
        )
    return None


def _is_comprehension_var(source: str, name: str) -> bool:
    return re.search(rf"\.(all|exists|exists_one|map|filter)\(\s*{re.escape(name)}\s*,", source) \
        is not None


_PATH = re.compile(
    r"\b(params|stages|item|index|loop)"
    r"((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*(?:'[^']*'|\"[^\"]*\"|\d+)\s*\])*)"
)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:'([^']*)'|\"([^\"]*)\"|(\d+))\s*\]")


def _reads(source: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted paths the expression names, with the values they hold (if any)."""
    out: dict[str, Any] = {}
    code = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"",
                  lambda m: m.group(0) if m.start() > 0 and source[m.start() - 1] == "["
                  else '""', source)
    for m in _PATH.finditer(code):
        root, rest = m.group(1), m.group(2)
        value: Any = variables.get(root)
        path = root
        for step in _STEP.finditer(rest):
            key: str | int = step.group(1) or step.group(2) or step.group(3) or int(step.group(4))
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            elif isinstance(value, list) and isinstance(key, int) and key < len(value):
                value = value[key]
            else:
                if isinstance(key, str) and key in {"size", "exists", "all", "map", "filter"}:
                    break
                value = None
                path += f".{key}" if isinstance(key, str) else f"[{key}]"
                break
            path += f".{key}" if isinstance(key, str) else f"[{key}]"
        out[path] = _compact(value)
    return out


def _compact(value: Any, limit: int = 200) -> Any:
    """Keep recorded values small: long strings and big structures are summarised."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} chars)"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        if len(text) > limit:
            kind = "object" if isinstance(value, dict) else "list"
            return f"<{kind} of {len(value)} entries, {len(text)} bytes>"
    return value


def evaluate_cel(source: str, variables: Mapping[str, Any]) -> CelResult:
    """Evaluate ``source`` against ``variables``; raise ExpressionError on any failure."""
    program = _compile(source)
    context = {(_LOOP_ALIAS if k == "loop" else k): _cel_value(v) for k, v in variables.items()}
    try:
        value = program.execute(context)
    except KeyError as exc:
        raise ExpressionError(f"{source!r}: no such key {exc.args[0]!r}") from None
    except Exception as exc:
        reads = ", ".join(f"{k} = {json.dumps(v, default=str)}"
                          for k, v in _reads(source, variables).items())
        hint = f" (read: {reads})" if reads else ""
        raise ExpressionError(f"{source!r}: {_short(str(exc))}{hint}") from None
    return CelResult(value, _reads(source, variables))


def _short(message: str) -> str:
    first = message.split(". ")[0]
    return first if len(first) < 200 else first[:200] + "…"


def _cel_value(value: Any) -> Any:
    """CEL does not mix int and double; JSON numbers that are whole stay ints."""
    if isinstance(value, Mapping):
        return {str(k): _cel_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cel_value(v) for v in value]
    return value


@functools.lru_cache(maxsize=1)
def template_env() -> jinja2.Environment:
    """The sandboxed Jinja2 environment shared by the engine and the runner."""
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env


@functools.lru_cache(maxsize=2048)
def _template(source: str) -> jinja2.Template:
    try:
        return template_env().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ExpressionError(f"line {exc.lineno}: {exc.message}") from None


def check_template(source: str) -> str | None:
    """Return a Jinja2 syntax error (or unknown top-level variable), or None."""
    try:
        ast = template_env().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error at line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(ast) - set(_VARIABLES))
    if unknown:
        return (
            f"unknown variable {unknown[0]!r}; templates can read {', '.join(_VARIABLES)}"
        )
    return None


class _Recorder(dict[str, Any]):
    """A mapping that remembers which keys a template read."""

    def __init__(self, data: Mapping[str, Any], seen: set[str]) -> None:
        super().__init__(data)
        self._seen = seen

    def __getitem__(self, key: str) -> Any:
        self._seen.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return super().get(key, default)


def render_template(source: str, variables: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Render a template; return the text and the stage names it read.

    Raises ExpressionError naming the undefined variable or the error.
    """
    template = _template(source)
    seen: set[str] = set()
    values = dict(variables)
    if isinstance(values.get("stages"), Mapping):
        values["stages"] = _Recorder(values["stages"], seen)
    try:
        text = template.render(values)
    except jinja2.UndefinedError as exc:
        raise ExpressionError(f"undefined variable: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise ExpressionError(str(exc)) from None
    except Exception as exc:  # e.g. a TypeError inside a filter
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None
    return text, sorted(seen)
