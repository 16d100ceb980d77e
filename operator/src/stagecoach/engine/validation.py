"""Semantic checks the schema cannot express: graph shape, expressions, providers.

The pydantic models catch shape and type errors; this module catches what needs the
whole pipeline: unknown or cyclic dependencies, back-edges that are not to ancestors,
CEL and Jinja2 that do not compile, references to stages that do not exist, and
providers that are not defined. The same checks back ``stagecoach validate`` and the
operator's ``Invalid`` phase. Every problem names its field path. No side effects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..api import (
    AgentPipeline,
    AgentPipelineTemplate,
    ManifestSet,
    ModelProvider,
    ObjectMeta,
    PipelineSpec,
    Problem,
    ResolvedPipeline,
    ResolvedStage,
    resolve_pipeline,
)
from .dag import build
from .expressions import check_cel, check_template

__all__ = ["validate_manifests", "validate_pipeline", "validate_resolved"]

_DOT_REF = re.compile(r"\bstages\.([A-Za-z0-9_][A-Za-z0-9_-]*)")
_INDEX_REF = re.compile(r"\bstages\[\s*['\"]([^'\"]+)['\"]\s*\]")


def _stage_refs(source: str, names: set[str]) -> str | None:
    """Complain about ``stages.X`` references to unknown stages or hyphen misuse."""
    for m in _DOT_REF.finditer(source):
        ref = m.group(1)
        if ref in names:
            continue
        head = ref.split("-")[0]
        hyphenated = [n for n in names if "-" in n and ref.startswith(n.split("-")[0])]
        if "-" in ref or hyphenated:
            hint = hyphenated[0] if hyphenated else ref
            return (f"stage names with '-' must be written stages['{hint}'] "
                    f"(stages.{hint} reads as a subtraction)")
        if head not in names:
            return f"refers to unknown stage {ref!r}"
    for m in _INDEX_REF.finditer(source):
        if m.group(1) not in names:
            return f"refers to unknown stage {m.group(1)!r}"
    return None


def validate_resolved(
    pipeline: ResolvedPipeline, providers: Mapping[str, ModelProvider] | None = None
) -> list[Problem]:
    """Check a resolved pipeline; ``providers`` None means "providers unknown here"."""
    problems: list[Problem] = []
    stages = pipeline.stages
    fin = pipeline.finally_stages
    graph, errors = build([(s.name, s.depends_on) for s in stages])
    fin_names = {s.name for s in fin}
    for err in errors:
        stage = stages[err.stage_index]
        reason = err.reason
        if reason.startswith("unknown stage") and reason.split("'")[1] in fin_names:
            reason += " (finally stages cannot be dependencies)"
        problems.append(Problem(f"{stage.path}.{err.field}", reason))
    names = {s.name for s in stages}
    for s in fin:
        if s.name in names:
            problems.append(Problem(f"{s.path}.name",
                                    f"finally stage name {s.name!r} is also a stage name"))
    all_names = names | fin_names
    for s in (*stages, *fin):
        problems.extend(_check_stage(s, all_names, providers))
        if graph is None:
            continue
        ancestors = graph.ancestors(s.name) if not s.is_finally else set()
        for i, route in enumerate(s.routes):
            if route.goto not in names:
                problems.append(Problem(f"{s.path}.routes[{i}].goto",
                                        f"unknown stage {route.goto!r}"))
            elif route.goto not in ancestors:
                problems.append(Problem(
                    f"{s.path}.routes[{i}].goto",
                    f"{route.goto!r} is not an ancestor of {s.name!r}: a back-edge must go "
                    "to a stage this one depends on, directly or not"))
    if pipeline.output is not None:
        err_t = check_template(pipeline.output) or _stage_refs(pipeline.output, all_names)
        if err_t:
            problems.append(Problem("spec.output", err_t))
    return problems


def _check_stage(s: ResolvedStage, names: set[str],
                 providers: Mapping[str, ModelProvider] | None) -> list[Problem]:
    out: list[Problem] = []
    for field_name, source in (("when", s.when), ("forEach", s.for_each),
                               *((f"routes[{i}].when", r.when) for i, r in enumerate(s.routes))):
        if source is None:
            continue
        err = check_cel(source) or _stage_refs(source, names)
        if err:
            out.append(Problem(f"{s.path}.{field_name}", err))
    if s.agent is not None:
        for field_name, text in (("agent.prompt", s.agent.prompt),
                                 ("agent.system", s.agent.system)):
            if text is None:
                continue
            err = check_template(text) or _stage_refs(text, names)
            if err:
                out.append(Problem(f"{s.path}.{field_name}", err))
        if s.agent.provider is None:
            out.append(Problem(f"{s.path}.agent.provider",
                               "no provider: set agent.provider or spec.defaults.provider"))
        elif providers is not None:
            out.extend(_check_provider(f"{s.path}.agent", s.agent.provider, s.agent.model,
                                       providers))
        for i, fb in enumerate(s.agent.fallbacks):
            if providers is not None:
                out.extend(_check_provider(f"{s.path}.agent.fallbacks[{i}]", fb.provider,
                                           fb.model or s.agent.model, providers))
    return out


def _check_provider(path: str, name: str, model: str | None,
                    providers: Mapping[str, ModelProvider]) -> list[Problem]:
    provider = providers.get(name)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none defined"
        return [Problem(f"{path}.provider", f"unknown provider {name!r} (known: {known})")]
    if provider.spec.type != "replay" and model is None:
        return [Problem(f"{path}.model",
                        f"provider {name!r} ({provider.spec.type}) needs a model: set "
                        "agent.model or spec.defaults.model")]
    return []


def validate_pipeline(
    pipeline: AgentPipeline,
    templates: Mapping[str, AgentPipelineTemplate] | None = None,
    providers: Mapping[str, ModelProvider] | None = None,
) -> tuple[ResolvedPipeline | None, list[Problem]]:
    """Resolve and check a pipeline; the resolved form is returned only when valid."""
    resolved, problems = resolve_pipeline(pipeline, dict(templates or {}))
    if resolved is None:
        return None, problems
    problems = validate_resolved(resolved, providers)
    return (resolved if not problems else None), problems


def _template_as_pipeline(tpl: AgentPipelineTemplate) -> AgentPipeline:
    spec = PipelineSpec.model_validate({
        "stages": [s.model_dump(by_alias=True, exclude_none=True) for s in tpl.spec.stages],
        "finally": [s.model_dump(by_alias=True, exclude_none=True)
                    for s in tpl.spec.finally_ or []] or None,
        "output": tpl.spec.output,
        "defaults": tpl.spec.defaults.model_dump(by_alias=True, exclude_none=True)
        if tpl.spec.defaults else None,
        "params": {k: p.default for k, p in tpl.spec.params.items()},
    })
    return AgentPipeline(api_version="stagecoach.dev/v1alpha1", kind="AgentPipeline",
                         metadata=ObjectMeta(name=tpl.metadata.name), spec=spec)


def validate_manifests(manifests: ManifestSet,
                       extra_providers: Mapping[str, ModelProvider] | None = None
                       ) -> list[Problem]:
    """Check every pipeline and template in a set of parsed documents."""
    problems: list[Problem] = []
    templates = manifests.templates()
    providers: dict[str, ModelProvider] | None = {**manifests.providers(),
                                                  **(extra_providers or {})} or None
    for doc in manifests.documents:
        found: list[Problem] = []
        if isinstance(doc.obj, AgentPipeline):
            _, found = validate_pipeline(doc.obj, templates, providers)
            if doc.obj.spec.template_ref is not None:
                found = [p for p in found if not p.path.startswith("template ")]
        elif isinstance(doc.obj, AgentPipelineTemplate):
            resolved, found = resolve_pipeline(_template_as_pipeline(doc.obj))
            if resolved is not None:
                found = validate_resolved(resolved, providers)
        for p in found:
            line = p.line
            if line is None:
                line = _line_for(doc.lines, p.path)
            problems.append(Problem(p.path, p.message, line, doc.file, doc.index))
    return problems


def _line_for(lines: Mapping[tuple[str | int, ...], int], path: str) -> int | None:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in lines:
            return lines[tuple(parts[:n])]
    return None
