"""Retry from the failure point in the cluster: ``spec.resumeFrom`` (DESIGN §9).

When a pipeline with ``spec.resumeFrom: {name: OLD}`` starts (it has no run record yet),
:func:`resume` gathers OLD from the same namespace: its AgentPipeline, its run record
(``OLD-state``, :mod:`.record`) and the outputs of the stages the engine's
:func:`~stagecoach.engine.reusable` picks, read from OLD's store (ConfigMaps or the
bucket of OLD's ``spec.storage``). Those outputs are *copied* into the new run's store
(ConfigMaps owned by the new pipeline, or keys under its own bucket prefix), so the new
run never depends on OLD staying around, and OLD is only ever read. Then
:func:`~stagecoach.engine.apply_reuse` marks them ``Succeeded``/``Reused``; the caller
persists that state (with its ``StageReused``/``ResumeDecided`` events in the outbox)
before the first normal step. A copy that finds an output gone makes that stage (and
what depends on it) run again instead.

What OLD's state means for the new run (:func:`source_problem`, pure):

* OLD does not exist (deleted) → the new run fails, reason ``ResumeSourceNotFound``,
  naming ``spec.resumeFrom.name``; so does an OLD without a run record or one that
  ended ``Invalid`` (it ran nothing);
* OLD is still running (or suspended) → the new pipeline **waits**, ``Pending`` with
  reason ``WaitingForResumeSource``, and starts once OLD finishes: ``stagecoach
  terminate OLD && stagecoach retry OLD`` then works without a race. OLD's watch events
  wake it (:meth:`~.reconciler.Reconciler.resume_waiters`), with a slow timer as backstop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api import AgentPipeline, ResolvedPipeline
from ..engine import Plan, PriorStage, RunState, apply_reuse, prior_stages, reusable
from ..store import NotFound, Store, decode_output, output_key
from .record import RunRecord, parse_record, record_name

__all__ = ["ResumeFailed", "ResumeWait", "resume", "source_problem"]

TERMINAL = {"Succeeded", "Failed", "Cancelled", "Invalid"}
WAITING_REASON = "WaitingForResumeSource"


@dataclass(frozen=True)
class ResumeWait:
    """OLD has not finished: stay Pending with this message."""

    message: str
    reason: str = WAITING_REASON


@dataclass(frozen=True)
class ResumeFailed:
    """The new run cannot start: fail it with this reason and message."""

    reason: str
    message: str


def source_problem(ns: str, new_uid: str, old_name: str, old: dict[str, Any] | None,
                   record: dict[str, Any] | None) -> ResumeWait | ResumeFailed | None:
    """Why OLD (its AgentPipeline ``old`` and run record ``record``) cannot be resumed
    from now, or None when it can. No side effects."""
    where = f"spec.resumeFrom.name: pipeline {old_name}"
    if old is None:
        return ResumeFailed("ResumeSourceNotFound",
                            f"{where} not found in namespace {ns} (deleted?): there is "
                            "nothing to resume from; create the pipeline without "
                            "spec.resumeFrom to run every stage")
    meta = old.get("metadata") or {}
    if meta.get("uid") == new_uid:
        return ResumeFailed("InvalidResumeSource", f"{where} is this pipeline itself")
    status = old.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Invalid":
        return ResumeFailed("ResumeSourceInvalid",
                            f"{where} ended Invalid ({status.get('message') or 'no message'}):"
                            " it ran no stage, so nothing can be reused")
    if phase not in TERMINAL:
        return ResumeWait(f"waiting for pipeline {old_name} to finish (it is {phase}): "
                          "spec.resumeFrom reuses a finished run only; stop or terminate "
                          f"{old_name} to resume now")
    owners = [o.get("uid") for o in ((record or {}).get("metadata") or {})
              .get("ownerReferences", [])]
    if record is None or meta.get("uid") not in owners:
        return ResumeFailed("ResumeSourceNotFound",
                            f"{where} ({phase}) has no run record {record_name(old_name)}: "
                            "there is nothing to resume from")
    return None


def _without_output(p: PriorStage) -> PriorStage:
    return dataclasses.replace(p, output=None, output_ref=None, instance_refs=None,
                               fan_out=False)


async def _copy(src: Store, dst: Store, key: str, new_key: str) -> Any:
    data = await src.get(key)
    value = decode_output(data).value
    await dst.put(new_key, data)
    return value


async def _copy_stage(name: str, iteration: int, p: PriorStage, src: Store,
                      dst: Store) -> PriorStage:
    """``p`` with its outputs copied into ``dst`` under the new run's keys."""
    if p.fan_out and p.instance_refs is not None:
        refs: list[str | None] = []
        values: list[Any] = []
        for i, ref in enumerate(p.instance_refs):
            assert ref is not None  # reusable() takes no stage with a missing instance
            new_key = output_key(name, iteration, i)
            values.append(await _copy(src, dst, ref, new_key))
            refs.append(new_key)
        return dataclasses.replace(p, output=values, instance_refs=tuple(refs))
    if p.output_ref:
        new_key = output_key(name, iteration)
        return dataclasses.replace(p, output=await _copy(src, dst, p.output_ref, new_key),
                                   output_ref=new_key)
    return p  # kept in the run state itself (an approval's decision)


async def resume(ns: str, resolved: ResolvedPipeline, state: RunState, now: datetime, *,
                 get_pipeline: Callable[[str, str], Awaitable[dict[str, Any] | None]],
                 get_configmap: Callable[[str, str], Awaitable[dict[str, Any] | None]],
                 open_store: Callable[[RunRecord], Store], store: Store
                 ) -> Plan | ResumeWait | ResumeFailed:
    """Gather OLD, copy what is reused into ``store`` (the new run's) and return the
    :func:`~stagecoach.engine.apply_reuse` plan over the fresh ``state``; or why not."""
    old_name = resolved.resume_from
    assert old_name is not None
    old = await get_pipeline(ns, old_name)
    phase = ((old or {}).get("status") or {}).get("phase")
    record = (await get_configmap(ns, record_name(old_name))
              if old is not None and phase in TERMINAL else None)
    problem = source_problem(ns, resolved.uid, old_name, old, record)
    if problem is not None:
        return problem
    assert old is not None and record is not None
    try:
        old_pipeline = AgentPipeline.model_validate({**old, "status": None})
        old_record, _ = parse_record(record, old_pipeline)
    except (ValidationError, ValueError, KeyError) as e:
        return ResumeFailed("ResumeSourceUnreadable",
                            f"spec.resumeFrom.name: the run record of pipeline {old_name} "
                            f"cannot be read: {e}")
    prior = prior_stages(old_record.state)
    src = open_store(old_record)
    copied: dict[str, PriorStage] = {}
    for _ in range(len(prior) + 1):
        verdict = reusable(resolved, prior)
        missing = False
        for name in verdict.reused:
            if name in copied:
                continue
            try:
                copied[name] = await _copy_stage(name, state.stages[name].iteration,
                                                 prior[name], src, store)
            except (NotFound, ValueError):
                prior[name] = _without_output(prior[name])  # gone there: it runs again
                missing = True
        if not missing:
            break
    return apply_reuse(resolved, state, verdict, {n: copied[n] for n in verdict.reused},
                       old_name, str(old.get("metadata", {}).get("uid") or ""), now)
