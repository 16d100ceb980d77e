"""From the engine's ``StartAttempt`` to the runner's ``AttemptSpec``, and back.

Both shells (local executor, operator) start attempts the same way: this module builds
the :class:`~stagecoach.api.AttemptSpec` the runner needs from the action, the run state
and the providers, and turns the runner's :class:`~stagecoach.api.AttemptResult` into
the engine's :class:`~stagecoach.engine.AttemptOutcome`. No side effects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from stagecoach_runner.templating import referenced_stages

from .api import (
    AttemptResult,
    AttemptSpec,
    LoopInfo,
    ModelProvider,
    ModelUsage,
    PipelineRef,
    ProviderSpec,
    ResolvedPipeline,
    StoreRef,
    UpstreamRef,
    cost_of,
    stage_body,
)
from .engine import AttemptOutcome, RunState, StartAttempt, Tokens

__all__ = ["attempt_cost", "build_attempt", "outcome_from_result", "upstream_refs"]


def _read_by(*templates: str | None) -> set[str] | None:
    """Stages an agent stage's templates read: only their references travel in the spec
    (a run stage gets them all: its ``STAGECOACH_INPUT`` lists every stage)."""
    return referenced_stages(*templates)


INLINE_UPSTREAM_LIMIT = 2048
"""An upstream output whose JSON is at most this many bytes travels in the attempt spec
(the runner then reads no store for it: one request less per input in the cluster)."""
INLINE_UPSTREAM_TOTAL = 16 * 1024
"""At most this many bytes of inlined outputs per attempt spec (it is an environment
variable of the pod: Linux caps one at 128 KiB)."""


def _may_fit(value: Any, limit: int) -> bool:
    """False once a lower bound of ``value``'s JSON size passes ``limit``, without
    encoding it: a megabyte-sized output is turned down by its length alone (this runs
    on the operator's event loop for every upstream of every attempt)."""
    budget, stack = limit, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            budget -= len(v) + 2
        elif isinstance(v, dict):
            budget -= 1 + len(v)
            stack += [*v.keys(), *v.values()]
        elif isinstance(v, list | tuple):
            budget -= 1 + len(v)
            stack += v
        else:
            budget -= 1
        if budget < 0:
            return False
    return True


def _inline(value: Any, budget: int) -> int | None:
    """The JSON size of ``value`` when it may be inlined within ``budget``, else None.
    A null value is never inlined: the state cannot tell it from one not loaded."""
    limit = min(INLINE_UPSTREAM_LIMIT, budget)
    if value is None or not _may_fit(value, limit):
        return None
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return None
    return size if size <= limit else None


def upstream_refs(state: RunState, only: set[str] | None = None) -> dict[str, UpstreamRef]:
    """``stages.<name>`` for the runner: latest output references of every stage (or of
    ``only`` those an agent stage's templates read), small outputs inlined."""
    refs: dict[str, UpstreamRef] = {}
    budget = INLINE_UPSTREAM_TOTAL
    for name, run in state.stages.items():
        if only is not None and name not in only:
            continue
        ref = None if run.instance_refs is not None else run.output_ref
        size = _inline(run.output, budget) if ref is not None else None
        if size is not None:
            budget -= size
        refs[name] = UpstreamRef.model_construct(
            phase=run.phase,
            iteration=run.output_iteration or run.iteration,
            attempt=run.attempt,
            output_ref=ref,
            instance_refs=run.instance_refs,
            inline=size is not None,
            value=run.output if size is not None else None,
        )
    return refs


def build_attempt(
    pipeline: ResolvedPipeline,
    state: RunState,
    start: StartAttempt,
    providers: Mapping[str, ModelProvider],
    store: StoreRef,
    base_dir: str | None = None,
) -> AttemptSpec:
    """The runner's input for ``start`` (providers limited to the stage's own + fallbacks)."""
    assert start.stage is not None and start.iteration is not None
    stage = pipeline.stage(start.stage)
    wanted: dict[str, ProviderSpec] = {}
    if stage.agent is not None:
        names = [stage.agent.provider, *(f.provider for f in stage.agent.fallbacks)]
        for n in names:
            if n is not None and n in providers:
                wanted[n] = providers[n].spec
    return AttemptSpec(
        pipeline=PipelineRef(name=pipeline.name, namespace=pipeline.namespace,
                             uid=pipeline.uid),
        stage=stage_body(stage),
        params=dict(pipeline.params),
        iteration=start.iteration,
        attempt=start.attempt or 1,
        index=start.index,
        item=start.item,
        loop=LoopInfo.model_validate({"iteration": start.iteration, "from": start.loop_from,
                                      "reason": start.loop_reason}),
        upstream=upstream_refs(state, _read_by(stage.agent.prompt, stage.agent.system)
                               if stage.agent is not None else None),
        store=store,
        providers=wanted,
        previous_error=start.previous_error,
        base_dir=base_dir,
    )


def attempt_cost(result: AttemptResult,
                 providers: Mapping[str, ModelProvider]) -> Decimal | None:
    """Exact USD of the attempt's tokens, each provider/model at its own pricing (a
    fallback's at the fallback's); None when none of them is priced. A result without
    the per-model breakdown (a runner before it existed) is billed to the provider and
    model that answered."""
    usage = list(result.usage)
    if not usage and result.provider and result.model and result.tokens.total:
        usage = [ModelUsage(provider=result.provider, model=result.model,
                            input=result.tokens.input, output=result.tokens.output)]
    specs = {n: p.spec for n, p in providers.items()}
    return cost_of(usage, specs)


def outcome_from_result(start: StartAttempt, result: AttemptResult,
                        output: Any = None, *, cost: Decimal | None = None,
                        cached: dict[str, Any] | None = None) -> AttemptOutcome:
    """The engine's view of a finished attempt (``output``: the loaded output value;
    ``cost``: :func:`attempt_cost`; ``cached``: the stage-cache hit that answered it)."""
    assert start.stage is not None and start.iteration is not None
    return AttemptOutcome(
        stage=start.stage,
        iteration=start.iteration,
        attempt=start.attempt or 1,
        index=start.index,
        ok=result.ok,
        output=output,
        output_ref=result.output_ref,
        error_class=result.error_class,
        message=result.message,
        tokens=Tokens(result.tokens.input, result.tokens.output),
        duration_ms=result.duration_ms,
        cost=None if cost is None else format(cost, "f"),
        cached=cached,
        usage=tuple(result.usage),
    )
