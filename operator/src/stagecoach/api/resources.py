"""The custom resources: ``AgentPipeline``, ``AgentPipelineTemplate``, ``ModelProvider``
and ``StageApproval``.

Each pairs ``metadata`` with a spec model and a status model, and carries the CRD
facts (plural, short names, printer columns) that :mod:`stagecoach.crdgen` needs, so a
kind is declared in exactly one place. No side effects.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ._base import ApiModel
from .approval import ApprovalStatus, StageApprovalSpec
from .meta import ObjectMeta
from .pipeline import PipelineSpec, TemplateSpec
from .provider import ProviderSpec, ProviderStatus
from .status import PipelineStatus

__all__ = [
    "KINDS",
    "AgentPipeline",
    "AgentPipelineTemplate",
    "CrdInfo",
    "Kind",
    "ModelProvider",
    "StageApproval",
]


class CrdInfo:
    """Names and printer columns of a kind's CRD."""

    def __init__(
        self, plural: str, short_names: list[str], columns: list[dict[str, str]]
    ) -> None:
        self.plural = plural
        self.short_names = short_names
        self.columns = columns


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


class AgentPipeline(ApiModel):
    """A pipeline of agent and container stages run by the operator."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        "agentpipelines",
        ["ap"],
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            _AGE,
        ],
    )

    api_version: Literal["stagecoach.dev/v1alpha1"] = Field(description="API version.")
    kind: Literal["AgentPipeline"] = Field(description="AgentPipeline.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: PipelineSpec = Field(description="Desired pipeline.")
    status: PipelineStatus | None = Field(None, description="Observed state.")


class AgentPipelineTemplate(ApiModel):
    """A reusable pipeline body with parameter defaults."""

    crd: ClassVar[CrdInfo] = CrdInfo("agentpipelinetemplates", ["aptpl"], [_AGE])

    api_version: Literal["stagecoach.dev/v1alpha1"] = Field(description="API version.")
    kind: Literal["AgentPipelineTemplate"] = Field(description="AgentPipelineTemplate.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: TemplateSpec = Field(description="Template body.")


class ModelProvider(ApiModel):
    """An LLM endpoint shared by pipelines, with its limits."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        "modelproviders",
        ["mp"],
        [
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "In use", "type": "integer", "jsonPath": ".status.inUse"},
            _AGE,
        ],
    )

    api_version: Literal["stagecoach.dev/v1alpha1"] = Field(description="API version.")
    kind: Literal["ModelProvider"] = Field(description="ModelProvider.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ProviderSpec = Field(description="Endpoint and limits.")
    status: ProviderStatus | None = Field(None, description="Usage across pipelines.")


class StageApproval(ApiModel):
    """A decision on a waiting approval stage (DESIGN §9)."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        "stageapprovals",
        ["sapr"],
        [
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipeline"},
            {"name": "Stage", "type": "string", "jsonPath": ".spec.stage"},
            {"name": "Decision", "type": "string", "jsonPath": ".spec.decision"},
            {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
            {"name": "Result", "type": "string", "jsonPath": ".status.phase"},
            _AGE,
        ],
    )

    api_version: Literal["stagecoach.dev/v1alpha1"] = Field(description="API version.")
    kind: Literal["Kind", "StageApproval"] = Field(description="StageApproval.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: StageApprovalSpec = Field(description="The decision.")
    status: ApprovalStatus | None = Field(None, description="The operator's answer.")


Kind = (type[AgentPipeline] | type[AgentPipelineTemplate] | type[ModelProvider]
        | type[StageApproval])

KINDS: dict[str, Kind] = {
    "AgentPipeline": AgentPipeline,
    "AgentPipelineTemplate": AgentPipelineTemplate,
    "ModelProvider": ModelProvider,
    "StageApproval": StageApproval,
}
