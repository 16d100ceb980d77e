"""The slice of Kubernetes ``ObjectMeta`` that Stagecoach reads.

Metadata is owned by the API server, which adds fields of its own (managedFields,
resourceVersion, ...), so unlike the spec models this one accepts unknown keys.

The name rule (a DNS subdomain, as the API server requires of these kinds) is
:func:`name_problem`, applied by validation rather than by the model: objects read back
from the API server are valid by construction, and a manifest with a bad name should
still get every other check. The operator hashes long names where a shorter limit
applies (Job names and label values, 63), so 253 is the only length limit. No side
effects.
"""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field

from ._base import ApiModel

__all__ = ["DNS_SUBDOMAIN", "ObjectMeta", "name_problem"]

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_MAX_NAME = 253


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Kubernetes object name (a DNS subdomain), or None."""
    if not name:
        return "must not be empty"
    if len(name) > _MAX_NAME:
        return f"is {len(name)} characters long; a name has at most {_MAX_NAME}"
    if not re.fullmatch(DNS_SUBDOMAIN, name):
        return (f"{name!r} is not a valid name: use lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit")
    return None


class ObjectMeta(ApiModel):
    """Name, namespace and the identifiers the shells need."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Object name.")
    namespace: str | None = Field(None, description="Namespace.")
    uid: str | None = Field(None, description="UID assigned by the API server.")
    generation: int | None = Field(None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
