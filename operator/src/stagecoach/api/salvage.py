"""Best effort for a document that fails the schema, so its other problems are found too.

``stagecoach validate`` reports every problem of a file in one pass: an unknown field in
one stage must not hide an unknown dependency in another. When a document fails the
schema, :func:`salvage` repairs a *copy* until the model accepts it — an unknown field is
dropped, a scalar where a string or list belongs is converted or wrapped, any other bad
value is dropped (or, when it is required, the object holding it), and a stage that
cannot be repaired becomes a placeholder with the same name and dependencies, so paths
and the graph stay as written. It returns the object and the paths it repaired; the
semantic checks then report only what lies outside those paths
(:mod:`stagecoach.engine.validation`). A salvaged object is never run. No side effects.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .pipeline import DNS_LABEL

__all__ = ["Salvaged", "salvage"]

Loc = tuple[str | int, ...]
_MAX_ROUNDS = 64
_STAGE_LISTS = {("spec", "stages"), ("spec", "finally")}


@dataclass(frozen=True)
class Salvaged:
    """A repaired copy of a document that failed the schema."""

    obj: Any
    repaired: tuple[Loc, ...]
    """Where the copy differs from the document (semantic problems there are not shown)."""


def salvage(model: type[BaseModel], data: dict[str, Any]) -> Salvaged | None:
    """Repair a copy of ``data`` until ``model`` validates it; None when that fails."""
    work = copy.deepcopy(data)
    repaired: list[Loc] = []
    for _ in range(_MAX_ROUNDS):
        try:
            return Salvaged(model.model_validate(work), tuple(repaired))
        except ValidationError as exc:
            changed = False
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
                done = _repair(work, loc, err["type"], err.get("input"))
                if done is not None:
                    repaired.append(done)
                    changed = True
            if not changed:
                return None
        except (TypeError, ValueError, RecursionError):
            return None
    return None


def _get(data: Any, loc: Loc) -> tuple[bool, Any]:
    node = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def _repair(work: dict[str, Any], loc: Loc, kind: str, value: Any) -> Loc | None:
    if len(loc) < 2:
        return None  # the document or a whole section (spec, metadata): nothing to keep
    found, parent = _get(work, loc[:-1])
    if not found:
        return None  # already removed by an earlier repair in this round
    key = loc[-1]
    if kind == "missing":
        return _drop(work, loc[:-1])
    if not _has(parent, key):
        return None
    if kind == "string_type" and (value is None or isinstance(value, bool | int | float)):
        parent[key] = json.dumps(value)
        return loc
    if kind == "list_type" and (value is None or isinstance(value, str | bool | int | float)):
        parent[key] = [] if value is None else [value]
        return loc
    return _drop(work, loc)


def _has(parent: Any, key: str | int) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent)


def _drop(work: dict[str, Any], loc: Loc) -> Loc | None:
    """Remove the value at ``loc``; a list element takes its whole list with it, except a
    stage, which becomes a placeholder (list indices are field paths users read)."""
    if len(loc) < 2:
        return None
    found, parent = _get(work, loc[:-1])
    if not found or not _has(parent, loc[-1]):
        return None
    key = loc[-1]
    if isinstance(parent, list) and isinstance(key, int):
        if loc[:-1] in _STAGE_LISTS:
            parent[key] = _placeholder(parent[key], key, loc[1] == "stages")
            return loc
        return _drop(work, loc[:-1])
    if len(loc) == 4 and loc[:2] in _STAGE_LISTS and key == "name":
        return _drop(work, loc[:-1])  # a stage without its name: the placeholder keeps one
    del parent[key]
    return loc


def _placeholder(stage: Any, index: int, with_deps: bool) -> dict[str, Any]:
    name = stage.get("name") if isinstance(stage, dict) else None
    if not (isinstance(name, str) and len(name) <= 63 and re.fullmatch(DNS_LABEL, name)):
        name = f"invalid-stage-{index}"
    out: dict[str, Any] = {"name": name, "run": {"image": "placeholder",
                                                 "command": ["placeholder"]}}
    deps = stage.get("dependsOn") if isinstance(stage, dict) else None
    if with_deps and isinstance(deps, list):
        out["dependsOn"] = [d for d in deps if isinstance(d, str)][:100]
    return out
