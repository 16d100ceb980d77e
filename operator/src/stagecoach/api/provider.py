"""The ``ModelProvider`` spec and the replay ``Cassette`` format (DESIGN §3).

A provider names an endpoint, its models' limits and its rate limits; the engine reads
only the concurrency limit, the runner the rest. A cassette is the recorded answers of a
provider, replayed offline. No side effects.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from ._base import ApiModel, PositiveDuration
from .pipeline import SecretKeyRef
from .pricing import Pricing

__all__ = [
    "Cassette",
    "CassetteEntry",
    "CassetteError",
    "CassetteRef",
    "CassetteResponse",
    "ConfigMapKeyRef",
    "ModelInfo",
    "ProviderLimits",
    "ProviderSpec",
    "ProviderStatus",
    "RequestPolicy",
]


class ModelInfo(ApiModel):
    """Limits of one model."""

    context_window: int | None = Field(None, ge=1, description="Context window in tokens.")
    max_output_tokens: int | None = Field(None, ge=1, description="Maximum output tokens.")
    pricing: Pricing | None = Field(
        None, description="Prices in USD per million tokens (decimal strings); without "
        "them the model's stages show tokens only, never a cost.")


class ProviderLimits(ApiModel):
    """Limits enforced across all pipelines that use the provider."""

    max_concurrency: int | None = Field(None, ge=1, description="Requests in flight at once.")
    requests_per_minute: int | None = Field(None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Tokens per minute.")


class RequestPolicy(ApiModel):
    """HTTP behaviour inside one attempt."""

    timeout: PositiveDuration = Field(timedelta(seconds=60), description="Per-request timeout.")
    retries: int = Field(3, ge=0, description="HTTP retries on 429/5xx inside one attempt.")


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap of the same namespace."""

    name: str = Field(description="ConfigMap name.")
    key: str = Field("cassette.yaml", description="Key within the ConfigMap.")


class CassetteRef(ApiModel):
    """Where a replay provider finds its cassette."""

    config_map_ref: ConfigMapKeyRef | None = Field(None, description="In the cluster.")
    path: str | None = Field(
        None, description="In local mode: a file path, relative to the manifest."
    )


class ProviderSpec(ApiModel):
    """An LLM endpoint: OpenAI-compatible, Anthropic, or a replay cassette."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.type != 'replay' || has(self.cassette)",
                    "message": "a replay provider needs a cassette",
                }
            ]
        }
    }

    type: Literal["openai", "anthropic", "replay"] = Field(
        description="openai (any OpenAI-compatible endpoint), anthropic, or replay."
    )
    base_url: str | None = Field(None, alias="baseURL", description="API base URL.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret holding the API key (cluster)."
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (local mode)."
    )
    models: dict[str, ModelInfo] = Field(default_factory=dict, description="Known models.")
    limits: ProviderLimits = Field(default_factory=ProviderLimits, description="Rate limits.")
    request: RequestPolicy = Field(default_factory=RequestPolicy, description="HTTP policy.")
    cassette: CassetteRef | None = Field(None, description="Replay only: the cassette.")

    @model_validator(mode="after")
    def _replay_needs_cassette(self) -> ProviderSpec:
        if self.type == "replay" and self.cassette is None:
            raise ValueError("a replay provider needs a cassette")
        return self


class ProviderStatus(ApiModel):
    """Usage of a provider across pipelines."""

    in_use: int = Field(0, description="Stage attempts holding a concurrency slot.")
    queued: int = Field(0, description="Stage attempts waiting for a slot.")


class CassetteUsage(ApiModel):
    """Token usage recorded with a response."""

    input: int = Field(0, ge=0, description="Prompt tokens.")
    output: int = Field(0, ge=0, description="Completion tokens.")


class CassetteResponse(ApiModel):
    """A recorded successful answer."""

    content: str = Field(description="The answer text.")
    usage: CassetteUsage = Field(default_factory=CassetteUsage, description="Token usage.")
    model: str | None = Field(None, description="Model that answered.")
    finish_reason: str | None = Field(None, description="Finish reason.")


class CassetteError(ApiModel):
    """A recorded failure."""

    status: int | None = Field(None, ge=100, le=599, description="HTTP status.")
    retry_after: float | None = Field(None, ge=0, description="Retry-After seconds.")
    timeout: bool = Field(False, description="The request timed out.")
    message: str | None = Field(None, description="Error body.")

    @model_validator(mode="after")
    def _status_or_timeout(self) -> CassetteError:
        if self.status is None and not self.timeout:
            raise ValueError("an error entry needs status or timeout: true")
        return self


class CassetteEntry(ApiModel):
    """One recorded exchange; a request consumes the first unused entry that matches."""

    stage: str = Field(description="Stage name.")
    iteration: int | None = Field(None, ge=1, description="Match only this iteration.")
    index: int | None = Field(None, ge=0, description="Match only this forEach instance.")
    response: CassetteResponse | None = Field(None, description="The answer.")
    error: CassetteError | None = Field(None, description="Or the failure.")
    request: dict[str, Any] | None = Field(None, description="Recorded request (informational).")

    @model_validator(mode="after")
    def _one_outcome(self) -> CassetteEntry:
        if (self.response is None) == (self.error is None):
            raise ValueError("a cassette entry needs exactly one of response or error")
        return self


class Cassette(ApiModel):
    """Recorded provider answers (``kind: Cassette``)."""

    api_version: Literal["stagecoach.dev/v1alpha1"] = Field(
        "stagecoach.dev/v1alpha1", description="API version."
    )
    kind: Literal["Cassette"] = Field("Cassette", description="Cassette.")
    entries: list[CassetteEntry] = Field(default_factory=list, description="Entries in order.")
