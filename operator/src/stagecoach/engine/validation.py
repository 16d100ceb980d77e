"""Semantic checks the schema cannot express: graph shape, expressions, providers.

The pydantic models catch shape and type errors; this module catches what needs the
whole pipeline: unknown or cyclic dependencies, back-edges that are not to ancestors,
CEL and Jinja2 that cannot work (see :mod:`.expressions`), constant conditions of the
wrong type, references to stages that do not exist or that the stage does not depend on
(their output would be missing or racy), providers that are not defined, and object
names the API server would refuse. The same checks back ``stagecoach validate`` and the
operator's ``Invalid`` phase. Every problem names its field path.

A document that failed the schema arrives salvaged (:mod:`stagecoach.api.salvage`): it
is checked like the others, and what is found where it was repaired is left out, so the
user sees the schema problems and every other problem once. No side effects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..api import (
    AgentPipeline,
    AgentPipelineTemplate,
    Document,
    ManifestSet,
    ModelProvider,
    ObjectMeta,
    PipelineSpec,
    Problem,
    ResolvedPipeline,
    ResolvedStage,
    name_problem,
    resolve_pipeline,
)
from .dag import Graph, build
from .expressions import (
    cel_stage_refs,
    check_cel,
    template_error,
    template_stage_refs,
)

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


def _template_problem(path: str, source: str, names: set[str]) -> Problem | None:
    err = template_error(source)
    if err is not None:
        suffix = f" (template line {err.line})" if err.line and err.line > 1 else ""
        return Problem(path, err.message + suffix, source_line=err.line)
    ref = _stage_refs(source, names)
    return Problem(path, ref) if ref else None


def validate_resolved(
    pipeline: ResolvedPipeline, providers: Mapping[str, ModelProvider] | None = None,
    *, unchecked_providers: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Check a resolved pipeline; ``providers`` None means "providers unknown here";
    ``unchecked_providers`` are names that exist but could not be read (their own
    problems are reported elsewhere)."""
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
        problems.extend(_check_stage(s, all_names, providers, unchecked_providers))
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
    if graph is not None:
        problems.extend(_check_reads(stages, graph, fin_names))
    if pipeline.output is not None:
        found = _template_problem("spec.output", pipeline.output, all_names)
        if found:
            problems.append(found)
    return problems


def _visible(stages: tuple[ResolvedStage, ...], graph: Graph) -> dict[str, set[str]]:
    """The stages whose output each stage can count on: its ancestors, and — inside a
    loop — what ran before the back-edge that repeats it (read from iteration 2 on)."""
    visible = {s.name: graph.ancestors(s.name) for s in stages}
    for s in stages:
        upstream = graph.ancestors(s.name) | {s.name}
        for route in s.routes:
            if route.goto not in upstream:
                continue  # not a back-edge to an ancestor: reported above
            body = ({route.goto} | graph.descendants(route.goto)) & upstream
            for member in body:
                visible[member] |= upstream
    return visible


def _check_reads(stages: tuple[ResolvedStage, ...], graph: Graph,
                 finally_names: set[str]) -> list[Problem]:
    """A stage may read only stages it depends on, directly or not; anything else has
    no output yet (or, racing, sometimes has one)."""
    names = {s.name for s in stages}
    visible = _visible(stages, graph)
    out: list[Problem] = []
    for s in stages:
        fields: list[tuple[str, set[str], bool]] = [
            (f, cel_stage_refs(src), False)
            for f, src in (("when", s.when), ("forEach", s.for_each)) if src]
        fields += [(f"routes[{i}].when", cel_stage_refs(r.when), True)
                   for i, r in enumerate(s.routes)]
        if s.agent is not None:
            fields += [(f, template_stage_refs(src), False)
                       for f, src in (("agent.prompt", s.agent.prompt),
                                      ("agent.system", s.agent.system)) if src]
        if s.approval is not None:
            fields.append(("approval.message", template_stage_refs(s.approval.message), False))
        for field_name, refs, after in fields:
            allowed = visible[s.name] | ({s.name} if after else set())
            for ref in sorted(refs - allowed):
                reason = _read_reason(s.name, ref, names, finally_names)
                if reason:
                    out.append(Problem(f"{s.path}.{field_name}", reason))
                    break
    return out


def _read_reason(stage: str, ref: str, names: set[str], finally_names: set[str]) -> str | None:
    if ref in finally_names:
        return f"reads finally stage {ref!r}, which runs only after every other stage"
    if ref not in names:
        return None  # unknown stages are reported by the reference check
    if ref == stage:
        return (f"reads its own stage {ref!r}, which has no output when this is evaluated "
                "(outside a loop that repeats it)")
    return (f"reads stage {ref!r}, which {stage!r} does not depend on: add it to dependsOn "
            "(directly or through another stage), or its output may not exist yet")


def _check_stage(s: ResolvedStage, names: set[str],
                 providers: Mapping[str, ModelProvider] | None,
                 unchecked: frozenset[str]) -> list[Problem]:
    out: list[Problem] = []
    conditions = (("when", s.when, "bool"), ("forEach", s.for_each, "list"),
                  *((f"routes[{i}].when", r.when, "bool") for i, r in enumerate(s.routes)))
    for field_name, source, expect in conditions:
        if source is None:
            continue
        err = check_cel(source, expect) or _stage_refs(source, names)
        if err:
            out.append(Problem(f"{s.path}.{field_name}", err))
    if s.approval is not None:
        found = _template_problem(f"{s.path}.approval.message", s.approval.message, names)
        if found:
            out.append(found)
    if s.agent is not None:
        for field_name, text in (("agent.prompt", s.agent.prompt),
                                 ("agent.system", s.agent.system)):
            found = _template_problem(f"{s.path}.{field_name}", text, names) if text else None
            if found:
                out.append(found)
        if s.agent.provider is None:
            out.append(Problem(f"{s.path}.agent.provider",
                               "no provider: set agent.provider or spec.defaults.provider"))
        elif providers is not None:
            out.extend(_check_provider(f"{s.path}.agent", s.agent.provider, s.agent.model,
                                       providers, unchecked))
        for i, fb in enumerate(s.agent.fallbacks):
            if providers is not None:
                out.extend(_check_provider(f"{s.path}.agent.fallbacks[{i}]", fb.provider,
                                           fb.model or s.agent.model, providers, unchecked))
    return out


def _check_provider(path: str, name: str, model: str | None,
                    providers: Mapping[str, ModelProvider],
                    unchecked: frozenset[str]) -> list[Problem]:
    if name in unchecked:
        return []
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
    *, unchecked_providers: frozenset[str] = frozenset(),
) -> tuple[ResolvedPipeline | None, list[Problem]]:
    """Resolve and check a pipeline; the resolved form is returned only when valid."""
    resolved, problems = resolve_pipeline(pipeline, dict(templates or {}))
    if resolved is None:
        return None, problems
    problems = validate_resolved(resolved, providers, unchecked_providers=unchecked_providers)
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
    """Check every document in a set of parsed documents (valid and salvaged)."""
    problems: list[Problem] = []
    templates = manifests.templates(salvaged=True)
    providers: dict[str, ModelProvider] | None = {**manifests.providers(salvaged=True),
                                                  **(extra_providers or {})} or None
    broken = {(k, n) for k, n in manifests.broken}
    unchecked = frozenset(n for k, n in broken if k == "ModelProvider")
    if unchecked and providers is None:
        providers = {}
    for doc in (*manifests.documents, *manifests.salvaged):
        found = _check_document(doc, templates, providers, unchecked, broken)
        if doc.repaired:
            found = [p for p in found if not _hidden_by_repair(p.path, doc.repaired)]
        for p in found:
            problems.append(_locate(p, doc))
    return problems


def _check_document(doc: Document, templates: Mapping[str, AgentPipelineTemplate],
                    providers: Mapping[str, ModelProvider] | None,
                    unchecked: frozenset[str], broken: set[tuple[str, str]]) -> list[Problem]:
    found: list[Problem] = []
    name = getattr(getattr(doc.obj, "metadata", None), "name", None)
    if isinstance(name, str):
        why = name_problem(name)
        if why:
            found.append(Problem("metadata.name", why))
    if isinstance(doc.obj, AgentPipeline):
        ref = doc.obj.spec.template_ref
        if ref is not None and ("AgentPipelineTemplate", ref.name) in broken:
            return found  # the template's own problems are reported with it
        _, more = validate_pipeline(doc.obj, templates, providers,
                                    unchecked_providers=unchecked)
        if ref is not None:
            more = [p for p in more if not p.path.startswith("template ")]
        found.extend(more)
    elif isinstance(doc.obj, AgentPipelineTemplate):
        resolved, more = resolve_pipeline(_template_as_pipeline(doc.obj))
        if resolved is not None:
            more = validate_resolved(resolved, providers, unchecked_providers=unchecked)
        found.extend(more)
    return found


def _hidden_by_repair(path: str, repaired: tuple[tuple[str | int, ...], ...]) -> bool:
    """Is this problem possibly an artefact of salvaging the document?"""
    parts = _parts(path)
    for loc in repaired:
        if tuple(parts[:len(loc)]) == loc:
            return True
        if loc[:2] == ("spec", "defaults") and parts[-1:] in (["provider"], ["model"]):
            return True  # defaults feed every stage's provider and model
    return False


def _locate(p: Problem, doc: Document) -> Problem:
    """Place a problem in its file: the YAML line, exact inside a ``|`` block."""
    line, message = p.line, p.message
    key = tuple(_parts(p.path))
    if p.source_line and key in doc.blocks:
        line = doc.blocks[key] + p.source_line
        message = message.removesuffix(f" (template line {p.source_line})")
    if line is None:
        line = _line_for(doc.lines, p.path)
    return Problem(p.path, message, line, doc.file, doc.index)


def _parts(path: str) -> list[str | int]:
    return [int(t[1:-1]) if t.startswith("[") else t
            for t in re.findall(r"[^.\[\]]+|\[\d+\]", path)]


def _line_for(lines: Mapping[tuple[str | int, ...], int], path: str) -> int | None:
    parts = _parts(path)
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in lines:
            return lines[tuple(parts[:n])]
    return None
