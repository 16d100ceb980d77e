"""CEL conditions and Jinja2 templates: compiled once, evaluated with recorded reads.

``when``, ``forEach`` and ``routes[].when`` are CEL; ``prompt``, ``system`` and
``output`` are Jinja2 in a sandbox with StrictUndefined. Compilation is cached per
source string. Evaluation returns the result together with the values the expression
read, so every Decision in the trace shows *why*. A run-time failure is an
:class:`ExpressionError` (class ``InvalidInput``), never a silent false.

The ``check_*`` functions are the static half, used by validation: everything that
would fail on *every* evaluation is found here, before anything runs — syntax, unknown
variables, CEL functions the evaluator does not have, constant conditions of the wrong
type, Jinja2 filters and tests that do not exist (Jinja2 itself reports an unknown test
inside ``{% if %}`` only when the template renders), and ``include``/``import``/
``extends``, for which there is no loader. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .._celbinding import load_cel
from ..api import did_you_mean, show_value, type_word
from ..api.rendering import as_text, render_error

__all__ = [
    "CEL_FUNCTIONS",
    "CelResult",
    "ExpressionError",
    "SourceError",
    "cel_stage_refs",
    "check_cel",
    "check_template",
    "evaluate_cel",
    "render_template",
    "template_env",
    "template_error",
    "template_stage_refs",
]

_VARIABLES = ("params", "stages", "item", "index", "loop")


class ExpressionError(Exception):
    """A CEL or Jinja2 expression failed to compile or to evaluate.

    ``reads``: the values a failed CEL evaluation read (recorded in its Decision).
    """

    def __init__(self, message: str, reads: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reads: dict[str, Any] = dict(reads or {})


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
    code = _rewrite(source)
    try:
        return load_cel().compile(code)
    except Exception as exc:  # the binding raises ValueError with the parser message
        raise ExpressionError(_clean(str(exc), columns=code == source)) from None


_PARSE_PREFIX = re.compile(r"^Failed to parse expression .*?: ERROR: (?:<input>|expression):"
                           r"(\d+):(\d+): ", re.DOTALL)


def _clean(message: str, columns: bool = True) -> str:
    """The parser's first error, without the echoed source and caret line (and without
    the column when ``loop`` was renamed, which shifts them)."""
    if "Recursion limit" in message:
        return "expression is nested too deeply"
    m = _PARSE_PREFIX.match(message)
    if m:
        first = message[m.end():].split(" ERROR: ")[0].split("\n")[0]
        first = first.split(" | ")[0].strip()
        return f"{first} (column {m.group(2)})" if columns else first
    return " ".join(message.replace("<input>", "expression").split())


CEL_FUNCTIONS = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "dyn", "type", "duration",
    "timestamp", "contains", "startsWith", "endsWith", "matches", "getFullYear", "getMonth",
    "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds",
})
"""The functions the CEL evaluator provides (the Rust ``cel`` crate's standard library;
the binding's optional Python extras are not enabled). Macros (``has``, ``all``,
``exists``, ``exists_one``, ``map``, ``filter``) expand before this list is consulted.
A test checks every name against the evaluator, so an upgrade cannot drift silently."""

_CEL_GO_EXTRAS = frozenset({
    "bool", "max", "min", "sum", "charAt", "indexOf", "lastIndexOf", "substring", "replace",
    "split", "join", "lowerAscii", "upperAscii", "trim", "reverse", "distinct", "flatten",
    "slice", "sort", "first", "last", "format", "quote", "greatest", "least", "abs", "sign",
    "ceil", "floor", "round", "trunc", "isNaN", "isInf", "isFinite", "sqrt", "now",
})
"""Functions of cel-go's extension libraries that users reach for and this evaluator
lacks; they get a plain "not available" instead of a misleading suggestion."""
_MACROS = ("has", "all", "exists", "exists_one", "map", "filter")
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map",
                         "null_type", "type"})
"""Type identifiers CEL accepts as values (``type(x) == string``)."""
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_cel(source: str, expect: str | None = None) -> str | None:
    """Return why ``source`` cannot work, or None when it compiles and may.

    ``expect`` is ``"bool"`` (``when``, ``routes[].when``) or ``"list"`` (``forEach``):
    an expression that reads no variable is evaluated here and its type checked.
    """
    if not source.strip():
        return "empty expression"
    try:
        program = _compile(source)
    except ExpressionError as exc:
        return str(exc)
    unknown_fn = sorted(f for f in program.functions()
                        if _IDENT.match(f) and f not in CEL_FUNCTIONS)
    if unknown_fn:
        name = unknown_fn[0]
        if name in _CEL_GO_EXTRAS:
            hint = "; write a > b ? a : b" if name in {"max", "min"} else ""
            return (f"CEL function '{name}' is not available here (it belongs to a cel-go "
                    f"extension library, not to standard CEL{hint})")
        return f"unknown CEL function '{name}'{did_you_mean(name, [*CEL_FUNCTIONS, *_MACROS])}"
    names = [("loop" if n == _LOOP_ALIAS else n) for n in program.variables()]
    unknown = [v for v in names if v not in _VARIABLES and v not in _TYPE_NAMES
               and not _is_comprehension_var(source, v)]
    if unknown:
        return (
            f"unknown variable {unknown[0]!r}; expressions can read "
            f"{', '.join(_VARIABLES)} (hyphenated stage names: stages['fact-check'])"
        )
    if expect is not None and not [n for n in names if n not in _TYPE_NAMES]:
        return _check_constant(program, expect)
    return None


def _check_constant(program: Any, expect: str) -> str | None:
    """An expression without variables has one value; is it the kind needed?"""
    try:
        value = program.execute({})
    except Exception as exc:
        return f"always fails: {_short(str(exc))}"
    shown = show_value(value)
    got = type_word(value) + (f" ({shown})" if shown and value is not None else "")
    if expect == "bool" and not isinstance(value, bool):
        return f"must be a boolean condition, got {got}"
    if expect == "list" and not isinstance(value, list):
        return f"must yield a list, got {got}"
    return None


def _is_comprehension_var(source: str, name: str) -> bool:
    return re.search(rf"\.(all|exists|exists_one|map|filter)\(\s*{re.escape(name)}\s*,", source) \
        is not None


_CEL_STRING = r"""[rR]?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_CEL_REF = re.compile(
    rf"(?P<string>{_CEL_STRING})"
    r"|(?<![.\w])stages\s*(?:\.\s*(?P<dot>[A-Za-z_][A-Za-z0-9_]*)"
    rf"|\[\s*(?P<index>{_CEL_STRING})\s*\])"
)


def cel_stage_refs(source: str) -> set[str]:
    """Stage names the expression reads as ``stages.x`` or ``stages['x']`` (string
    literals elsewhere are not references)."""
    out: set[str] = set()
    for m in _CEL_REF.finditer(source):
        if m.group("dot"):
            out.add(m.group("dot"))
        elif m.group("index"):
            out.add(m.group("index").lstrip("rR")[1:-1])
    return out


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
        raise ExpressionError(f"{source!r}: no such key {exc.args[0]!r}",
                              _reads(source, variables)) from None
    except Exception as exc:
        read = _reads(source, variables)
        reads = ", ".join(f"{k} = {json.dumps(v, default=str)}" for k, v in read.items())
        hint = f" (read: {reads})" if reads else ""
        raise ExpressionError(f"{source!r}: {_short(str(exc))}{hint}", read) from None
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
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        finalize=as_text,  # null, true, JSON objects: as the runner prints them
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env


@functools.lru_cache(maxsize=2048)
def _template(source: str) -> jinja2.Template:
    try:
        return template_env().from_string(source)
    except jinja2.TemplateSyntaxError as exc:  # includes unknown filters (an assertion)
        raise ExpressionError(f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise ExpressionError(_TOO_DEEP) from None


_TOO_DEEP = "template is nested too deeply"


@dataclass(frozen=True)
class SourceError:
    """Why a template cannot work, and the line of the template it is on (from 1)."""

    message: str
    line: int | None = None


_NO_LOADER = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from",
              nodes.Extends: "extends"}
# Filters whose first argument names a filter or test: ``map('upper')``, ``select('odd')``.
_NAMED_ARG = {"map": "filter", "select": "test", "reject": "test"}


@functools.lru_cache(maxsize=4096)
def template_error(source: str) -> SourceError | None:
    """Everything that makes ``source`` fail on every render, or None.

    Syntax, ``include``/``import``/``extends``/``from`` (no loader: a template is
    self-contained), unknown filters and tests (also inside ``{% if %}``, where Jinja2
    itself would wait until rendering) and unknown top-level variables.
    """
    env = template_env()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return SourceError(f"template syntax error: {exc.message}", exc.lineno)
    except RecursionError:
        return SourceError(_TOO_DEEP)
    for node in ast.find_all(tuple(_NO_LOADER)):
        tag = _NO_LOADER[type(node)]
        return SourceError(f"{{% {tag} %}} is not supported: a template cannot load other "
                           "templates; write the text inline", node.lineno)
    for found in _unknown_names(ast, env):
        return found
    try:
        unknown = sorted(_undeclared(ast) - set(_VARIABLES))
    except jinja2.TemplateSyntaxError as exc:  # what code generation still finds
        return SourceError(f"template error: {exc.message}", exc.lineno)
    except RecursionError:
        return SourceError(_TOO_DEEP)
    if unknown:
        return SourceError(
            f"unknown variable {unknown[0]!r}; templates can read {', '.join(_VARIABLES)}"
        )
    return None


# Nodes that declare names (loop variables, ``set``, macros, ``with``, call blocks): only
# a template holding one needs Jinja2's own analysis of what stays undeclared.
_DECLARING = (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.CallBlock,
              nodes.With, nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier,
              nodes.Block, nodes.OverlayScope)


def _undeclared(ast: nodes.Template) -> set[str]:
    """The names ``ast`` reads that it does not declare itself.

    Most prompts declare nothing, and then every name they load is undeclared: reading
    the Name nodes answers in microseconds, where ``meta.find_undeclared_variables``
    generates the template's Python code (~0.3 ms a prompt, the bulk of validating a
    500-stage pipeline). Anything that declares a name goes to Jinja2's analysis. The
    fast path misses none of code generation's own errors: those need a declaring node
    (``loop`` as a loop target, a macro's ``caller``, a block defined twice) or are
    unknown filters and tests, which ``_unknown_names`` reports first."""
    if next(ast.find_all(_DECLARING), None) is not None:
        return set(meta.find_undeclared_variables(ast))
    return {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"}


def _unknown_names(ast: nodes.Template, env: jinja2.Environment) -> list[SourceError]:
    out: list[SourceError] = []
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        assert isinstance(node, nodes.Filter | nodes.Test)
        kind = "test" if isinstance(node, nodes.Test) else "filter"
        names = [(kind, node.name)]
        first = node.args[0] if node.args else None
        if kind == "filter" and node.name in _NAMED_ARG and not node.kwargs \
                and isinstance(first, nodes.Const) and isinstance(first.value, str):
            names.append((_NAMED_ARG[node.name], first.value))
        for what, name in names:
            known = env.filters if what == "filter" else env.tests
            if name not in known:
                out.append(SourceError(f"unknown Jinja {what} '{name}'"
                                       f"{did_you_mean(name, known)}", node.lineno))
    return out


def check_template(source: str) -> str | None:
    """Return why ``source`` cannot render (see :func:`template_error`), or None."""
    err = template_error(source)
    if err is None:
        return None
    return err.message + (f" (template line {err.line})" if err.line and err.line > 1 else "")


def template_stage_refs(source: str) -> set[str]:
    """Stage names the template reads as ``stages.x`` or ``stages['x']``; empty when it
    does not parse (:func:`template_error` says why)."""
    return set(_template_refs(source))


@functools.lru_cache(maxsize=4096)
def _template_refs(source: str) -> frozenset[str]:
    try:
        ast = template_env().parse(source)
    except (jinja2.TemplateSyntaxError, RecursionError):
        return frozenset()
    out: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        inner = node.node
        if not (isinstance(inner, nodes.Name) and inner.name == "stages"):
            continue
        if isinstance(node, nodes.Getattr):
            out.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            out.add(node.arg.value)
    return frozenset(out)


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
    except jinja2.UndefinedError as exc:  # names the line and the full path
        raise ExpressionError(render_error(exc, source, variables, template_env())) from None
    except jinja2.TemplateError as exc:
        raise ExpressionError(str(exc)) from None
    except Exception as exc:  # e.g. a TypeError inside a filter
        raise ExpressionError(render_error(exc, source, variables, template_env())) from None
    return text, sorted(seen)
