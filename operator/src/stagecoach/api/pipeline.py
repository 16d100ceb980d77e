"""The ``AgentPipeline`` and ``AgentPipelineTemplate`` specs (DESIGN §2).

These models are the only schema: ``stagecoach validate`` parses manifests with them, the
engine plans over them and ``stagecoach crds`` generates the CRDs from them. Rules that
involve one object (exactly one of ``agent``/``run``) live here as validators and as
``x-kubernetes-validations`` so the API server enforces them too; rules across objects
(graph shape, expressions, providers) live in :mod:`stagecoach.engine.validation`.
No side effects.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, model_validator

from ._base import ApiModel, Duration, PositiveDuration
from .meta import ObjectMeta
from .pricing import Usd
from .quantity import QUANTITY, resource_problems

__all__ = [
    "DNS_LABEL",
    "ERROR_CLASSES",
    "MUTABLE_SPEC_FIELDS",
    "RETRYABLE_DEFAULT",
    "AgentSpec",
    "ApprovalInput",
    "ApprovalSpec",
    "Backoff",
    "Budget",
    "CachePolicy",
    "ContextPolicy",
    "Defaults",
    "EnvVar",
    "ErrorClass",
    "Fallback",
    "Limits",
    "OutputSpec",
    "PipelineSpec",
    "Resources",
    "ResumeFrom",
    "RetryPolicy",
    "Route",
    "RunSpec",
    "S3Storage",
    "SecretKeyRef",
    "Stage",
    "StageSpecBody",
    "Storage",
    "TemplateParam",
    "TemplateRef",
    "TemplateSpec",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_STAGES = 1000
"""Upper bound on stages per pipeline (keeps status and CRD validation cost bounded)."""

ErrorClass = Literal[
    "Error",
    "Timeout",
    "RateLimited",
    "MalformedOutput",
    "ProviderUnavailable",
    "ContextOverflow",
    "BudgetExceeded",
    "OutputTooLarge",
    "InvalidInput",
]
ERROR_CLASSES: tuple[str, ...] = ErrorClass.__args__  # type: ignore[attr-defined]
RETRYABLE_DEFAULT: tuple[str, ...] = (
    "Error",
    "Timeout",
    "RateLimited",
    "MalformedOutput",
    "ProviderUnavailable",
)


class OutputSpec(ApiModel):
    """How a stage's output is interpreted and checked."""

    # No CRD rule for "schema needs format json": CEL cannot see a schemaless
    # (preserve-unknown-fields) property, so the API server would reject the rule.

    format: Literal["text", "json"] = Field(
        "text", description="text: the raw answer; json: parsed JSON, checked against schema."
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description="JSON Schema the parsed output must satisfy (format json only).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _schema_needs_json(self) -> OutputSpec:
        if self.json_schema is not None and self.format != "json":
            raise ValueError("schema is only allowed with format: json")
        return self


class Fallback(ApiModel):
    """A provider/model pair tried when the stage's own provider fails."""

    provider: str = Field(description="ModelProvider name in the same namespace.")
    model: str | None = Field(None, description="Model name at that provider.")


class ContextPolicy(ApiModel):
    """What to do when the rendered inputs exceed the model's context window."""

    overflow: Literal["truncate", "fail"] = Field(
        "fail",
        description="truncate: shorten the largest inputs (recorded as ContextTruncated); "
        "fail: the attempt fails with ContextOverflow.",
    )


class AgentSpec(ApiModel):
    """An LLM call: a prompt rendered with Jinja2 and sent to a ModelProvider."""

    provider: str | None = Field(
        None, description="ModelProvider name; defaults to spec.defaults.provider."
    )
    model: str | None = Field(None, description="Model name; defaults to spec.defaults.model.")
    system: str | None = Field(None, description="System prompt (Jinja2 template).")
    prompt: str = Field(description="User prompt (sandboxed Jinja2 template, StrictUndefined).")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Maximum output tokens.")
    output: OutputSpec | None = Field(None, description="Output format and JSON Schema.")
    fallbacks: list[Fallback] = Field(
        default_factory=list, description="Providers tried in order when the provider fails."
    )
    context: ContextPolicy | None = Field(None, description="Context-window overflow policy.")


class SecretKeyRef(ApiModel):
    """A key in a Secret of the pipeline's namespace."""

    name: str = Field(description="Secret name.")
    key: str = Field(description="Key within the Secret.")


_ENV_SOURCES = {"fieldRef": ("fieldPath",), "resourceFieldRef": ("resource",),
                "configMapKeyRef": ("name", "key"), "secretKeyRef": ("name", "key")}


class EnvVar(ApiModel):
    """An environment variable for a run stage's container."""

    name: str = Field(min_length=1, max_length=4096, pattern=r"^[ -<>-~]+$",
                      description="Variable name (printable ASCII, no '=').")
    value: str | None = Field(None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        None,
        description="Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("an environment variable has value or valueFrom, not both")
        if self.value_from is not None:
            kinds = [k for k in self.value_from if k in _ENV_SOURCES]
            unknown = sorted(set(self.value_from) - set(_ENV_SOURCES))
            if unknown or len(kinds) != 1:
                raise ValueError("valueFrom needs exactly one of " + ", ".join(_ENV_SOURCES)
                                 + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
            ref = self.value_from[kinds[0]]
            missing = [f for f in _ENV_SOURCES[kinds[0]]
                       if not isinstance(ref, dict) or not ref.get(f)]
            if missing:
                raise ValueError(f"valueFrom.{kinds[0]} needs {' and '.join(missing)}")
        return self


class RunSpec(ApiModel):
    """A container (a subprocess in local mode) that reads STAGECOACH_INPUT and writes
    STAGECOACH_OUTPUT."""

    image: str = Field(min_length=1, pattern=r"^\S(.*\S)?$",
                       description="Container image (not used in local mode).")
    command: list[str] = Field(min_length=1, description="Command to execute.")
    args: list[str] = Field(default_factory=list, description="Arguments after the command.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    working_dir: str | None = Field(None, description="Working directory of the command.")
    output: OutputSpec | None = Field(None, description="Output format and JSON Schema.")


class Route(ApiModel):
    """A conditional back-edge: after the stage succeeds, go back to an ancestor."""

    when: str = Field(description="CEL condition evaluated after the stage succeeds.")
    goto: str = Field(description="An ancestor stage: it and everything after it run again.")
    max_iterations: int = Field(
        ge=1,
        description="How many iterations this back-edge may give its target in total "
        "(the target's first run counts as iteration 1).",
    )
    otherwise: Literal["continue", "fail"] = Field(
        "continue", description="When the iterations are used up: continue (default) or fail."
    )


class Backoff(ApiModel):
    """Exponential backoff between attempts: initial * factor^(n-1), capped, with jitter."""

    initial: Duration = Field(timedelta(seconds=1), description="Delay before the 2nd attempt.")
    factor: float = Field(2.0, ge=1, description="Multiplier per further attempt.")
    max: Duration = Field(timedelta(minutes=1), description="Upper bound on the delay.")
    jitter: float = Field(0.1, ge=0, le=1, description="Random ± fraction applied to the delay.")


class RetryPolicy(ApiModel):
    """How often and on which error classes a stage attempt is retried."""

    limit: int = Field(0, ge=0, description="Retries after the first attempt.")
    backoff: Backoff = Field(default_factory=Backoff, description="Delay between attempts.")
    on: list[ErrorClass] = Field(
        default_factory=lambda: list(RETRYABLE_DEFAULT),  # type: ignore[arg-type]
        description="Error classes that are retried (InvalidInput never is).",
    )


Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=64)]


class Resources(ApiModel):
    """Compute resources for the stage's pod (Kubernetes quantities: ``500m``, ``2``,
    ``1.5Gi``), checked as the API server checks a pod's."""

    # Resource names and requests <= limits are checked here, not in the CRD: CEL rules
    # over map keys cost more than the API server's budget at 1,000 stages.
    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Resource requests.")
    limits: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Resource limits.")

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Resources:
        problems = [p for p in resource_problems(self.requests, self.limits)
                    if "quantity" not in p]  # bad quantities: the field pattern says so
        if problems:
            raise ValueError("; ".join(problems))
        return self


_EXACTLY_ONE: dict[str, JsonValue] = {
    "rule": "has(self.agent) != has(self.run)",
    "message": "a stage needs exactly one of agent or run",
}
_EXACTLY_ONE_OF_THREE: dict[str, JsonValue] = {
    "rule": "(has(self.agent) ? 1 : 0) + (has(self.run) ? 1 : 0) + "
            "(has(self.approval) ? 1 : 0) == 1",
    "message": "a stage needs exactly one of agent, run or approval",
}
_APPROVAL_ALONE: dict[str, JsonValue] = {
    "rule": "!has(self.approval) || (!has(self.forEach) && !has(self.retry) && "
            "!has(self.timeout) && !has(self.resources) && !has(self.cache))",
    "message": "an approval stage takes no forEach, retry, timeout, resources or cache "
               "(approval.timeout bounds the wait)",
}


class ApprovalInput(ApiModel):
    """A value the approver supplies with the decision (DESIGN §9)."""

    name: str = Field(max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                      description="Input name (an identifier: templates read it as "
                      "stages.<stage>.output.inputs.<name>).")
    description: str | None = Field(None, max_length=1024,
                                    description="What the approver should enter.")
    enum: list[str] | None = Field(None, min_length=1, max_length=64,
                                   description="Allowed values.")
    default: str | None = Field(None, max_length=4096,
                                description="Value when the approver gives none.")
    required: bool = Field(False, description="The approver must give a value (or the "
                           "default applies).")

    @model_validator(mode="after")
    def _default_in_enum(self) -> ApprovalInput:
        if self.enum is not None and self.default is not None and self.default not in self.enum:
            raise ValueError(f"default {self.default!r} is not one of enum "
                             f"({', '.join(self.enum)})")
        return self


class ApprovalSpec(ApiModel):
    """A human gate: the stage waits for a ``StageApproval`` (DESIGN §9)."""

    message: str = Field(min_length=1, max_length=16384,
                         description="What the approver is asked (Jinja2 template).")
    timeout: PositiveDuration | None = Field(
        None, description="How long to wait; then onTimeout decides (default: forever).")
    on_timeout: Literal["reject", "approve"] = Field(
        "reject", description="Decision when the timeout passes.")
    inputs: list[ApprovalInput] = Field(
        default_factory=list, max_length=32,
        description="Values the approver supplies.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})


class CachePolicy(ApiModel):
    """Reuse a stage's earlier answer when its inputs are the same (DESIGN §11)."""

    ttl: PositiveDuration = Field(description="How long an entry answers (e.g. 24h).")


class StageSpecBody(ApiModel):
    """Fields shared by pipeline stages and finally stages."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_EXACTLY_ONE]}}

    name: str = Field(
        max_length=63, pattern=DNS_LABEL, description="DNS label, unique within the pipeline."
    )
    agent: AgentSpec | None = Field(None, description="An LLM call (exactly one of agent/run).")
    run: RunSpec | None = Field(None, description="A container (exactly one of agent/run).")
    retry: RetryPolicy | None = Field(None, description="Retry policy per attempt.")
    timeout: PositiveDuration | None = Field(None, description="Deadline of one attempt.")
    resources: Resources | None = Field(None, description="Pod resources in the cluster.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> StageSpecBody:
        self._check_kind()
        return self

    def _check_kind(self) -> None:
        if (self.agent is None) == (self.run is None):
            raise ValueError("a stage needs exactly one of agent or run")


class Stage(StageSpecBody):
    """One step of the pipeline: an agent call or a container, with its wiring."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _EXACTLY_ONE_OF_THREE,
                _APPROVAL_ALONE,
                {"rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
                 "message": "a stage cannot depend on itself"},
                {"rule": "!has(self.routes) || self.routes.all(r, r.goto != self.name)",
                 "message": "a route must go back to an ancestor, not to its own stage"},
            ]
        }
    }

    depends_on: list[str] = Field(
        default_factory=list, max_length=100,
        description="Stages that must finish first (fan-in).",
    )
    when: str | None = Field(None, description="CEL condition; false skips the stage.")
    for_each: str | None = Field(
        None, description="CEL expression yielding a list; one instance per item (fan-out)."
    )
    routes: list[Route] = Field(
        default_factory=list, max_length=20,
        description="Back-edges evaluated in order after success.",
    )
    on_failure: Literal["fail", "continue"] = Field(
        "fail", description="fail the pipeline, or continue with this stage's output null."
    )
    approval: ApprovalSpec | None = Field(
        None, description="Wait for a person's decision (exactly one of agent/run/approval).")
    cache: CachePolicy | None = Field(
        None, description="Answer from the namespace's stage cache when the same inputs "
        "ran within the TTL (default: spec.defaults.cache; unset: off).")

    def _check_kind(self) -> None:
        kinds = [k for k in ("agent", "run", "approval") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a stage needs exactly one of agent, run or approval"
                             + (f" (it has {' and '.join(kinds)})" if kinds else ""))
        if self.approval is not None:
            extra = [k for k, v in (("forEach", self.for_each), ("retry", self.retry),
                                    ("timeout", self.timeout), ("resources", self.resources),
                                    ("cache", self.cache))
                     if v is not None]
            if extra:
                raise ValueError(f"an approval stage takes no {', '.join(extra)} "
                                 "(approval.timeout bounds the wait)")


class TemplateRef(ApiModel):
    """Reference to an AgentPipelineTemplate in the same namespace."""

    name: str = Field(description="Template name.")


class Budget(ApiModel):
    """Token and money budget over the whole pipeline (either or both)."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.maxTokens) || has(self.maxCost)",
         "message": "a budget needs maxTokens, maxCost or both"}]}}

    max_tokens: int | None = Field(None, ge=1, description="Input+output tokens over all "
                                   "stages.")
    max_cost: Usd | None = Field(
        None, description="USD over all stages (a decimal string such as \"5.00\"), at "
        "the models' pricing; stages of unpriced models add nothing.")

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.max_tokens is None and self.max_cost is None:
            raise ValueError("a budget needs maxTokens, maxCost or both")
        return self



class S3Storage(ApiModel):
    """An S3-compatible bucket."""

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field("", description="Key prefix.")
    endpoint: str | None = Field(None, description="Endpoint URL for non-AWS servers.")
    region: str | None = Field(None, description="Region.")
    credentials_secret: str | None = Field(
        None, description="Secret with accessKeyId and secretAccessKey."
    )


class Storage(ApiModel):
    """Where outputs and the trace are stored."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.type != 's3' || has(self.s3)", "message": "type s3 needs s3"}
            ]
        }
    }

    type: Literal["configmap", "s3", "local"] = Field(
        "configmap", description="configmap (cluster default), s3, or local (local mode)."
    )
    s3: S3Storage | None = Field(None, description="Bucket settings for type s3.")

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Storage:
        if self.type == "s3" and self.s3 is None:
            raise ValueError("storage type s3 needs the s3 settings (bucket, ...)")
        return self


class Defaults(ApiModel):
    """Values applied to every stage that does not set them."""

    provider: str | None = Field(None, description="Default ModelProvider for agent stages.")
    model: str | None = Field(None, description="Default model for agent stages.")
    timeout: PositiveDuration | None = Field(None, description="Default per-attempt timeout.")
    retry: RetryPolicy | None = Field(None, description="Default retry policy.")
    cache: CachePolicy | None = Field(
        None, description="Default stage cache of agent and run stages (finally and "
        "approval stages never cache).")


_STAGE_LIST: dict[str, JsonValue] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}


DEFAULT_MAX_INSTANCES = 5000


class Limits(ApiModel):
    """Bounds on what one pipeline may grow to (DESIGN §10)."""

    max_instances: int = Field(
        DEFAULT_MAX_INSTANCES, ge=1, le=100_000,
        description="Most instances one forEach may fan out to; more fails the stage "
        "with InvalidInput (default 5000).")


class ResumeFrom(ApiModel):
    """The pipeline a retry continues from (DESIGN §9)."""

    name: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                      description="An AgentPipeline in the same namespace; its Succeeded, "
                      "unchanged stages are reused.")


MUTABLE_SPEC_FIELDS = ("suspend", "shutdown")
"""The only spec fields that may change after creation (DESIGN §9)."""

_IMMUTABLE_FIELDS = ("templateRef", "params", "maxParallel", "timeout", "limits",
                     "ttlSecondsAfterFinished", "budget", "storage", "defaults", "stages",
                     "finally", "output", "resumeFrom")


def _immutable(field_name: str) -> dict[str, JsonValue]:
    return {
        "rule": f"has(self.{field_name}) == has(oldSelf.{field_name}) && "
                f"(!has(self.{field_name}) || self.{field_name} == oldSelf.{field_name})",
        "message": f"spec.{field_name} is immutable once the pipeline exists (a run is a "
                   "snapshot; only spec.suspend and spec.shutdown change): delete and "
                   "re-create the pipeline, or `stagecoach retry` it",
    }


_IMMUTABLE_RULES = [_immutable(f) for f in _IMMUTABLE_FIELDS]


class PipelineSpec(ApiModel):
    """The desired pipeline: stages inline or a template reference, plus limits."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.templateRef) != has(self.stages)",
                    "message": "set exactly one of templateRef or stages",
                },
                *_IMMUTABLE_RULES,
                {
                    "rule": "!has(oldSelf.shutdown) || (has(self.shutdown) && "
                            "(self.shutdown == oldSelf.shutdown || self.shutdown == "
                            "'Terminate'))",
                    "message": "spec.shutdown cannot be removed once set; it may only "
                    "go from Stop to Terminate",
                },
            ]
        }
    }

    template_ref: TemplateRef | None = Field(None, description="Template to instantiate.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters, merged over the template's defaults.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    max_parallel: int | None = Field(None, ge=1, description="Stages running at once.")
    timeout: PositiveDuration | None = Field(None, description="Whole-pipeline deadline.")
    limits: Limits | None = Field(None, description="Bounds (forEach instances).")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the pipeline, with everything it owns, this many "
        "seconds after it finished (default: the operator's, the chart's "
        "operator.ttlSecondsAfterFinished; unset: keep it).")
    budget: Budget | None = Field(None, description="Token and USD budget.")
    storage: Storage | None = Field(None, description="Output and trace storage.")
    defaults: Defaults | None = Field(None, description="Stage defaults.")
    stages: list[Stage] | None = Field(
        None, min_length=1, max_length=MAX_STAGES, description="The stages (unless templateRef).",
        json_schema_extra=_STAGE_LIST,
    )
    finally_: list[StageSpecBody] | None = Field(
        None,
        alias="finally",
        description="Stages run after everything else, whatever the outcome.",
        json_schema_extra=_STAGE_LIST,
    )
    output: str | None = Field(None, description="Final assembly (Jinja2 template).")
    suspend: bool | None = Field(
        None, description="true: no new attempt starts (running ones finish), phase "
        "Suspended; false or unset: run. May change at any time.")
    shutdown: Literal["Stop", "Terminate"] | None = Field(
        None, description="Stop: nothing new starts, running attempts and finally "
        "finish, phase Cancelled (Stopped). Terminate: running attempts are stopped, "
        "finally is skipped, phase Cancelled (Terminated). May be set at any time.")
    resume_from: ResumeFrom | None = Field(
        None, description="Reuse the Succeeded, unchanged stages of an earlier pipeline "
        "(retry from the failure point).")

    @model_validator(mode="after")
    def _template_or_stages(self) -> PipelineSpec:
        if (self.template_ref is None) == (self.stages is None):
            raise ValueError("set exactly one of templateRef or stages")
        return self


class TemplateParam(ApiModel):
    """A template parameter."""

    default: Any = Field(
        None,
        description="Default value.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    description: str | None = Field(None, description="What the parameter means.")


class TemplateSpec(ApiModel):
    """A reusable pipeline body with parameter defaults."""

    params: dict[str, TemplateParam] = Field(
        default_factory=dict, description="Parameters with defaults."
    )
    defaults: Defaults | None = Field(None, description="Stage defaults.")
    stages: list[Stage] = Field(
        min_length=1, max_length=MAX_STAGES, description="The stages.",
        json_schema_extra=_STAGE_LIST,
    )
    finally_: list[StageSpecBody] | None = Field(
        None, alias="finally", description="Finally stages.", json_schema_extra=_STAGE_LIST
    )
    output: str | None = Field(None, description="Final assembly (Jinja2 template).")


_ = ObjectMeta  # re-exported through stagecoach.api
