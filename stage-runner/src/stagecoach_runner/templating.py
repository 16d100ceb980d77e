"""Rendering prompts: sandboxed Jinja2 with StrictUndefined (DESIGN §2).

A template may read only the stage variables; a missing variable or attribute fails the
attempt with ``InvalidInput`` naming its full path (``stages.src.output.title``) and the
template line, never renders as an empty string. Attribute syntax prefers dictionary
keys, so ``stages.scrape.output.items`` reads the key ``items`` of a JSON output rather
than the dict method. Values print as JSON (:func:`stagecoach.api.rendering.as_text`):
``null``, ``true``, ``{"a": 1}``, never Python's ``None``, ``True`` or ``{'a': 1}``.

Each template is compiled once per process (an attempt's retry, every forEach instance
and every iteration reuse it). A template that is only text and ``{{ a.b.c }}`` lookups
of dictionary keys (most prompts) is not compiled at all: it is split once and filled
in directly, which prints exactly what Jinja2 prints; anything else, and any lookup that
does not find its key, goes through Jinja2 (and its error messages). No side effects.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from stagecoach.api.rendering import as_text, render_error

from .errors import AttemptError

__all__ = ["referenced_stages", "render"]


class _Environment(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                    finalize=as_text)


_LOOKUP = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")
_SPECIAL = re.compile(r"\{[{%#]|\r|[%#}]\}")
_CACHE = 512


@functools.lru_cache(maxsize=_CACHE)
def _simple(template: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] | None:
    """``(texts, paths)`` of a template of plain text and ``{{ a.b }}`` lookups, with
    ``len(texts) == len(paths) + 1``; None for anything else (Jinja2 renders it)."""
    texts: list[str] = []
    paths: list[tuple[str, ...]] = []
    pos = 0
    for m in _LOOKUP.finditer(template):
        texts.append(template[pos:m.start()])
        paths.append(tuple(m.group(1).split(".")))
        pos = m.end()
    texts.append(template[pos:])
    if any(_SPECIAL.search(t) for t in texts):
        return None  # a block, a comment, a filter, whitespace control, a stray delimiter
    return tuple(texts), tuple(paths)


_MISSING = object()


def _fill(texts: tuple[str, ...], paths: tuple[tuple[str, ...], ...],
          variables: Mapping[str, Any]) -> str | None:
    """The simple template rendered, or None when a lookup is not a dictionary key."""
    out = [texts[0]]
    for path, text in zip(paths, texts[1:], strict=True):
        value: Any = variables
        for key in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key, _MISSING)
            if value is _MISSING:
                return None
        shown = as_text(value)
        out.append(shown if isinstance(shown, str) else str(shown))
        out.append(text)
    return "".join(out)


@functools.lru_cache(maxsize=_CACHE)
def _compiled(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


@functools.lru_cache(maxsize=_CACHE)
def _referenced(template: str) -> frozenset[str] | None:
    simple = _simple(template)
    if simple is not None:
        if any(p[0] == "stages" and len(p) == 1 for p in simple[1]):
            return None
        return frozenset(p[1] for p in simple[1] if p[0] == "stages")
    try:
        ast = _ENV.parse(template)
    except jinja2.TemplateSyntaxError:
        return None  # render() reports it
    names: set[str] = set()
    direct: set[int] = set()
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        assert isinstance(node, jinja2.nodes.Getattr | jinja2.nodes.Getitem)
        inner = node.node
        if not (isinstance(inner, jinja2.nodes.Name) and inner.name == "stages"):
            continue
        if isinstance(node, jinja2.nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node.arg, jinja2.nodes.Const) and isinstance(node.arg.value, str):
            names.add(node.arg.value)
        else:
            return None
        direct.add(id(inner))
    for name in ast.find_all(jinja2.nodes.Name):
        if name.name == "stages" and id(name) not in direct:
            return None
    return frozenset(names)


def referenced_stages(*templates: str | None) -> set[str] | None:
    """Stage names the templates read (``stages.x`` / ``stages['x']``), so the runner
    loads only those outputs; None when a template uses ``stages`` some other way
    (``stages | tojson``, ``stages[name]``) and every output may be needed."""
    names: set[str] = set()
    for template in templates:
        if not template:
            continue
        found = _referenced(template)
        if found is None:
            return None
        names.update(found)
    return names


def render(template: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Render ``template``; ``field`` (``agent.prompt``) names it in error messages."""
    simple = _simple(template)
    if simple is not None:
        text = _fill(*simple, variables)
        if text is not None:
            return text
    try:
        return _compiled(template).render(variables)
    except jinja2.TemplateSyntaxError as e:
        raise AttemptError(
            "InvalidInput", f"{field}: template syntax error at line {e.lineno}: {e.message}"
        ) from None
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as e:
        raise AttemptError("InvalidInput",
                           f"{field}: {render_error(e, template, variables, _ENV)}") from None
