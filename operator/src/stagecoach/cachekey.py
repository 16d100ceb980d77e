"""The stage cache's key: a sha256 over exactly what determines a stage's answer
(DESIGN §11).

Both shells compute it from the attempt they are about to start and the run state's
outputs, before any pod or process exists, so a hit costs no Job and no model call.

What is hashed (canonical JSON: sorted keys, no whitespace, UTF-8), under a format
version ``stagecoach-cache/1``:

agent stages
    the provider's ``type`` and ``baseURL``; ``model``; the *rendered* ``system`` and
    ``prompt`` (Jinja2 over the same variables the runner uses, so a change in an
    upstream output the prompt reads changes the key, and one it does not read does
    not); ``temperature``; ``maxTokens``; ``output`` (format and JSON Schema).
run stages
    ``image``, ``command``, ``args``, ``workingDir``, ``env`` (literal values, and
    ``valueFrom`` as the reference it is: a Secret's content is never read, so changing
    a Secret does not change the key), ``output`` (format and schema) and the input
    document: ``params``, ``item``, ``index`` and, of the stage's ancestors only (its
    transitive ``dependsOn``), each one's ``output`` and ``phase``.
both
    the stage's loop iteration: a back-edge re-runs a stage to get a *different*
    answer, so iteration 2 never answers with iteration 1's entry (a re-run of the same
    pipeline still hits at every iteration).

Not hashed, on purpose: the pipeline's name and uid, the stage's name, retry, timeout,
resources, fallbacks, ``forEach``/``when``/routes, attempt numbers, upstream attempt and
iteration numbers, the API key, non-ancestor stages (their phase at the moment of the
start is timing noise), and the provider's limits and prices. No side effects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from stagecoach_runner.errors import AttemptError
from stagecoach_runner.templating import render

from .api import AttemptSpec, ProviderSpec, ResolvedPipeline

__all__ = ["KEY_VERSION", "ancestors", "cache_key", "key_document"]

KEY_VERSION = "stagecoach-cache/1"


def ancestors(pipeline: ResolvedPipeline, name: str) -> set[str]:
    """The transitive ``dependsOn`` of stage ``name``."""
    out: set[str] = set()
    todo = list(pipeline.stage(name).depends_on)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(pipeline.stage(n).depends_on)
    return out


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) \
        if model is not None else None


def key_document(pipeline: ResolvedPipeline, spec: AttemptSpec,
                 variables: Mapping[str, Any],
                 providers: Mapping[str, ProviderSpec]) -> dict[str, Any] | None:
    """What :func:`cache_key` hashes, or None when the stage cannot be keyed (its
    provider is unknown, or its prompt does not render: the attempt then runs and fails
    with the runner's own message)."""
    doc: dict[str, Any] = {"v": KEY_VERSION, "iteration": spec.iteration}
    agent, run = spec.agent, spec.run
    if agent is not None:
        provider = providers.get(agent.provider or "")
        if provider is None:
            return None
        try:
            system = (render(agent.system, dict(variables), field="agent.system")
                      if agent.system else None)
            prompt = render(agent.prompt, dict(variables), field="agent.prompt")
        except (AttemptError, RecursionError):
            return None
        doc["agent"] = {
            "provider": {"type": provider.type, "baseURL": provider.base_url},
            "model": agent.model, "system": system, "prompt": prompt,
            "temperature": agent.temperature, "maxTokens": agent.max_tokens,
            "output": _dump(agent.output),
        }
        return doc
    if run is None:
        return None
    stages = variables.get("stages") or {}
    wanted = ancestors(pipeline, spec.stage.name)
    doc["run"] = {
        "image": run.image, "command": run.command, "args": run.args,
        "workingDir": run.working_dir, "env": [_dump(e) for e in run.env],
        "output": _dump(run.output),
        "input": {
            "params": variables.get("params"),
            "item": variables.get("item"), "index": variables.get("index"),
            "stages": {n: {"output": s.get("output"), "phase": s.get("phase")}
                       for n, s in stages.items() if n in wanted},
        },
    }
    return doc


def cache_key(pipeline: ResolvedPipeline, spec: AttemptSpec, variables: Mapping[str, Any],
              providers: Mapping[str, ProviderSpec]) -> str | None:
    """The hex sha256 of :func:`key_document`, or None when the stage cannot be keyed."""
    doc = key_document(pipeline, spec, variables, providers)
    if doc is None:
        return None
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()
