"""The local executor: the engine's actions carried out with asyncio on this machine.

One loop: observe finished attempts, ``engine.step()``, record the actions in the trace,
stop and start attempts, publish status, then sleep until an attempt finishes or the plan's
``wake_at`` (a backoff timer, a deadline) arrives. Agent stages run in-process through
:func:`stagecoach_runner.run_attempt` sharing one provider pool (HTTP client, rate limiters,
cassette players); run stages' commands are subprocesses, their stdout and stderr kept in
the run directory's ``logs/``. Provider ``maxConcurrency`` is
enforced by counting live attempts per provider. Cancellation (Ctrl-C) asks the engine to
cancel, stops the attempts and still flushes the trace. All decisions stay in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stagecoach_runner import run_attempt
from stagecoach_runner.providers import ProviderPool

from .. import telemetry
from ..api import AttemptResult, ModelProvider, ResolvedPipeline, StoreRef
from ..attempts import build_attempt, outcome_from_result
from ..engine import (
    Action,
    AttemptOutcome,
    RunState,
    StartAttempt,
    cancel,
    new_state,
    step,
    to_status,
    trace_events,
)
from ..store import LocalStore, Store, decode_output
from .rundir import RunDir

__all__ = ["LocalExecutor", "RunOptions"]

Key = tuple[str, int, int | None, int]
Listener = Callable[[RunState, list[dict[str, Any]]], None]


@dataclass
class RunOptions:
    """Knobs of a local run."""

    base_dir: str | None = None
    """The manifest's directory: relative cassette paths resolve against it."""
    writer_id: str = "executor"


class LocalExecutor:
    """Runs one pipeline to completion in the current event loop."""

    def __init__(self, pipeline: ResolvedPipeline, providers: Mapping[str, ModelProvider],
                 run_dir: RunDir, pool: ProviderPool, *, options: RunOptions | None = None,
                 listener: Listener | None = None,
                 clock: Callable[[], datetime] | None = None,
                 store: Store | None = None, store_ref: StoreRef | None = None) -> None:
        if (store is None) != (store_ref is None):
            raise ValueError("pass both store and store_ref (the ref attempts get), or neither")
        self.pipeline = pipeline
        self.providers = dict(providers)
        self.run_dir = run_dir
        # Outputs and the trace: the run directory, unless the caller passes a store and
        # the ref its attempts get (spec.storage: s3). Status then names outputs by the
        # store's own references (s3://...), as in the cluster.
        self.store: Store = LocalStore(run_dir.path) if store is None else store
        self.store_ref = (StoreRef(type="local", path=str(run_dir.path)) if store_ref is None
                          else store_ref)
        self._external_refs = store is not None
        self.pool = pool
        self.options = options or RunOptions()
        self.listener = listener
        self.clock = clock or (lambda: datetime.now(UTC))
        self.state: RunState = new_state(pipeline)
        self._tasks: dict[Key, tuple[asyncio.Task[AttemptResult], StartAttempt]] = {}
        self._done: asyncio.Queue[tuple[StartAttempt, AttemptResult | None]] = asyncio.Queue()
        self._cancel = asyncio.Event()
        self._traceparent: str | None = None

    def request_cancel(self) -> None:
        """Ask for cancellation (what Ctrl-C does)."""
        self._cancel.set()

    # -- the loop ----------------------------------------------------------------------
    async def execute(self) -> RunState:
        """Run until the pipeline reaches a terminal phase; return the final state.

        With OpenTelemetry on, the run is the root span and each attempt a child of it.
        """
        with telemetry.start_pipeline_span(self.pipeline.name, self.pipeline.uid,
                                           namespace=self.pipeline.namespace) as span:
            self._traceparent = telemetry.traceparent_of(span) if span is not None else None
            state = await self._execute()
            telemetry.set_pipeline_outcome(span, state.phase, state.message,
                                           (state.tokens.input, state.tokens.output))
        return state

    async def _execute(self) -> RunState:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.request_cancel)
            loop.add_signal_handler(signal.SIGTERM, self.request_cancel)
        try:
            outcomes: list[AttemptOutcome] = []
            while True:
                if self._cancel.is_set() and not self.state.cancel_requested:
                    self.state = cancel(self.state)
                now = self.clock()
                plan = step(self.pipeline, self.state, now, outcomes,
                            free_slots=self._free_slots())
                outcomes = []
                self.state = plan.state
                events = await self._record(plan.actions, now)
                for stop in plan.stops():
                    self._stop(stop)
                for start in plan.starts():
                    self._start(start)
                self._publish(events)
                if self.state.terminal:
                    break
                outcomes = await self._wait(plan.wake_at)
            await self._drain()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
        return self.state

    async def _wait(self, wake_at: datetime | None) -> list[AttemptOutcome]:
        timeout = None
        if wake_at is not None:
            timeout = max(0.0, (wake_at - self.clock()).total_seconds())
        getter = asyncio.ensure_future(self._done.get())
        canceller = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait({getter, canceller}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceller.cancel()
            if not getter.done():
                getter.cancel()
        finished: list[tuple[StartAttempt, AttemptResult | None]] = []
        if getter.done() and not getter.cancelled():
            finished.append(getter.result())
        while not self._done.empty():
            finished.append(self._done.get_nowait())
        return [o for o in [await self._outcome(s, r) for s, r in finished] if o is not None]

    async def _outcome(self, start: StartAttempt,
                       result: AttemptResult | None) -> AttemptOutcome | None:
        if result is None:  # stopped by us: the engine already accounted for it
            return None
        output: Any = None
        if result.ok and result.output_ref:
            try:
                output = decode_output(await self.store.get(result.output_ref)).value
            except Exception as exc:  # the store lost it: that attempt failed after all
                result = AttemptResult.failed("Error", f"cannot read the output: {exc}",
                                              tokens=result.tokens,
                                              duration_ms=result.duration_ms)
        return outcome_from_result(start, result, output)

    # -- side effects ------------------------------------------------------------------
    def _free_slots(self) -> dict[str, int]:
        live: dict[str, int] = {}
        for task, start in self._tasks.values():
            if not task.done() and start.provider:
                live[start.provider] = live.get(start.provider, 0) + 1
        free: dict[str, int] = {}
        for name, provider in self.providers.items():
            limit = provider.spec.limits.max_concurrency
            if limit is not None:
                free[name] = limit - live.get(name, 0)
        return free

    def _start(self, start: StartAttempt) -> None:
        spec = build_attempt(self.pipeline, self.state, start, self.providers,
                             self.store_ref, self.options.base_dir)
        key: Key = (start.stage or "", start.iteration or 0, start.index, start.attempt or 0)

        async def attempt() -> AttemptResult:
            return await run_attempt(spec, self.store, pool=self.pool,
                                     traceparent=self._traceparent, logs=self.run_dir.logs)

        task = asyncio.create_task(attempt(), name=spec.label)
        self._tasks[key] = (task, start)

        def finished(t: asyncio.Task[AttemptResult]) -> None:
            self._tasks.pop(key, None)
            if t.cancelled():
                self._done.put_nowait((start, None))
            elif t.exception() is not None:
                exc = t.exception()
                self._done.put_nowait((start, AttemptResult.failed(
                    "Error", f"internal error: {type(exc).__name__}: {exc}")))
            else:
                self._done.put_nowait((start, t.result()))

        task.add_done_callback(finished)

    def _stop(self, stop: Action) -> None:
        key: Key = (stop.stage or "", stop.iteration or 0, stop.index, stop.attempt or 0)
        entry = self._tasks.get(key)
        if entry is not None:
            entry[0].cancel()

    async def _drain(self) -> None:
        """Wait for stopped attempts to really end (their processes killed)."""
        tasks = [t for t, _ in self._tasks.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _record(self, actions: list[Action], now: datetime) -> list[dict[str, Any]]:
        events = trace_events(actions, now, self.pipeline.name, self.pipeline.uid)
        if events:
            await self.store.append_trace(self.options.writer_id, events)
        return events

    def _publish(self, events: list[dict[str, Any]]) -> None:
        refs = {name: self.store.ref(run.output_ref) if self._external_refs else run.output_ref
                for name, run in self.state.stages.items() if run.output_ref}
        self.run_dir.write_status(to_status(self.pipeline, self.state, output_refs=refs,
                                            trace_ref=str(self.run_dir.trace)))
        if self.listener is not None:
            self.listener(self.state, events)
