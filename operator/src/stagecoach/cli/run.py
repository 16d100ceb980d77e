"""``stagecoach run FILE``: validate, resolve and execute a pipeline locally.

Prints the run directory, live progress, then a trace summary; exit 0 only when the
pipeline Succeeded, 130 when it was cancelled (Ctrl-C, SIGINT or SIGTERM), else 1.
``-p k=v`` sets parameters (values parsed as YAML scalars), ``--providers FILE`` adds
ModelProviders, ``--record CASSETTE`` records every provider answer (replayed ones too)
into a cassette that replays the run offline. With ``spec.storage.type: s3``
outputs and the trace live in the bucket (under ``<prefix>/local/<pipeline>/<run>/``,
credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``); the run directory
still gets status, the exported trace, the final output and the report.

Run control (DESIGN §9): the run owns its directory (a lock on ``RUN_DIR/.owner``) so
``stagecoach suspend|resume|stop|terminate|approve|reject RUN_DIR`` reach it; Ctrl-C is
Terminate. An approval stage waits for ``stagecoach approve RUN_DIR STAGE``, asks on the
terminal when stdin and stdout are one, or is approved at once with ``--auto-approve``.
``--resume RUN_DIR`` reuses what an earlier run finished (:mod:`stagecoach.local.resume`):
it prints which stages are reused and why each other one runs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from stagecoach_runner.providers import ProviderPool, Recorder

from .. import telemetry
from ..api import (
    AgentPipeline,
    ModelProvider,
    ResolvedPipeline,
    ResolvedStage,
    StoreRef,
    format_duration,
    resolve_pipeline,
)
from ..engine import ReuseVerdict, reusable
from ..engine.validation import validate_resolved
from ..local import LocalExecutor, RunOptions, new_run_dir
from ..local.control import local_user
from ..local.owner import OwnerError, RunOwner
from ..local.progress import make_progress
from ..local.prompt import TerminalApprover
from ..local.resume import PriorRun, ResumeError, load_prior
from ..local.rundir import RunDir
from ..store import OUTPUTS, LocalStore, Store, StoreError, open_store, s3_store_ref
from ..store.cache import LOCAL_DIR as CACHE_DIR
from ..store.cache import StageCache
from .validate import load_manifests

__all__ = ["EXIT_CANCELLED", "exit_code", "parse_params", "run_pipeline"]

EXIT_CANCELLED = 130
"""What a shell expects of a command interrupted by SIGINT (128 + 2)."""


def exit_code(phase: str) -> int:
    """0 for Succeeded, 130 for Cancelled, else 1."""
    return 0 if phase == "Succeeded" else EXIT_CANCELLED if phase == "Cancelled" else 1


def parse_params(items: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``k=v`` pairs → dict (YAML scalars: numbers, booleans, lists); errors as text."""
    params: dict[str, Any] = {}
    errors = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            errors.append(f"-p {item!r}: expected KEY=VALUE")
            continue
        try:
            params[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key] = value
    return params, errors


def _stage_doc(s: ResolvedStage) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": s.name}
    if s.depends_on:
        doc["dependsOn"] = list(s.depends_on)
    if s.when:
        doc["when"] = s.when
    if s.for_each:
        doc["forEach"] = s.for_each
    if s.agent:
        doc["agent"] = s.agent.dump()
    if s.run:
        doc["run"] = s.run.dump()
    if s.approval:
        doc["approval"] = s.approval.dump()
    if s.routes:
        doc["routes"] = [r.dump() for r in s.routes]
    if s.cache:
        doc["cache"] = s.cache.dump()
    if not s.approval:  # a gate takes no retry or timeout (approval.timeout bounds it)
        doc["retry"] = s.retry.dump()
        if s.timeout:
            doc["timeout"] = format_duration(s.timeout)
    if not s.is_finally:
        doc["onFailure"] = s.on_failure
    return doc


def _resolved_doc(p: AgentPipeline, r: ResolvedPipeline) -> dict[str, Any]:
    """The pipeline as it runs: template, params and defaults applied."""
    doc = p.dump()
    doc.pop("status", None)
    spec = doc["spec"]
    spec.pop("templateRef", None)
    spec.pop("defaults", None)
    spec["params"] = r.params
    spec["stages"] = [_stage_doc(s) for s in r.stages]
    if r.finally_stages:
        spec["finally"] = [_stage_doc(s) for s in r.finally_stages]
    if r.output is not None:
        spec["output"] = r.output
    return doc


def run_pipeline(file: str, params: Sequence[str] = (), providers_file: str | None = None,
                 store: str = ".stagecoach/runs", record: str | None = None,
                 pipeline_name: str | None = None, *, resume: str | None = None,
                 auto_approve: bool = False) -> int:
    """The ``run`` command; returns the exit code. ``resume``: an earlier run directory
    whose Succeeded, unchanged stages are reused; ``auto_approve``: approve every
    approval stage as it waits (demos, tests)."""
    files = [file] + ([providers_file] if providers_file else [])
    manifests, problems = load_manifests(files)
    extra, errors = parse_params(params)
    for e in errors:
        print(e, file=sys.stderr)
    for prob in problems:
        print(prob.render(), file=sys.stderr)
    if problems or errors:
        return 1
    pipelines = [d.obj for d in manifests.documents if isinstance(d.obj, AgentPipeline)]
    if pipeline_name:
        pipelines = [p for p in pipelines if p.metadata.name == pipeline_name]
    if len(pipelines) != 1:
        names = ", ".join(p.metadata.name for p in pipelines) or "none"
        print(f"{file}: expected one AgentPipeline (found: {names}); use --pipeline NAME",
              file=sys.stderr)
        return 1
    pipeline = pipelines[0]
    providers: dict[str, ModelProvider] = manifests.providers()
    resolved, found = resolve_pipeline(pipeline, manifests.templates(), extra)
    if resolved is None:
        for prob in found:
            print(f"{file}: {prob.render()}", file=sys.stderr)
        return 1
    found = validate_resolved(resolved, providers)
    if found:
        for prob in found:
            print(f"{file}: {prob.render()}", file=sys.stderr)
        return 1
    prior: PriorRun | None = None
    verdict: ReuseVerdict | None = None
    if resume is not None:
        try:
            prior = load_prior(Path(resume))
        except ResumeError as e:
            print(f"stagecoach run: --resume: {e}", file=sys.stderr)
            return 1
        verdict = reusable(resolved, prior.stages)
    now = datetime.now(UTC)
    run_dir = new_run_dir(Path(store), pipeline.metadata.name, now)
    uid = run_dir.path.name
    resolved = dataclasses.replace(resolved, uid=pipeline.metadata.uid or uid)
    run_dir.write_manifest(_resolved_doc(pipeline, resolved))
    print(f"run directory: {run_dir.path}", flush=True)
    if prior is not None and verdict is not None:
        print(_explain_reuse(prior, verdict, resolved.name), flush=True)
    storage = pipeline.spec.storage
    store_ref: StoreRef | None = None
    if storage is not None and storage.type == "s3" and storage.s3 is not None:
        # Outputs and the trace go to the bucket (credentials: AWS_ACCESS_KEY_ID/
        # AWS_SECRET_ACCESS_KEY); the run directory keeps status, trace export and report.
        store_ref = s3_store_ref(storage.s3, pipeline=resolved.name, uid=resolved.uid)
        print(f"outputs and trace: s3://{store_ref.bucket}/{store_ref.prefix}/", flush=True)
    elif storage is not None and storage.type != "local":
        print(f"note: storage type {storage.type!r} applies in the cluster; a local run keeps "
              "outputs and the trace in the run directory", flush=True)
    try:
        owner = RunOwner.acquire(run_dir.path)
    except OwnerError as e:
        print(f"stagecoach run: {e}", file=sys.stderr)
        return 1
    # What is loaded by now (modules, schemas, the manifest) lives as long as the process:
    # keep the collector from walking it again and again during the run.
    gc.freeze()
    try:
        return asyncio.run(_execute(resolved, providers, run_dir,
                                    str(Path(file).parent.resolve()), record, store_ref,
                                    owner=owner, auto_approve=auto_approve, prior=prior,
                                    verdict=verdict))
    finally:
        owner.release(f"the run in {run_dir.path} has ended")


def _explain_reuse(prior: PriorRun, verdict: ReuseVerdict, pipeline: str) -> str:
    """What ``--resume`` takes from the earlier run, and why the rest runs again."""
    lines = [f"resuming from {prior.path} ({prior.pipeline}, ended {prior.phase})"]
    if prior.pipeline != pipeline:
        lines.append(f"  note: that run was pipeline {prior.pipeline!r}, this is {pipeline!r}")
    if verdict.reused:
        lines.append(f"  reused: {', '.join(verdict.reused)}")
    else:
        lines.append("  reused: nothing")
    for name, why in verdict.rerun.items():
        lines.append(f"  runs again: {name}: {why}")
    return "\n".join(lines)


async def _execute(resolved: ResolvedPipeline, providers: dict[str, ModelProvider],
                   run_dir: RunDir, base_dir: str, record: str | None,
                   store_ref: StoreRef | None = None, *, owner: RunOwner | None = None,
                   auto_approve: bool = False, prior: PriorRun | None = None,
                   verdict: ReuseVerdict | None = None) -> int:
    recorder = Recorder() if record else None
    store: Store | None = None
    if store_ref is not None:
        try:
            store = open_store(store_ref)
            await store.list(OUTPUTS)  # fail now, clearly, if the bucket cannot be used
        except (StoreError, ValueError) as e:
            print(f"stagecoach run: {e}", file=sys.stderr)
            return 1
    seed = None
    if prior is not None and verdict is not None:
        target: Store = store if store is not None else LocalStore(run_dir.path)
        try:
            seed = await prior.copy(verdict, target)
        except (StoreError, ValueError, OSError) as e:
            print(f"stagecoach run: --resume: cannot copy the reused outputs from "
                  f"{prior.path}: {e}", file=sys.stderr)
            return 1
    cache = StageCache(LocalStore(run_dir.path.parent / CACHE_DIR))
    if any(s.cache for s in resolved.stages):
        try:  # the cache's expired entries go when a run that uses the cache starts
            await cache.collect(datetime.now(UTC))
        except (StoreError, OSError) as e:
            print(f"note: cannot collect expired stage-cache entries: {e}", flush=True)
    terminal = sys.stdout  # before rich's live display redirects sys.stdout (markup!)
    progress = make_progress(run_dir=str(run_dir.path))
    approver = None
    if not auto_approve and sys.stdin.isatty() and terminal.isatty():
        approver = TerminalApprover(sys.stdin, terminal, local_user(), progress,
                                    str(run_dir.path))
    try:
        async with ProviderPool(recorder=recorder, base_dir=base_dir) as pool:
            executor = LocalExecutor(resolved, providers, run_dir, pool,
                                     options=RunOptions(base_dir=base_dir,
                                                        auto_approve=auto_approve),
                                     listener=progress, store=store, store_ref=store_ref,
                                     owner=owner, approver=approver, resume=seed,
                                     notes=progress.note, cache=cache)
            try:
                state = await executor.execute()
            finally:
                if approver is not None:
                    await asyncio.to_thread(approver.close)
                progress.close()
            events = await executor.store.read_trace()
        telemetry.flush()
    except StoreError as e:
        print(f"stagecoach run: the store failed: {e}", file=sys.stderr)
        return 1
    run_dir.write_trace(events)
    from ..report import load_run, summary_text, write_report

    if state.final_output is not None:
        run_dir.write_output(state.final_output)
    # One read of the run directory for both reports; the trace and the manifest's
    # facts are at hand already.
    data = load_run(run_dir.path, events=events, facts=(resolved.name, resolved.max_tokens,
                                                         resolved.max_cost))
    write_report(run_dir.path, run_dir.report, data=data)
    if recorder is not None and record is not None:
        recorder.save(record)
        n = len(recorder.cassette.entries)
        print(f"cassette recorded: {record} ({n} entr{'y' if n == 1 else 'ies'})" if n else
              f"cassette recorded: {record} has no entries: no stage called a model provider")
    print(summary_text(run_dir.path, data=data))
    print(f"report: {run_dir.report}")
    return exit_code(state.phase)
