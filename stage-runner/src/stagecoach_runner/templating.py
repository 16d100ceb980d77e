"""Rendering prompts: sandboxed Jinja2 with StrictUndefined (DESIGN §2).

A template may read only the stage variables; a missing variable or attribute fails the
attempt with ``InvalidInput`` naming its full path (``stages.src.output.title``) and the
template line, never renders as an empty string. Attribute syntax prefers dictionary
keys, so ``stages.scrape.output.items`` reads the key ``items`` of a JSON output rather
than the dict method. Values print as JSON (:func:`stagecoach.api.rendering.as_text`):
``null``, ``true``, ``{"a": 1}``, never Python's ``None``, ``True`` or ``{'a': 1}``.
No side effects.
"""

from __future__ import annotations

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


def referenced_stages(*templates: str | None) -> set[str] | None:
    """Stage names the templates read (``stages.x`` / ``stages['x']``), so the runner
    loads only those outputs; None when a template uses ``stages`` some other way
    (``stages | tojson``, ``stages[name]``) and every output may be needed."""
    names: set[str] = set()
    for template in templates:
        if not template:
            continue
        try:
            ast = _ENV.parse(template)
        except jinja2.TemplateSyntaxError:
            return None  # render() reports it
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
    return names


def render(template: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Render ``template``; ``field`` (``agent.prompt``) names it in error messages."""
    try:
        return _ENV.from_string(template).render(variables)
    except jinja2.TemplateSyntaxError as e:
        raise AttemptError(
            "InvalidInput", f"{field}: template syntax error at line {e.lineno}: {e.message}"
        ) from None
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as e:
        raise AttemptError("InvalidInput",
                           f"{field}: {render_error(e, template, variables, _ENV)}") from None
