"""Running one stage attempt: :func:`run_attempt`, the runner's core.

The same function runs inside a pod (``stagecoach-runner``) and in-process in the local
executor. It never raises for a failed attempt: every failure becomes a failed
:class:`~stagecoach.api.AttemptResult` with an error class, here and only here. The
attempt's ``timeout`` bounds everything (rendering, provider calls with their retries,
the command); cancelling the task kills a run stage's process group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
from stagecoach.api import AttemptResult, AttemptSpec, format_duration, inline_output
from stagecoach.store import Store, StoreError, TooLarge, encode_output, output_key

from . import telemetry
from .agent import TokenMeter, run_agent
from .clock import Clock, SystemClock
from .errors import AttemptError
from .providers import CassetteLoadError, ProviderPool, restore_positions, save_positions
from .runstage import collect_output, prepare_input, run_command
from .templating import referenced_stages
from .tracing import Redactor, TraceSink, TraceWriter, clip, writer_id_for
from .variables import load_variables

__all__ = ["run_attempt"]

log = logging.getLogger("stagecoach_runner")


async def run_attempt(
    spec: AttemptSpec,
    store: Store,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    trace_writer: TraceSink | None = None,
    pool: ProviderPool | None = None,
    workdir: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    traceparent: str | None = None,
    logs: str | os.PathLike[str] | None = None,
) -> AttemptResult:
    """Run ``spec`` against ``store`` and report the outcome (never raises for failures).

    ``pool`` carries state shared between attempts (HTTP client, rate limiters, cassette
    players, recorder); without one a private pool is built on ``transport`` and closed
    afterwards. ``trace_writer`` defaults to a :class:`TraceWriter` on ``store``.
    ``workdir`` keeps a run stage's input, output and logs (default: a temporary
    directory removed afterwards). ``logs`` keeps a run stage's stdout and stderr
    (``<logs>/<stage>/<iteration>[-<index>]-<attempt>.stdout|.stderr``; the local run
    directory's ``logs/``). ``environ`` replaces ``os.environ`` for API keys and
    run-stage commands. With OpenTelemetry on (``OTEL_EXPORTER_OTLP_ENDPOINT``) the
    attempt is a span, child of ``traceparent`` (W3C), else of ``$TRACEPARENT``, else of
    the current context (:mod:`.telemetry`).
    """
    kw: dict[str, Any] = {"transport": transport, "clock": clock, "trace_writer": trace_writer,
                          "pool": pool, "workdir": workdir, "environ": environ, "logs": logs}
    span = telemetry.attempt_span(spec, traceparent=traceparent, environ=environ)
    if span is None:
        return await _attempt(spec, store, **kw)
    with span:
        result = await _attempt(spec, store, observe=span.observe, **kw)
        span.record(result)
        return result


async def _attempt(
    spec: AttemptSpec,
    store: Store,
    *,
    transport: httpx.AsyncBaseTransport | None,
    clock: Clock | None,
    trace_writer: TraceSink | None,
    pool: ProviderPool | None,
    workdir: str | os.PathLike[str] | None,
    environ: dict[str, str] | None,
    logs: str | os.PathLike[str] | None = None,
    observe: Callable[[TraceSink, Redactor], TraceSink] | None = None,
) -> AttemptResult:
    """:func:`run_attempt` without the span."""
    clock = clock or SystemClock()
    own_pool = pool is None
    if pool is None:
        pool = ProviderPool(transport=transport, environ=environ, base_dir=spec.base_dir)
    redactor = pool.redactor
    for name, pspec in spec.providers.items():
        pool.api_key(name, pspec)  # registers every key with the redactor before any event
    trace = trace_writer or TraceWriter(store, spec, clock, redactor=redactor)
    if observe is not None:
        trace = observe(trace, redactor)
    meter = TokenMeter()
    started = clock.monotonic()
    replay = [n for n, p in spec.providers.items() if p.type == "replay"] if own_pool else []
    extra: dict[str, Any] = {}
    try:
        for name in replay:  # a private pool: continue the cassette where other pods stopped
            await _restore(pool, store, name, spec)
        timeout = spec.stage.timeout.total_seconds() if spec.stage.timeout else None
        try:
            async with asyncio.timeout(timeout):
                extra = await _run(spec, store, pool, trace, clock, meter, workdir, environ,
                                   logs)
        except TimeoutError:
            limit = format_duration(spec.stage.timeout) if spec.stage.timeout else "?"
            raise AttemptError("Timeout", f"{spec.label} exceeded its timeout of {limit}") from None
        result = AttemptResult(phase="Succeeded", tokens=meter.usage, **extra)
    except AttemptError as e:
        result = AttemptResult.failed(e.error_class, e.message, tokens=meter.usage)
    except TooLarge as e:
        result = AttemptResult.failed("OutputTooLarge", str(e), tokens=meter.usage)
    except StoreError as e:
        result = AttemptResult.failed("Error", f"store: {e}", tokens=meter.usage)
    except Exception as e:  # a runner bug: report it as a value, with the traceback logged
        log.exception("internal error in %s", spec.label)
        result = AttemptResult.failed(
            "Error", f"internal runner error: {type(e).__name__}: {e}", tokens=meter.usage
        )
    finally:
        if own_pool:
            for name in replay:
                if name in pool.players:
                    await save_positions(pool.players[name], store, name, writer_id_for(spec))
            await pool.aclose()
    elapsed = max(0, round((clock.monotonic() - started) * 1000))
    update: dict[str, Any] = {"duration_ms": elapsed, "usage": meter.models}
    if result.message:
        update["message"] = redactor.text(result.message)
    return result.model_copy(update=update)


async def _restore(pool: ProviderPool, store: Store, name: str, spec: AttemptSpec) -> None:
    try:
        player = pool.player(name, spec.providers[name])
    except (CassetteLoadError, ValueError) as e:
        raise AttemptError("InvalidInput", f"provider {name}: {e}") from None
    await restore_positions(player, store, name)


async def _run(
    spec: AttemptSpec,
    store: Store,
    pool: ProviderPool,
    trace: TraceSink,
    clock: Clock,
    meter: TokenMeter,
    workdir: str | os.PathLike[str] | None,
    environ: dict[str, str] | None,
    logs: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The attempt body; returns the result fields beyond phase and tokens."""
    if spec.agent is not None:
        needed = referenced_stages(spec.agent.prompt, spec.agent.system)
        variables = await load_variables(spec, store, needed)
        outcome = await run_agent(spec, variables, pool=pool, trace=trace, clock=clock, meter=meter)
        key = output_key(spec.stage.name, spec.iteration, spec.index)
        data = encode_output(
            pool.redactor.data(outcome.value),  # a model may echo a key it was sent
            "json" if outcome.format == "json" else "text",
            stage=spec.stage.name,
            iteration=spec.iteration,
            attempt=spec.attempt,
            index=spec.index,
            provider=outcome.provider,
            model=outcome.model,
        )
        await store.put(key, data)
        return {"output_ref": key, "output": inline_output(data), "provider": outcome.provider,
                "model": outcome.model}
    if spec.run is None:
        raise AttemptError("InvalidInput", "the stage has neither agent nor run")
    if workdir is not None:
        return {"output_ref": await _run_stage(spec, store, trace, Path(workdir), environ,
                                               logs)}
    with tempfile.TemporaryDirectory(prefix=f"stagecoach-{spec.stage.name}-") as tmp:
        return {"output_ref": await _run_stage(spec, store, trace, Path(tmp), environ, logs)}


async def _run_stage(
    spec: AttemptSpec,
    store: Store,
    trace: TraceSink,
    dir: Path,
    environ: dict[str, str] | None,
    logs: str | os.PathLike[str] | None = None,
) -> str:
    variables = await prepare_input(spec, store, dir)
    assert spec.run is not None
    await trace.emit(
        "InputSnapshot",
        {
            "command": [*spec.run.command, *spec.run.args],
            "input": clip(json.dumps(variables, ensure_ascii=False, default=str)),
        },
    )
    result = await run_command(spec, dir, environ=environ, logs=logs)
    return await collect_output(
        spec, store, dir, result.exit_code, stderr_tail=result.stderr_tail, trace=trace
    )
