"""Retry from the failure point (``spec.resumeFrom``, ``stagecoach run --resume``).

A new run may reuse what an earlier run of the same stages already produced. Which
stages qualify is decided here, once, before the new run's first plan: a stage is
reused when it Succeeded in the earlier run's final iteration, its resolved spec hash is
unchanged, and every stage it depends on is reused too (downstream of anything that
runs again runs again). ``finally`` stages always run: they are about this run. Reused
stages are ``Succeeded`` with reason ``Reused`` and a ``StageReused`` event naming the
source; their tokens are not counted again (the event says what they cost there).

Two steps, so the shell can copy outputs in between: :func:`reusable` says which stages
(and why each other one is not), the shell copies those outputs into the new run's store,
then :func:`apply_reuse` marks them in the new state. No side effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api import ResolvedPipeline
from .actions import Action, StageEvent
from .dag import build
from .planner import Plan
from .state import Instance, RunState, copy_state

__all__ = ["PriorStage", "ReuseVerdict", "apply_reuse", "prior_stages", "reusable"]


@dataclass(frozen=True)
class PriorStage:
    """What the earlier run knew about one stage at its end."""

    phase: str
    spec_hash: str | None
    iteration: int = 1
    output: Any = None
    output_ref: str | None = None
    instance_refs: tuple[str | None, ...] | None = None
    fan_out: bool = False
    tokens: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ReuseVerdict:
    """Which stages are reused, and why each other stage runs again."""

    reused: tuple[str, ...]
    rerun: dict[str, str]

    def explain(self) -> str:
        """One line per stage that runs again (for the CLI and the pipeline's events)."""
        return "; ".join(f"{n}: {why}" for n, why in self.rerun.items())


def prior_stages(state: RunState) -> dict[str, PriorStage]:
    """The reusable facts of an earlier run's final state."""
    return {
        name: PriorStage(
            phase=run.phase, spec_hash=run.spec_hash, iteration=run.iteration,
            output=run.output, output_ref=run.output_ref,
            instance_refs=tuple(run.instance_refs) if run.instance_refs is not None else None,
            fan_out=run.fan_out, tokens=(run.tokens.input, run.tokens.output))
        for name, run in state.stages.items()
    }


def _missing_items(old: PriorStage) -> bool:
    refs = old.instance_refs or ()
    values = old.output if isinstance(old.output, list) else [None] * len(refs)
    return any(r is None and v is None for r, v in zip(refs, values, strict=False))


def reusable(pipeline: ResolvedPipeline, prior: Mapping[str, PriorStage]) -> ReuseVerdict:
    """Decide which stages of ``pipeline`` may reuse ``prior``'s outputs."""
    graph, _ = build([(s.name, s.depends_on) for s in pipeline.stages])
    order = graph.order if graph is not None else [s.name for s in pipeline.stages]
    hashes = pipeline.spec_hashes
    reused: list[str] = []
    rerun: dict[str, str] = {}
    for name in order:
        stage = pipeline.stage(name)
        old = prior.get(name)
        if old is None:
            rerun[name] = "not a stage of the earlier run"
        elif old.phase != "Succeeded":
            rerun[name] = f"it was {old.phase} there"
        elif old.spec_hash is None or old.spec_hash != hashes[name]:
            rerun[name] = "its resolved spec changed" if old.spec_hash else \
                "the earlier run recorded no spec hash"
        elif old.fan_out and _missing_items(old):
            rerun[name] = "some of its forEach outputs are missing there"
        elif not old.fan_out and old.output_ref is None and old.output is None:
            rerun[name] = "its output is missing there"
        else:
            upstream = [d for d in stage.depends_on if d in rerun]
            if upstream:
                rerun[name] = f"it depends on {', '.join(upstream)}, which runs again"
            else:
                reused.append(name)
    for s in pipeline.finally_stages:
        rerun[s.name] = "finally stages always run"
    return ReuseVerdict(tuple(reused), rerun)


def apply_reuse(pipeline: ResolvedPipeline, state: RunState, verdict: ReuseVerdict,
                prior: Mapping[str, PriorStage], source: str, source_uid: str,
                now: datetime) -> Plan:
    """Mark the reused stages Succeeded (reason ``Reused``) in a fresh state.

    ``prior`` holds the outputs as the shell copied them (their references in the new
    run's store). The returned plan's actions are ``PipelineStarted``, one
    ``StageReused`` per stage and a ``ResumeDecided`` summary; plan normally after it.
    """
    st = copy_state(state)
    actions: list[Action] = []
    if st.phase == "Pending":
        st.phase, st.started_at = "Running", now
        actions.append(StageEvent(type="PipelineStarted", data={
            "stages": [s.name for s in pipeline.stages],
            "finally": [s.name for s in pipeline.finally_stages],
            "resumeFrom": source}))
    for name in verdict.reused:
        old, run = prior[name], st.stages[name]
        run.phase, run.reason = "Succeeded", "Reused"
        run.message = f"reused from {source} (iteration {old.iteration})"
        run.started_at = run.finished_at = now
        run.fan_out = old.fan_out
        run.output, run.output_ref = old.output, old.output_ref
        run.instance_refs = list(old.instance_refs) if old.instance_refs is not None else None
        run.output_iteration = run.iteration
        run.reused_from = source
        if old.fan_out and old.instance_refs is not None:
            values = old.output if isinstance(old.output, list) else [None] * len(
                old.instance_refs)
            run.instances = [Instance(index=i, phase="Succeeded", output=v, output_ref=r,
                                      started_at=now, finished_at=now, reason="Reused")
                             for i, (v, r) in enumerate(zip(values, old.instance_refs,
                                                            strict=False))]
        else:
            run.instances = [Instance(phase="Succeeded", output=old.output,
                                      output_ref=old.output_ref, started_at=now,
                                      finished_at=now, reason="Reused")]
        if not old.fan_out and old.output_ref is None:
            run.inline_output = old.output  # an approval's decision: no store holds it
        actions.append(StageEvent(name, run.iteration, None, None, type="StageReused", data={
            "source": source, "sourceUid": source_uid, "sourceIteration": old.iteration,
            "outputRef": old.output_ref, "instances": len(old.instance_refs)
            if old.instance_refs is not None else None,
            "sourceTokens": {"input": old.tokens[0], "output": old.tokens[1]},
            "specHash": old.spec_hash}))
    actions.append(StageEvent(type="ResumeDecided", data={
        "source": source, "sourceUid": source_uid, "reused": list(verdict.reused),
        "rerun": dict(verdict.rerun)}))
    return Plan(st, actions, now)
