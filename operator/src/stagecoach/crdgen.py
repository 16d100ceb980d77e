"""Generate the CustomResourceDefinitions from the pydantic models.

The models are the only schema (STYLE principle 5): this module turns their JSON Schema
into structural OpenAPI v3 — ``$ref`` inlined, ``anyOf [T, null]`` folded into
``nullable``, titles dropped, free-form objects marked
``x-kubernetes-preserve-unknown-fields`` — and wraps it in a CRD with the status
subresource, printer columns and short names. ``stagecoach crds --check`` compares the
result with ``crds/`` so a stale file fails CI. No side effects.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import yaml
from pydantic import TypeAdapter

from . import GROUP, VERSION
from .api import KINDS, Kind
from .api._base import DURATION_PATTERN, POSITIVE_DURATION_PATTERN, format_duration

__all__ = ["crd_documents", "crd_for", "render_crd_yaml", "structural"]

_DROP = {"title", "default_factory"}
_TD: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return _resolve(target, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def structural(node: Any) -> Any:
    """Make a JSON Schema node structural (Kubernetes' rules for CRD schemas)."""
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            merged = {k: v for k, v in non_null[0].items() if k not in _DROP}
            for k, v in node.items():
                if k != "default" or v is not None:
                    merged[k] = v
            if len(non_null) < len(options):
                merged["nullable"] = True
            node = merged
        else:
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("default", "x") is None:
        node.pop("default")
    if node.get("pattern") in (DURATION_PATTERN, POSITIVE_DURATION_PATTERN) \
            and isinstance(node.get("default"), str) \
            and node["default"].startswith("P"):
        node["default"] = format_duration(_TD.validate_python(node["default"]))
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        # An object stays typed: CEL rules can then compare it (spec.params'
        # immutability); an untyped field is invisible to CEL and the API server
        # refuses the CRD. Anything else (a value of any type) stays untyped.
        keep = ("type", "nullable") if node.get("type") == "object" else ()
        for k in ("type", "additionalProperties", "properties", "nullable"):
            if k not in keep:
                node.pop(k, None)
        return node
    if node.get("type") == "object" and "properties" not in node:
        ap = node.get("additionalProperties")
        if ap is None or ap is True or ap == {}:
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
            return node
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if not any(k in node for k in ("type", "anyOf", "allOf", "oneOf")):
        node["x-kubernetes-preserve-unknown-fields"] = True
        return node
    if node.get("type") == "number" and isinstance(node.get("default"), int):
        node["default"] = float(node["default"])
    if "properties" in node:
        node["properties"] = {k: structural(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        node["items"] = structural(node["items"])
    return node


def _schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = structural(_resolve(raw, defs))
    props = schema["properties"]
    # metadata is validated by the API server itself.
    props["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        props[key] = {"type": "string", "description": props[key].get("description", "")}
    schema.pop("required", None)
    schema["required"] = ["spec"]
    return schema


def crd_for(model: Kind) -> dict[str, Any]:
    """The CRD document of one kind."""
    kind = model.__name__
    info = model.crd
    schema = _schema(model)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": info.columns,
    }
    if "status" in schema["properties"]:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/managed-by": "stagecoach",
                       "app.kubernetes.io/part-of": "stagecoach"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": info.plural,
                "singular": kind.lower(),
                "shortNames": info.short_names,
                "categories": ["stagecoach"],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def crd_documents() -> dict[str, dict[str, Any]]:
    """File name → CRD for every kind."""
    return {f"{m.crd.plural}.{GROUP}.yaml": crd_for(m) for m in KINDS.values()}


def render_crd_yaml(crd: dict[str, Any]) -> str:
    """Stable YAML text of a CRD (what ``crds/`` holds)."""
    header = "# Generated by `stagecoach crds` from the pydantic models. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
