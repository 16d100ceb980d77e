"""The stage cache in the shells (DESIGN §11): key an attempt before it starts, answer
it from the cache, remember a success.

Both shells (local executor, operator) do the same three steps, so they live here:
:func:`attempt_key` (pure: :mod:`.cachekey` over the run state's outputs),
:func:`answer` (a hit: the cached value is written as this attempt's own output, so
everything downstream reads it like any other output) and :func:`remember` (after a
success: an entry with what the answer cost). Cache errors never fail an attempt: a
lookup that fails is a miss, a save that fails is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from .api import (
    AttemptResult,
    AttemptSpec,
    ModelProvider,
    ResolvedPipeline,
    TokenUsage,
    inline_output,
)
from .cachekey import cache_key
from .engine import Instance, RunState, StartAttempt, variables
from .store import Store, StoreError, encode_output, output_key
from .store.cache import CacheEntry, StageCache

__all__ = ["answer", "attempt_key", "hit_cost", "remember"]

log = logging.getLogger("stagecoach.cache")


def attempt_key(pipeline: ResolvedPipeline, state: RunState, start: StartAttempt,
                spec: AttemptSpec, providers: Mapping[str, ModelProvider]) -> str | None:
    """The cache key of ``start`` when its stage caches, else None."""
    assert start.stage is not None
    stage = pipeline.stage(start.stage)
    if stage.cache is None or stage.is_finally or stage.approval is not None:
        return None
    inst = Instance(index=start.index, item=start.item)
    names = variables(state, start.stage, inst, pipeline.params)
    names["loop"] = {"iteration": spec.loop.iteration, "from": spec.loop.from_,
                     "reason": spec.loop.reason}
    return cache_key(pipeline, spec, names, {n: p.spec for n, p in providers.items()})


async def answer(cache: StageCache, key: str, pipeline: ResolvedPipeline, spec: AttemptSpec,
                 store: Store, now: datetime
                 ) -> tuple[AttemptResult, Any, dict[str, Any]] | None:
    """A hit: ``(result, output value, StageCached facts)`` with the value stored as
    this attempt's output; None on a miss."""
    policy = pipeline.stage(spec.stage.name).cache
    if policy is None:
        return None
    entry = await cache.lookup(key, now, policy.ttl)
    if entry is None:
        return None
    ref = output_key(spec.stage.name, spec.iteration, spec.index)
    data = encode_output(entry.value, "json" if entry.format == "json" else "text",
                         stage=spec.stage.name, iteration=spec.iteration,
                         attempt=spec.attempt, index=spec.index, cachedFrom=entry.origin)
    try:
        await store.put(ref, data)
    except StoreError as e:  # e.g. too large for this run's store: the stage runs
        log.warning("stage cache: cannot copy entry %s into %s: %s", key, ref, e)
        return None
    result = AttemptResult(phase="Succeeded", tokens=TokenUsage(), output_ref=ref,
                           output=inline_output(data))
    return result, entry.value, entry.describe()


def hit_cost(facts: dict[str, Any]) -> Decimal | None:
    """A hit costs nothing: zero when the answer it replays was priced, else unknown
    (never "$0" for a model without pricing)."""
    saved = facts.get("saved") or {}
    return Decimal(0) if saved.get("cost") is not None else None


async def remember(cache: StageCache, key: str, pipeline: ResolvedPipeline,
                   start: StartAttempt, result: AttemptResult, output_format: str,
                   value: Any, cost: Decimal | None, now: datetime) -> bool:
    """Save a successful attempt's answer under ``key`` for its stage's TTL."""
    assert start.stage is not None
    stage = pipeline.stage(start.stage)
    if stage.cache is None or not result.ok:
        return False
    if stage.agent is not None and result.provider not in (None, stage.agent.provider):
        # The key names the stage's own provider; a fallback's answer stored under it
        # would let any provider a pipeline lists as a fallback answer for that endpoint.
        log.info("stage cache: %s was answered by fallback %s; not cached", start.stage,
                 result.provider)
        return False
    origin = {"pipeline": pipeline.name, "namespace": pipeline.namespace,
              "uid": pipeline.uid, "stage": start.stage, "iteration": start.iteration,
              "index": start.index, "attempt": start.attempt or 1}
    entry = CacheEntry(key, format=output_format, value=value,
                       origin={k: v for k, v in origin.items() if v is not None},
                       created_at=now, expires_at=now + stage.cache.ttl,
                       tokens={"input": result.tokens.input, "output": result.tokens.output},
                       cost=None if cost is None else format(cost, "f"))
    return await cache.save(entry)
