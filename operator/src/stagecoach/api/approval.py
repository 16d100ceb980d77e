"""The ``StageApproval`` kind: one person's decision on one waiting approval stage.

An approval is its own object, not a field on the pipeline, so that who may approve is
plain RBAC (create ``stageapprovals`` in the namespace) and the API server records who
did (a ValidatingAdmissionPolicy requires ``spec.approver`` to be the authenticated user).
The operator answers in ``status``: ``Accepted`` when the decision was applied, ``Refused``
with the reason when it was not (wrong stage, already decided, old iteration, bad inputs);
it is never applied later. No side effects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ._base import ApiModel

__all__ = ["ApprovalStatus", "StageApprovalSpec"]


class StageApprovalSpec(ApiModel):
    """Which stage, which iteration, and the decision (DESIGN §9)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf",
                 "message": "a StageApproval is immutable: create a new one"},
            ]
        }
    }

    pipeline: str = Field(min_length=1, max_length=253,
                          description="AgentPipeline name in the same namespace.")
    stage: str = Field(min_length=1, max_length=63, description="The approval stage.")
    iteration: int | None = Field(
        None, ge=1, description="The stage's iteration this decision is for (the CLI fills "
        "in the current one; unset: whichever is waiting).")
    decision: Literal["Approve", "Reject"] = Field(description="Approve or Reject.")
    inputs: dict[str, str] = Field(default_factory=dict, max_length=32,
                                   description="Values for the stage's approval inputs.")
    message: str | None = Field(None, max_length=4096,
                                description="A note from the approver.")
    approver: str = Field(min_length=1, max_length=512,
                          description="Who decides: must equal the authenticated user "
                          "(the CLI fills it in; an admission policy checks it).")


class ApprovalStatus(ApiModel):
    """The operator's answer."""

    phase: Literal["Accepted", "Refused"] | None = Field(
        None, description="Accepted (applied to the stage) or Refused (never applied).")
    reason: str | None = Field(None, description="CamelCase reason.")
    message: str | None = Field(None, description="Why, in words.")
    decided_at: datetime | None = Field(None, description="When the operator answered.")
