"""Defaults resolved in one place: template, params and ``spec.defaults`` → stages.

A pipeline may name a template and leave provider, model, timeout and retry to
``spec.defaults``. :func:`resolve_pipeline` applies all of that once and returns a
:class:`ResolvedPipeline` whose stages carry their effective settings, so the engine,
the runner and the shells never re-derive a default. The operator snapshots this
(``snapshot()``) at start so later template edits never change a running pipeline.
No side effects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from .manifest import Problem
from .pipeline import (
    DEFAULT_MAX_INSTANCES,
    AgentSpec,
    ApprovalSpec,
    CachePolicy,
    Defaults,
    RetryPolicy,
    Route,
    RunSpec,
    Stage,
    StageSpecBody,
)
from .resources import AgentPipeline, AgentPipelineTemplate

__all__ = ["ResolvedPipeline", "ResolvedStage", "resolve_pipeline", "stage_hash"]


@dataclass(frozen=True)
class ResolvedStage:
    """A stage with every default applied."""

    name: str
    agent: AgentSpec | None
    run: RunSpec | None
    depends_on: tuple[str, ...] = ()
    when: str | None = None
    for_each: str | None = None
    routes: tuple[Route, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: timedelta | None = None
    on_failure: str = "fail"
    is_finally: bool = False
    path: str = ""
    """Field path of the stage in the manifest, for messages (``spec.stages[2]``)."""
    approval: ApprovalSpec | None = None
    cache: CachePolicy | None = None
    """The stage cache (DESIGN §11); never on finally or approval stages."""

    @property
    def provider(self) -> str | None:
        """The provider an agent stage calls first (None for run stages)."""
        return self.agent.provider if self.agent else None

    @property
    def output_format(self) -> str:
        """``json`` or ``text``."""
        spec = self.agent.output if self.agent else (self.run.output if self.run else None)
        return spec.format if spec else "text"


@dataclass(frozen=True)
class ResolvedPipeline:
    """What the engine plans over: named stages with defaults applied."""

    name: str
    namespace: str | None
    uid: str
    params: dict[str, Any]
    stages: tuple[ResolvedStage, ...]
    finally_stages: tuple[ResolvedStage, ...] = ()
    output: str | None = None
    max_parallel: int | None = None
    timeout: timedelta | None = None
    max_tokens: int | None = None
    max_cost: str | None = None
    """``budget.maxCost`` (USD, a decimal string)."""
    max_instances: int = DEFAULT_MAX_INSTANCES
    stages_path: str = "spec.stages"
    resume_from: str | None = None

    @cached_property
    def _by_name(self) -> dict[str, ResolvedStage]:
        return {s.name: s for s in (*self.stages, *self.finally_stages)}

    def stage(self, name: str) -> ResolvedStage:
        """Look up a stage (regular or finally) by name; KeyError when unknown."""
        return self._by_name[name]

    @property
    def all_stages(self) -> tuple[ResolvedStage, ...]:
        """Regular stages, then finally stages."""
        return (*self.stages, *self.finally_stages)

    @cached_property
    def spec_hashes(self) -> dict[str, str]:
        """Stage name → hash of its resolved spec (what ``resumeFrom`` compares)."""
        return {s.name: stage_hash(s, self.params) for s in self.all_stages}


def stage_hash(stage: ResolvedStage, params: dict[str, Any]) -> str:
    """``sha256:`` of the stage's resolved spec and the pipeline's params, canonical JSON.

    Everything that can change what the stage does is in it: its kind (agent, run or
    approval) with every field after defaults, dependencies, ``when``, ``forEach``,
    routes, retry, timeout and ``onFailure``, and the params (templates may read any of
    them). Not in it: the manifest path, the pipeline's name, uid and limits. A
    ModelProvider's own spec is not either (it is a separate object; say so in reports).
    """
    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", by_alias=True, exclude_none=True) \
            if model is not None else None

    doc = {
        "name": stage.name, "agent": dump(stage.agent), "run": dump(stage.run),
        "approval": dump(stage.approval), "dependsOn": list(stage.depends_on),
        "when": stage.when, "forEach": stage.for_each,
        "routes": [dump(r) for r in stage.routes], "retry": dump(stage.retry),
        "timeout": stage.timeout.total_seconds() if stage.timeout else None,
        "onFailure": stage.on_failure, "finally": stage.is_finally, "params": params,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _resolve_stage(
    stage: StageSpecBody, defaults: Defaults | None, path: str, is_finally: bool
) -> ResolvedStage:
    d = defaults or Defaults()
    agent = stage.agent
    if agent is not None:
        agent = agent.model_copy(
            update={"provider": agent.provider or d.provider, "model": agent.model or d.model}
        )
    extra: dict[str, Any] = {}
    if isinstance(stage, Stage):
        extra = {
            "depends_on": tuple(stage.depends_on),
            "when": stage.when,
            "for_each": stage.for_each,
            "routes": tuple(stage.routes),
            "on_failure": stage.on_failure,
            "approval": stage.approval,
        }
        if stage.approval is None:
            extra["cache"] = stage.cache or d.cache
    return ResolvedStage(
        name=stage.name,
        agent=agent,
        run=stage.run,
        retry=stage.retry or d.retry or RetryPolicy(),
        timeout=stage.timeout or d.timeout,
        is_finally=is_finally,
        path=path,
        **extra,
    )


def resolve_pipeline(
    pipeline: AgentPipeline,
    templates: dict[str, AgentPipelineTemplate] | None = None,
    extra_params: dict[str, Any] | None = None,
) -> tuple[ResolvedPipeline | None, list[Problem]]:
    """Apply template, params and defaults. Returns the result or the problems."""
    spec = pipeline.spec
    problems: list[Problem] = []
    params: dict[str, Any] = {}
    stages_path = "spec.stages"
    if spec.template_ref is not None:
        tpl = (templates or {}).get(spec.template_ref.name)
        if tpl is None:
            known = ", ".join(sorted(templates or {})) or "none given"
            return None, [
                Problem(
                    "spec.templateRef.name",
                    f"template {spec.template_ref.name!r} not found (known: {known})",
                )
            ]
        body = tpl.spec
        declared = body.params
        for name in {**spec.params, **(extra_params or {})}:
            if name not in declared:
                problems.append(
                    Problem(
                        f"spec.params.{name}",
                        f"not a parameter of template {tpl.metadata.name!r} "
                        f"(declared: {', '.join(sorted(declared)) or 'none'})",
                    )
                )
        params = {k: p.default for k, p in declared.items()}
        stages, fin, output = body.stages, body.finally_ or [], body.output
        defaults = _merge_defaults(body.defaults, spec.defaults)
        stages_path = f"template {tpl.metadata.name}: spec.stages"
    else:
        stages, fin, output = spec.stages or [], spec.finally_ or [], spec.output
        defaults = spec.defaults
    params.update(spec.params)
    params.update(extra_params or {})
    if problems:
        return None, problems
    resolved = ResolvedPipeline(
        name=pipeline.metadata.name,
        namespace=pipeline.metadata.namespace,
        uid=pipeline.metadata.uid or "",
        params=params,
        stages=tuple(
            _resolve_stage(s, defaults, f"{stages_path}[{i}]", False) for i, s in enumerate(stages)
        ),
        finally_stages=tuple(
            _resolve_stage(s, defaults, f"{stages_path.replace('stages', 'finally')}[{i}]", True)
            for i, s in enumerate(fin)
        ),
        output=output if spec.output is None else spec.output,
        max_parallel=spec.max_parallel,
        timeout=spec.timeout,
        max_tokens=spec.budget.max_tokens if spec.budget else None,
        max_cost=spec.budget.max_cost if spec.budget else None,
        max_instances=(spec.limits.max_instances if spec.limits
                       else DEFAULT_MAX_INSTANCES),
        stages_path=stages_path,
        resume_from=spec.resume_from.name if spec.resume_from else None,
    )
    return resolved, []


def _merge_defaults(base: Defaults | None, over: Defaults | None) -> Defaults | None:
    if base is None or over is None:
        return over or base
    merged = base.model_dump(exclude_none=True)
    merged.update(over.model_dump(exclude_none=True))
    return Defaults.model_validate(merged)
