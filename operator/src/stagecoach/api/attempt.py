"""One stage attempt, as handed to the runner and as reported back (DESIGN §2, §6).

The shells (operator, local executor) decide *that* an attempt runs; ``stagecoach-runner``
runs it. :class:`AttemptSpec` is everything the runner needs, with every default already
applied, so the runner never reads the pipeline or its template. It travels as JSON in
the ``STAGECOACH_ATTEMPT`` environment variable (pods) or a file, or as the object itself
when the local executor calls the runner in-process. :class:`AttemptResult` comes back
in the pod's termination message (JSON, under 4 KiB) and as the runner's exit code
(:data:`EXIT_CODES`), so the operator learns the error class even when the termination
message is lost. No side effects.

Upstream outputs are passed as store keys, never inline, so the spec stays small however
large the outputs are; the runner loads them from the store named by :class:`StoreRef`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ._base import ApiModel
from .pipeline import AgentSpec, ErrorClass, RetryPolicy, RunSpec, StageSpecBody
from .pricing import ModelUsage
from .provider import ProviderSpec
from .resolve import ResolvedStage
from .status import TokenUsage

__all__ = [
    "ATTEMPT_ENV",
    "EXIT_CODES",
    "INLINE_OUTPUT_LIMIT",
    "TERMINATION_LIMIT",
    "AttemptResult",
    "AttemptSpec",
    "LoopInfo",
    "PipelineRef",
    "StoreRef",
    "UpstreamRef",
    "error_class_for_exit",
    "exit_code_for",
    "inline_output",
    "stage_body",
]

ATTEMPT_ENV = "STAGECOACH_ATTEMPT"
"""Environment variable holding the :class:`AttemptSpec` as JSON."""

TERMINATION_LIMIT = 4096
INLINE_OUTPUT_LIMIT = 2048
"""Stored outputs up to this many bytes also travel in the termination message."""
"""Kubernetes keeps at most 4096 bytes of a container's termination message."""

EXIT_CODES: dict[str, int] = {
    "Error": 1,
    "Timeout": 2,
    "RateLimited": 3,
    "MalformedOutput": 4,
    "ProviderUnavailable": 5,
    "ContextOverflow": 6,
    "BudgetExceeded": 7,
    "OutputTooLarge": 8,
    "InvalidInput": 9,
}
"""Runner exit code per error class; 0 is success. Stable: the operator relies on it."""


def exit_code_for(error_class: ErrorClass | None) -> int:
    """The runner's exit code for a result's error class (0 for success)."""
    return 0 if error_class is None else EXIT_CODES[error_class]


def error_class_for_exit(code: int) -> ErrorClass | None:
    """Inverse of :func:`exit_code_for`; unknown non-zero codes (a crash, OOM kill) → Error."""
    if code == 0:
        return None
    for name, value in EXIT_CODES.items():
        if value == code:
            return name  # type: ignore[return-value]
    return "Error"


class PipelineRef(ApiModel):
    """The pipeline an attempt belongs to (for trace events and labels)."""

    name: str = Field(description="Pipeline name.")
    namespace: str | None = Field(None, description="Namespace (cluster only).")
    uid: str = Field("", description="Pipeline UID (a run id in local mode).")


class LoopInfo(ApiModel):
    """The ``loop`` template variable: which iteration and why."""

    iteration: int = Field(1, ge=1, description="Iteration of the stage, from 1.")
    from_: str | None = Field(None, alias="from", description="Stage whose route looped back.")
    reason: str | None = Field(None, description="The route condition that matched.")


class UpstreamRef(ApiModel):
    """Where the runner finds another stage's latest output (``stages.<name>``)."""

    phase: str = Field(description="Stage phase (Succeeded, Failed, Skipped, ...).")
    iteration: int = Field(1, ge=1, description="Iteration the output belongs to.")
    attempt: int = Field(0, ge=0, description="Attempt that produced it.")
    output_ref: str | None = Field(
        None, description="Store key of the output; null: the stage has no output."
    )
    instance_refs: list[str | None] | None = Field(
        None,
        description="forEach stages: store keys of the instance outputs in index order "
        "(null for a failed instance); the output is the list of their values.",
    )
    inline: bool = Field(
        False,
        description="True: ``value`` is the output itself (a small one, copied by the "
        "operator from the run state), and the runner reads no store for it.",
    )
    value: Any = Field(None, description="The output when ``inline``.")


class StoreRef(ApiModel):
    """The store the runner reads upstream outputs from and writes its output and trace to."""

    type: Literal["local", "configmap", "s3"] = Field(description="Store backend.")
    path: str | None = Field(None, description="local: the run directory.")
    bucket: str | None = Field(None, description="s3: bucket.")
    prefix: str = Field("", description="s3: key prefix; configmap: ConfigMap name prefix.")
    endpoint: str | None = Field(None, description="s3: endpoint URL for non-AWS servers.")
    region: str | None = Field(None, description="s3: region.")
    namespace: str | None = Field(None, description="configmap: namespace.")
    overflow: StoreRef | None = Field(
        None,
        description="An object store (type s3) taking values over spillThreshold; the "
        "primary store keeps a pointer (stagecoach.store.SpillStore).",
    )
    spill_threshold: int | None = Field(
        None, ge=0, description="With overflow: values larger than this many bytes spill."
    )
    prepared: bool = Field(
        False,
        description="configmap: the operator created every object this attempt writes "
        "(labelled stagecoach.dev/writer with the Job's name) and the runner only updates "
        "them; a stage pod may not create ConfigMaps (DESIGN §6).",
    )


class AttemptSpec(ApiModel):
    """Everything one stage attempt needs; defaults are already applied."""

    pipeline: PipelineRef = Field(description="The pipeline.")
    stage: StageSpecBody = Field(
        description="The stage with defaults applied (provider, model, retry, timeout)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Pipeline parameters.")
    iteration: int = Field(1, ge=1, description="Iteration of the stage, from 1.")
    attempt: int = Field(1, ge=1, description="Attempt within the iteration, from 1.")
    index: int | None = Field(None, ge=0, description="forEach instance number.")
    item: Any = Field(None, description="forEach item.")
    loop: LoopInfo = Field(default_factory=LoopInfo, description="The loop variable.")
    upstream: dict[str, UpstreamRef] = Field(
        default_factory=dict, description="stages.<name>: latest outputs of other stages."
    )
    store: StoreRef = Field(description="Where outputs and the trace live.")
    providers: dict[str, ProviderSpec] = Field(
        default_factory=dict, description="Providers the stage may call (its own + fallbacks)."
    )
    previous_error: str | None = Field(
        None, description="Message of the previous attempt's MalformedOutput, for the prompt."
    )
    base_dir: str | None = Field(
        None,
        description="Local mode: the manifest's directory; relative cassette paths and "
        "run-stage working directories resolve against it.",
    )

    @property
    def agent(self) -> AgentSpec | None:
        """The stage's agent spec (None for run stages)."""
        return self.stage.agent

    @property
    def run(self) -> RunSpec | None:
        """The stage's run spec (None for agent stages)."""
        return self.stage.run

    @property
    def label(self) -> str:
        """``stage[#index] iteration N attempt M`` for messages."""
        inst = f"[{self.index}]" if self.index is not None else ""
        return f"{self.stage.name}{inst} iteration {self.iteration} attempt {self.attempt}"

    def to_json(self) -> str:
        """Compact JSON (camelCase), the form of ``STAGECOACH_ATTEMPT``."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> AttemptSpec:
        """Parse :meth:`to_json` output (raises pydantic's ValidationError)."""
        return cls.model_validate_json(text)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> AttemptSpec:
        """Read the spec from ``path`` if given, else from ``$STAGECOACH_ATTEMPT``."""
        if path is not None:
            return cls.from_json(Path(path).read_bytes())
        env = os.environ if environ is None else environ
        text = env.get(ATTEMPT_ENV)
        if not text:
            raise ValueError(f"no attempt given: set {ATTEMPT_ENV} or pass --attempt FILE")
        return cls.from_json(text)


def inline_output(data: bytes) -> str | None:
    """The stored output ``data`` as :attr:`AttemptResult.output`: UTF-8 text of at most
    :data:`INLINE_OUTPUT_LIMIT` bytes, else None (the reader goes to the store)."""
    if len(data) > INLINE_OUTPUT_LIMIT:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


class AttemptResult(ApiModel):
    """What one attempt produced: success with an output key, or an error class."""

    phase: Literal["Succeeded", "Failed"] = Field(description="Succeeded or Failed.")
    error_class: ErrorClass | None = Field(None, description="Failed only: the error class.")
    message: str | None = Field(None, description="What went wrong, for the user.")
    tokens: TokenUsage = Field(
        default_factory=TokenUsage, description="Tokens reported, including rejected answers."
    )
    output_ref: str | None = Field(None, description="Store key of the output.")
    output: str | None = Field(
        None,
        description="The stored output's bytes (UTF-8), when they fit the termination "
        "message: the operator reads them here instead of from the store (one request "
        "less per attempt). The store stays the record.",
    )
    usage: list[ModelUsage] = Field(
        default_factory=list, max_length=16,
        description="The tokens per provider and model (a fallback's apart from the "
        "stage's own), so each is billed at its own price. They add up to ``tokens``.")
    duration_ms: int = Field(0, ge=0, description="Wall time of the attempt.")
    provider: str | None = Field(None, description="Provider that answered (agent stages).")
    model: str | None = Field(None, description="Model that answered (agent stages).")

    @property
    def ok(self) -> bool:
        """True when the attempt succeeded."""
        return self.phase == "Succeeded"

    @property
    def exit_code(self) -> int:
        """The runner's exit code for this result (:data:`EXIT_CODES`)."""
        return 0 if self.ok else exit_code_for(self.error_class or "Error")

    @classmethod
    def failed(cls, error_class: ErrorClass, message: str, **kw: Any) -> AttemptResult:
        """A failed result."""
        return cls(phase="Failed", error_class=error_class, message=message, **kw)

    def to_termination_message(self, limit: int = TERMINATION_LIMIT) -> str:
        """JSON under ``limit`` bytes: the inline ``output`` goes first, then the message
        is shortened (never the counters)."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > limit and self.output is not None:
            return self.model_copy(update={"output": None}).to_termination_message(limit)
        if len(text.encode()) <= limit or not self.message:
            return text
        message = self.message
        while message:
            over = len(text.encode()) - limit
            keep = max(0, len(message) - over - 16)
            message = message[:keep]
            text = self.model_copy(update={"message": message + "… (truncated)"}).model_dump_json(
                by_alias=True, exclude_none=True
            )
            if len(text.encode()) <= limit:
                return text
        return self.model_copy(update={"message": None}).model_dump_json(
            by_alias=True, exclude_none=True
        )

    @classmethod
    def from_termination_message(cls, text: str | bytes) -> AttemptResult:
        """Parse a termination message written by :meth:`to_termination_message`."""
        return cls.model_validate(json.loads(text))


def stage_body(stage: ResolvedStage) -> StageSpecBody:
    """The serializable stage of an :class:`AttemptSpec` from a resolved stage."""
    return StageSpecBody(
        name=stage.name,
        agent=stage.agent,
        run=stage.run,
        retry=stage.retry or RetryPolicy(),
        timeout=stage.timeout,
    )
