"""A compact JSON Schema validator for stage outputs (``output.schema``).

Covers the keywords stage schemas use: ``type``, ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``minItems``/``maxItems``,
``uniqueItems``, ``minimum``/``maximum`` (and the exclusive forms), ``minLength``/
``maxLength``, ``pattern``, ``allOf``/``anyOf``/``oneOf``/``not``. Unknown keywords
(``title``, ``description``, ``$schema``, ``format``...) are ignored, as JSON Schema
says. Errors name the JSON path (``$.sources[2].url``) so the message fed back to the
model on retry says exactly what to fix. No side effects.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["SchemaError", "first_error", "validate"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


class SchemaError(ValueError):
    """The schema itself is invalid (not the instance)."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    if name not in _TYPES:
        raise SchemaError(f"unknown type {name!r}")
    if isinstance(value, bool) and name not in ("boolean",):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path}[{key!r}]"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(instance: Any, schema: dict[str, Any] | bool, path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``instance``, as ``path: reason`` strings."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object or boolean, got {_short(schema)}")
    errors: list[str] = []

    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(instance, t) for t in names):
            want = " or ".join(names)
            return [f"{path}: expected {want}, got {_type_name(instance)}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {_short(instance)} is not one of {_short(schema['enum'])}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: must be {_short(schema['const'])}")

    if isinstance(instance, dict):
        errors += _object(instance, schema, path)
    elif isinstance(instance, list):
        errors += _array(instance, schema, path)
    elif isinstance(instance, str):
        errors += _string(instance, schema, path)
    elif isinstance(instance, int | float) and not isinstance(instance, bool):
        errors += _number(instance, schema, path)

    for sub in schema.get("allOf", []):
        errors += validate(instance, sub, path)
    if "anyOf" in schema and all(validate(instance, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of the anyOf alternatives")
    if "oneOf" in schema:
        matching = sum(1 for s in schema["oneOf"] if not validate(instance, s, path))
        if matching != 1:
            errors.append(f"{path}: must match exactly one oneOf alternative, matches {matching}")
    if "not" in schema and not validate(instance, schema["not"], path):
        errors.append(f"{path}: must not match the 'not' schema")
    return errors


def _object(instance: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = [
        f"{path}: missing required property {name!r}"
        for name in schema.get("required", [])
        if name not in instance
    ]
    props: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in instance.items():
        if key in props:
            errors += validate(value, props[key], _child(path, key))
        elif extra is False:
            errors.append(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            errors += validate(value, extra, _child(path, key))
    if "minProperties" in schema and len(instance) < schema["minProperties"]:
        errors.append(f"{path}: needs at least {schema['minProperties']} properties")
    if "maxProperties" in schema and len(instance) > schema["maxProperties"]:
        errors.append(f"{path}: allows at most {schema['maxProperties']} properties")
    return errors


def _array(instance: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    items = schema.get("items")
    if isinstance(items, dict | bool):
        for i, value in enumerate(instance):
            errors += validate(value, items, _child(path, i))
    if "minItems" in schema and len(instance) < schema["minItems"]:
        errors.append(f"{path}: needs at least {schema['minItems']} items, has {len(instance)}")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        errors.append(f"{path}: allows at most {schema['maxItems']} items, has {len(instance)}")
    if schema.get("uniqueItems"):
        seen = [json.dumps(v, sort_keys=True) for v in instance]
        if len(set(seen)) != len(seen):
            errors.append(f"{path}: items must be unique")
    return errors


def _string(instance: str, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if "minLength" in schema and len(instance) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(instance) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if "pattern" in schema:
        try:
            if not re.search(schema["pattern"], instance):
                errors.append(f"{path}: does not match pattern {schema['pattern']!r}")
        except re.error as e:
            raise SchemaError(f"invalid pattern {schema['pattern']!r}: {e}") from None
    return errors


def _number(instance: float, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} is less than the minimum {schema['minimum']}")
    if "maximum" in schema and instance > schema["maximum"]:
        errors.append(f"{path}: {instance} is greater than the maximum {schema['maximum']}")
    low = schema.get("exclusiveMinimum")
    if isinstance(low, int | float) and not isinstance(low, bool) and instance <= low:
        errors.append(f"{path}: {instance} must be greater than {low}")
    high = schema.get("exclusiveMaximum")
    if isinstance(high, int | float) and not isinstance(high, bool) and instance >= high:
        errors.append(f"{path}: {instance} must be less than {high}")
    return errors


def first_error(instance: Any, schema: dict[str, Any], limit: int = 5) -> str | None:
    """The first ``limit`` violations joined with ``; `` (None when valid)."""
    errors = validate(instance, schema)
    if not errors:
        return None
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(errors[:limit]) + more
