"""Rendering prompts: sandboxed Jinja2 with StrictUndefined (DESIGN §2).

A template may read only the stage variables; a missing variable or attribute fails the
attempt with ``InvalidInput`` naming it, never renders as an empty string. Attribute
syntax prefers dictionary keys, so ``stages.scrape.output.items`` reads the key
``items`` of a JSON output rather than the dict method. No side effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .errors import AttemptError

__all__ = ["render"]


class _Environment(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(template: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Render ``template``; ``field`` (``agent.prompt``) names it in error messages."""
    try:
        return _ENV.from_string(template).render(variables)
    except jinja2.UndefinedError as e:
        raise AttemptError("InvalidInput", f"{field}: undefined variable: {e.message}") from None
    except jinja2.TemplateSyntaxError as e:
        raise AttemptError(
            "InvalidInput", f"{field}: template syntax error at line {e.lineno}: {e.message}"
        ) from None
    except jinja2.TemplateError as e:
        raise AttemptError("InvalidInput", f"{field}: {type(e).__name__}: {e}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as e:
        raise AttemptError("InvalidInput", f"{field}: {type(e).__name__}: {e}") from None
