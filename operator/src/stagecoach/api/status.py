"""Status of an ``AgentPipeline`` (DESIGN §4): references and counters, never payloads.

The operator writes it to the CR's status subresource and the local executor writes the
same shape to ``status.json``; both derive it from the engine's run state with
:func:`stagecoach.engine.status.to_status`. No side effects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ._base import ApiModel

__all__ = [
    "PIPELINE_PHASES",
    "STAGE_PHASES",
    "Condition",
    "InstanceCounts",
    "PipelinePhase",
    "PipelineStatus",
    "StagePhase",
    "StageStatus",
    "TokenUsage",
]

PipelinePhase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled",
                        "Invalid"]
StagePhase = Literal["Pending", "Waiting", "Queued", "Running", "Succeeded", "Failed", "Skipped"]
PIPELINE_PHASES: tuple[str, ...] = PipelinePhase.__args__  # type: ignore[attr-defined]
STAGE_PHASES: tuple[str, ...] = StagePhase.__args__  # type: ignore[attr-defined]


class TokenUsage(ApiModel):
    """Tokens a provider reported (including attempts whose output was rejected)."""

    input: int = Field(0, ge=0, description="Prompt tokens.")
    output: int = Field(0, ge=0, description="Completion tokens.")

    @property
    def total(self) -> int:
        """Input plus output."""
        return self.input + self.output


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Valid, Running or Succeeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="CamelCase reason.")
    message: str | None = Field(None, description="Human-readable detail.")
    last_transition_time: datetime | None = Field(None, description="When status changed.")


class InstanceCounts(ApiModel):
    """forEach instance counters."""

    total: int = Field(0, description="Instances of the current iteration.")
    succeeded: int = Field(0, description="Instances that succeeded.")
    failed: int = Field(0, description="Instances that failed for good.")
    running: int = Field(0, description="Instances running now.")


class StageStatus(ApiModel):
    """Progress of one stage in its current iteration."""

    name: str = Field(description="Stage name.")
    phase: StagePhase = Field("Pending", description="Stage phase.")
    iteration: int = Field(1, description="Current iteration (from 1).")
    attempt: int = Field(0, description="Latest attempt (from 1; 0 = not started).")
    job: str | None = Field(None, description="Job of the latest attempt (cluster only).")
    started_at: datetime | None = Field(None, description="First start in this iteration.")
    finished_at: datetime | None = Field(None, description="When it reached its phase.")
    next_attempt_at: datetime | None = Field(None, description="When the next attempt starts.")
    reason: str | None = Field(None, description="Error class or waiting reason.")
    message: str | None = Field(None, description="Human-readable detail.")
    output_ref: str | None = Field(None, description="Where the output is stored.")
    tokens: TokenUsage = Field(default_factory=TokenUsage, description="Tokens, all attempts.")
    cost: str | None = Field(None, description="USD of those tokens (decimal string, "
                             "rounded to a micro-dollar); absent when no model is priced.")
    instances: InstanceCounts | None = Field(None, description="forEach stages only.")


class PipelineStatus(ApiModel):
    """Observed state of an AgentPipeline."""

    phase: PipelinePhase = Field("Pending", description="Pipeline phase.")
    observed_generation: int | None = Field(None, description="Generation last acted on.")
    started_at: datetime | None = Field(None, description="Start time.")
    finished_at: datetime | None = Field(None, description="End time.")
    message: str | None = Field(None, description="Why the pipeline is in its phase.")
    reason: str | None = Field(None, description="CamelCase reason for the phase.")
    progress: str | None = Field(None, description="Finished stages / all stages.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    tokens: TokenUsage = Field(default_factory=TokenUsage, description="Tokens over all stages.")
    cost: str | None = Field(None, description="USD over all stages (decimal string, rounded "
                             "to a micro-dollar); absent when no model is priced.")
    stages: list[StageStatus] = Field(
        default_factory=list,
        description="Per-stage progress, keyed by name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    trace_ref: str | None = Field(None, description="Where the trace is stored.")
    output_ref: str | None = Field(None, description="Where the final output is stored.")
