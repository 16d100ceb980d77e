"""The slice of Kubernetes ``ObjectMeta`` that Stagecoach reads.

Metadata is owned by the API server, which adds fields of its own (managedFields,
resourceVersion, ...), so unlike the spec models this one accepts unknown keys. No side
effects.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from ._base import ApiModel

__all__ = ["ObjectMeta"]


class ObjectMeta(ApiModel):
    """Name, namespace and the identifiers the shells need."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Object name.")
    namespace: str | None = Field(None, description="Namespace.")
    uid: str | None = Field(None, description="UID assigned by the API server.")
    generation: int | None = Field(None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
