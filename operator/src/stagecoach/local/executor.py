"""The local executor: the engine's actions carried out with asyncio on this machine.

One loop: observe finished attempts, read the control requests, ``engine.step()``, record
the actions in the trace, stop and start attempts, answer the requests, publish status,
then sleep until an attempt finishes, a request arrives (``SIGUSR1`` from a verb, see
:mod:`.owner`) or the plan's ``wake_at`` (a backoff timer, a deadline) arrives. Agent
stages run in-process through :func:`stagecoach_runner.run_attempt` sharing one provider
pool (HTTP client, rate limiters, cassette players); run stages' commands are
subprocesses, their stdout and stderr kept in the run directory's ``logs/``. Provider
``maxConcurrency`` is enforced by counting live attempts per provider.

Run control (DESIGN §9) goes through the :class:`~.desk.ControlDesk`: Ctrl-C and SIGTERM
are Terminate; suspend, resume, stop, terminate, approve and reject come from the verbs.
An approval stage that starts waiting is approved at once with ``auto_approve``, or
handed to an :class:`Approver` (the terminal prompt); its decision is written to the
store like any output (``outputs/<stage>/<iteration>.json``). With a
:class:`~.resume.ResumeSeed` the reused stages are marked before the first step. The
final engine state goes to ``state.json``. All decisions stay in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from stagecoach_runner import SystemClock, TraceWriter, run_attempt
from stagecoach_runner.providers import ProviderPool

from .. import telemetry
from ..api import (
    AttemptResult,
    AttemptSpec,
    ModelProvider,
    ResolvedPipeline,
    StoreRef,
    format_usd,
    parse_usd,
)
from ..attempts import attempt_cost, build_attempt, outcome_from_result
from ..caching import answer, attempt_key, hit_cost, remember
from ..engine import (
    Action,
    ApprovalDecision,
    ApprovalVerdict,
    AttemptOutcome,
    RunState,
    StartAttempt,
    apply_reuse,
    dump_state,
    new_state,
    step,
    to_status,
    trace_events,
)
from ..store import Store, StoreError, decode_output, encode_output, output_key
from ..store.cache import StageCache
from .commit import GroupCommitStore
from .desk import ControlDesk
from .owner import WAKE_SIGNAL, RunOwner, quiet_wake_signal
from .resume import ResumeSeed
from .rundir import RunDir

__all__ = ["AUTO_APPROVER", "Approver", "Gate", "LocalExecutor", "RunOptions"]

Key = tuple[str, int, int | None, int]
Listener = Callable[[RunState, list[dict[str, Any]]], None]
SAVE_EVERY = timedelta(seconds=2)
"""At most one ``state.json`` write per this while running (and one at the end)."""
STATUS_EVERY = timedelta(milliseconds=500)
"""At most one ``status.json`` write per this while the pipeline's phase and run-control
fields stay the same (a change of those is written at once, and so is the end)."""
_PROGRESS = frozenset({"StageSucceeded", "StageCached", "StageReused", "ApprovalDecided"})
"""Events after which ``state.json`` is worth rewriting (what a resume could reuse)."""
AUTO_APPROVER = "auto-approve"
"""The approver recorded for ``--auto-approve`` decisions."""


@dataclass(frozen=True)
class _Pass:
    """One engine pass waiting for its commit: what to show and answer once durable."""

    state: RunState
    events: list[dict[str, Any]]
    verdicts: list[ApprovalVerdict]
    now: datetime


@dataclass(frozen=True)
class Gate:
    """An approval stage that started waiting (from its ``ApprovalRequested`` event)."""

    stage: str
    iteration: int
    message: str
    inputs: list[dict[str, Any]]


class Approver(Protocol):
    """Asks a person about a waiting gate (the terminal prompt). ``decide`` may be called
    from any thread, at most once per :meth:`ask`."""

    def ask(self, gate: Gate, decide: Callable[[ApprovalDecision], None]) -> None:
        """Start asking; return at once."""

    def cancel(self, stage: str) -> None:
        """The stage no longer waits (decided elsewhere, the run ended): stop asking."""


@dataclass
class RunOptions:
    """Knobs of a local run."""

    base_dir: str | None = None
    """The manifest's directory: relative cassette paths resolve against it."""
    writer_id: str = "executor"
    auto_approve: bool = False
    """Approve every approval stage as it starts waiting (approver ``auto-approve``,
    inputs at their defaults)."""


class LocalExecutor:
    """Runs one pipeline to completion in the current event loop."""

    def __init__(self, pipeline: ResolvedPipeline, providers: Mapping[str, ModelProvider],
                 run_dir: RunDir, pool: ProviderPool, *, options: RunOptions | None = None,
                 listener: Listener | None = None,
                 clock: Callable[[], datetime] | None = None,
                 store: Store | None = None, store_ref: StoreRef | None = None,
                 owner: RunOwner | None = None, approver: Approver | None = None,
                 resume: ResumeSeed | None = None,
                 notes: Callable[[str], None] | None = None,
                 cache: StageCache | None = None) -> None:
        if (store is None) != (store_ref is None):
            raise ValueError("pass both store and store_ref (the ref attempts get), or neither")
        self.pipeline = pipeline
        self.providers = dict(providers)
        self.run_dir = run_dir
        # Outputs and the trace: the run directory, unless the caller passes a store and
        # the ref its attempts get (spec.storage: s3). Status then names outputs by the
        # store's own references (s3://...), as in the cluster.
        # The run directory's store commits a pass's writes together (:mod:`.commit`).
        self._commits: GroupCommitStore | None = None
        self.store: Store
        if store is None:
            self.store = self._commits = GroupCommitStore(run_dir.path)
        else:
            self.store = store
        self.store_ref = (StoreRef(type="local", path=str(run_dir.path)) if store_ref is None
                          else store_ref)
        self._external_refs = store is not None
        self.pool = pool
        self.options = options or RunOptions()
        self.listener = listener
        self.clock = clock or (lambda: datetime.now(UTC))
        self.state: RunState = new_state(pipeline)
        self.owner = owner
        self.desk = ControlDesk(owner)
        self.approver = approver
        self.resume = resume
        self.notes = notes
        self.cache = cache
        """The stage cache (DESIGN §11): ``<--store>/.cache``; None: no stage caches."""
        self._keys: dict[Key, str] = {}
        """Cache keys of running attempts whose stage caches."""
        self._hits: dict[Key, tuple[Any, dict[str, Any]]] = {}
        """Attempts the cache answered: (output value, ``StageCached`` facts)."""
        self._approval_refs: dict[str, str] = {}
        self._saved: datetime | None = None
        self._saving: asyncio.Future[None] | None = None
        """The ``state.json`` write in flight (a worker thread), if any."""
        self._dirty = False
        self._status_at: datetime | None = None
        self._status_key: tuple[Any, ...] | None = None
        self._status_dirty = False
        self._status_text: str | None = None
        """What ``status.json`` says now (the end of a run does not write it again)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._passes: list[_Pass] = []
        """Passes planned but not yet durable, oldest first."""
        self._committing: asyncio.Future[None] | None = None
        self._commit_error: StoreError | None = None
        self.durable: RunState = self.state
        """The state as of the last pass on disk (what status and listeners see)."""
        self._tasks: dict[Key, tuple[asyncio.Task[AttemptResult], StartAttempt]] = {}
        self._done: asyncio.Queue[tuple[StartAttempt, AttemptResult | None]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._traceparent: str | None = None
        self._runner_clock = SystemClock()

    def request_cancel(self, by: str = "Ctrl-C") -> None:
        """Terminate the run (what Ctrl-C and SIGTERM do)."""
        self.desk.terminate(by)
        self._wake.set()

    def decide(self, decision: ApprovalDecision) -> None:
        """Hand in a decision from any thread (the terminal prompt); judged next step."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def hand_in() -> None:
            self.desk.decide(decision)
            self._wake.set()

        with contextlib.suppress(RuntimeError):  # the loop just closed: the run is over
            loop.call_soon_threadsafe(hand_in)

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
                                           (state.tokens.input, state.tokens.output),
                                           format_usd(parse_usd(state.cost)))
        return state

    def _signals(self, on: bool) -> None:
        loop = asyncio.get_running_loop()
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGINT: lambda: self.request_cancel("Ctrl-C"),
            signal.SIGTERM: lambda: self.request_cancel("SIGTERM")}
        if self.owner is not None:
            handlers[WAKE_SIGNAL] = self._wake.set
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if on:
                    loop.add_signal_handler(sig, handler)
                else:
                    loop.remove_signal_handler(sig)
        if not on and self.owner is not None:
            quiet_wake_signal()  # still owned until the CLI releases: a verb must not kill us

    async def _execute(self) -> RunState:
        self._loop = asyncio.get_running_loop()
        self._signals(True)
        try:
            outcomes: list[AttemptOutcome] = []
            if self.resume is not None:
                await self._apply_resume()
            while True:
                self._check_commits()
                now = self.clock()
                self.desk.collect(self.state, now)
                plan = step(self.pipeline, self.state, now, outcomes,
                            free_slots=self._free_slots(), control=self.desk.control,
                            approvals=self.desk.take_decisions())
                outcomes = []
                self.state = plan.state
                events = await self._record(plan.actions, now)
                await self._store_decisions(events)  # before the attempts that read them
                for stop in plan.stops():
                    self._stop(stop)
                for start in plan.starts():
                    self._start(start)
                self._enqueue(_Pass(self.state, events, plan.verdicts, now))
                if self.state.terminal:
                    break
                outcomes = await self._wait(plan.wake_at)
            await self._drain()
            await self._flush()
        finally:
            self._signals(False)
            self._cancel_timers()
            if self._committing is not None:  # the loop failed: finish on our own below
                self._committing.cancel()
            self.desk.close(self.state)
            self._commit_sync()
            if self._saving is not None:
                await asyncio.wait([self._saving])
            self.durable = self.state
            self._save_state()
            self._write_status()
        return self.state

    # -- group commit ------------------------------------------------------------------
    # A pass's outputs and events reach the disk together, the observed attempts' outputs
    # first (:mod:`.commit`), before anything of the pass is shown or answered: status,
    # state.json, the listener, verbs' answers, gates, the end of the run. Commits run one
    # at a time beside the loop; passes planned while one is in flight share the next
    # (classic group commit), so the loop never waits for the disk. Attempts a pass starts
    # begin at once: what they write is committed after that pass's events, and a crash
    # before then reruns them, as it would any attempt that had not ended.
    def _enqueue(self, done: _Pass) -> None:
        self._passes.append(done)
        if self._committing is None:
            self._committing = asyncio.ensure_future(self._commit_passes())

    async def _commit_passes(self) -> None:
        try:
            while self._passes and self._commit_error is None:
                passes, self._passes = self._passes, []
                try:
                    await self._commit()
                except StoreError as e:
                    self._commit_error = e
                    self._wake.set()
                    return
                for done in passes:
                    self._durable(done)
        finally:
            self._committing = None

    def _check_commits(self) -> None:
        if self._commit_error is not None:
            raise self._commit_error

    async def _flush(self) -> None:
        """Wait until every pass so far is durable and published."""
        while self._committing is not None:
            await asyncio.wait([self._committing])
        self._check_commits()

    def _durable(self, done: _Pass) -> None:
        """A pass reached the disk: show it, answer it, act on its gates."""
        self.durable = done.state
        for verdict in self.desk.answer(done.state, done.verdicts):
            if not verdict.accepted:
                self._note(f"decision refused: {verdict.message}")
        self._publish(done.events, done.now)
        self._gates(done.events, done.now)
        if any(e["type"] in _PROGRESS for e in done.events):
            self._dirty = True
        if self._dirty:  # a run killed hard can still be resumed from its state
            due = self._saved + SAVE_EVERY if self._saved is not None else done.now
            if done.now >= due and self._saving is None:
                self._saving = asyncio.ensure_future(
                    asyncio.to_thread(self._write_state, self._state_doc(done.state)))
                self._saving.add_done_callback(self._saved_state)
                self._saved, self._dirty = done.now, False
            else:
                self._timer("state", max(due, done.now + timedelta(milliseconds=50)))
        if self._status_dirty and self._status_at is not None:
            self._timer("status", self._status_at + STATUS_EVERY)

    def _timer(self, kind: str, when: datetime) -> None:
        """Write ``status.json`` or ``state.json`` at ``when`` if still due then."""
        if kind in self._timers or self._loop is None:
            return
        delay = max(0.0, (when - self.clock()).total_seconds())

        def fire() -> None:
            self._timers.pop(kind, None)
            if kind == "status" and self._status_dirty:
                self._write_status()
                self._status_at = self.clock()
            elif kind == "state" and self._dirty and self._saving is None:
                self._saving = asyncio.ensure_future(
                    asyncio.to_thread(self._write_state, self._state_doc(self.durable)))
                self._saving.add_done_callback(self._saved_state)
                self._saved, self._dirty = self.clock(), False

        self._timers[kind] = self._loop.call_later(delay, fire)

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _apply_resume(self) -> None:
        seed = self.resume
        assert seed is not None
        now = self.clock()
        plan = apply_reuse(self.pipeline, self.state, seed.verdict, seed.prior, seed.source,
                           seed.source_uid, now)
        self.state = plan.state
        events = await self._record(plan.actions, now)
        for name in seed.verdict.reused:
            run = self.state.stages[name]
            if run.output_ref is None and not run.fan_out and run.inline_output is not None:
                await self._store_decision(name, run.iteration, run.inline_output)
        self._enqueue(_Pass(self.state, events, [], now))

    async def _wait(self, wake_at: datetime | None) -> list[AttemptOutcome]:
        timeout = None
        if wake_at is not None:
            timeout = max(0.0, (wake_at - self.clock()).total_seconds())
        getter = asyncio.ensure_future(self._done.get())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({getter, waker}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        self._wake.clear()
        finished: list[tuple[StartAttempt, AttemptResult | None]] = []
        if getter.done() and not getter.cancelled():
            finished.append(getter.result())
        while not self._done.empty():
            finished.append(self._done.get_nowait())
        return [o for o in [await self._outcome(s, r) for s, r in finished] if o is not None]

    # -- approval stages ---------------------------------------------------------------
    def _gates(self, events: list[dict[str, Any]], now: datetime) -> None:
        """Auto-approve or ask about gates that started waiting; stop asking about ended
        ones."""
        for ev in events:
            stage, t = ev.get("stage"), ev["type"]
            if not stage:
                continue
            if t == "ApprovalRequested":
                data = ev.get("data") or {}
                gate = Gate(stage, ev.get("iteration") or 1, str(data.get("message") or ""),
                            list(data.get("inputs") or []))
                if self.options.auto_approve:
                    self.desk.decide(ApprovalDecision(
                        name=f"{AUTO_APPROVER}-{stage}-{gate.iteration}", stage=stage,
                        decision="Approve", approver=AUTO_APPROVER, iteration=gate.iteration,
                        at=now))
                    self._wake.set()
                elif self.approver is not None:
                    self.approver.ask(gate, self.decide)
            elif t in {"StageSucceeded", "StageFailed"} and self.approver is not None \
                    and self.pipeline.stage(stage).approval is not None:
                self.approver.cancel(stage)

    async def _store_decisions(self, events: list[dict[str, Any]]) -> None:
        """Write each approved gate's output (the decision) where outputs go."""
        for ev in events:
            stage = ev.get("stage")
            if ev["type"] != "StageSucceeded" or not stage or \
                    self.pipeline.stage(stage).approval is None:
                continue
            run = self.state.stages[stage]
            decision = run.instances[0].decision if run.instances else None
            if decision is not None:
                await self._store_decision(stage, ev.get("iteration") or run.iteration,
                                           decision)

    async def _store_decision(self, stage: str, iteration: int, value: Any) -> None:
        key = output_key(stage, iteration)
        try:
            await self.store.put(key, encode_output(value, "json", stage=stage,
                                                    iteration=iteration, attempt=1))
        except (StoreError, OSError) as e:  # the decision stands (it is in the state)
            self._note(f"{stage}: cannot store the approval decision: {e}")
            return
        self._approval_refs[stage] = key

    def _note(self, text: str) -> None:
        if self.notes is not None:
            self.notes(text)

    async def _commit(self) -> None:
        if self._commits is not None:
            await self._commits.commit()

    def _commit_sync(self) -> None:
        if self._commits is not None:
            try:
                self._commits.commit_sync()
            except StoreError as e:
                self._note(f"cannot write the run's last outputs and events: {e}")

    def _save_state(self) -> None:
        self._write_state(self._state_doc(self.state))

    def _state_doc(self, state: RunState) -> tuple[dict[str, Any], dict[str, Any] | None]:
        store = None if not self._external_refs else self.store_ref.model_dump(
            mode="json", by_alias=True, exclude_none=True)
        return dump_state(state), store

    def _write_state(self, doc: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
        try:
            self.run_dir.write_state(self.pipeline.name, self.pipeline.uid, *doc)
        except (OSError, TypeError, ValueError) as e:
            self._note(f"cannot write {self.run_dir.state}: {e}")

    def _saved_state(self, _: asyncio.Future[None]) -> None:
        self._saving = None

    async def _outcome(self, start: StartAttempt,
                       result: AttemptResult | None) -> AttemptOutcome | None:
        key: Key = (start.stage or "", start.iteration or 0, start.index, start.attempt or 0)
        cache_key, hit = self._keys.pop(key, None), self._hits.pop(key, None)
        if result is None:  # stopped by us: the engine already accounted for it
            return None
        if hit is not None:
            return outcome_from_result(start, result, hit[0], cached=hit[1],
                                       cost=hit_cost(hit[1]))
        output: Any = None
        fmt = "json"
        if result.ok and result.output_ref:
            try:
                stored = decode_output(await self.store.get(result.output_ref))
                output, fmt = stored.value, stored.format
            except Exception as exc:  # the store lost it: that attempt failed after all
                result = AttemptResult.failed("Error", f"cannot read the output: {exc}",
                                              tokens=result.tokens, usage=result.usage,
                                              duration_ms=result.duration_ms)
        cost = attempt_cost(result, self.providers)
        if cache_key is not None and self.cache is not None and result.ok:
            await remember(self.cache, cache_key, self.pipeline, start, result, fmt, output,
                           cost, self.clock())
        return outcome_from_result(start, result, output, cost=cost)

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
        spec = self._with_decisions(build_attempt(self.pipeline, self.state, start,
                                                  self.providers, self.store_ref,
                                                  self.options.base_dir))
        key: Key = (start.stage or "", start.iteration or 0, start.index, start.attempt or 0)

        # In the run directory in-process attempts append to the executor's own record:
        # one process, one writer, events in the order they happened (a tie in ``ts``
        # cannot put a stage's OutputSnapshot after its StageSucceeded), and no file
        # per attempt (an inode each, the dearest thing a local run writes). A remote
        # store keeps one record per attempt, as pods do (appends rewrite objects there).
        sink = None if self._commits is None else TraceWriter(
            self.store, spec, self._runner_clock, writer_id=self.options.writer_id,
            redactor=self.pool.redactor)

        cache_key = (attempt_key(self.pipeline, self.state, start, spec, self.providers)
                     if self.cache is not None else None)
        if cache_key is not None:
            self._keys[key] = cache_key

        async def attempt() -> AttemptResult:
            if cache_key is not None and self.cache is not None:
                hit = await answer(self.cache, cache_key, self.pipeline, spec, self.store,
                                   self.clock())
                if hit is not None:
                    self._hits[key] = (hit[1], hit[2])
                    return hit[0]
            return await run_attempt(spec, self.store, pool=self.pool, trace_writer=sink,
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

    def _with_decisions(self, spec: AttemptSpec) -> AttemptSpec:
        """Point upstream approval stages at their stored decision: the engine keeps a
        decision in the state (no output reference), the runner reads upstream outputs
        from the store."""
        patched = {}
        for name, ref in spec.upstream.items():
            key = self._approval_refs.get(name)
            if key is not None and ref.output_ref is None and ref.instance_refs is None \
                    and self.state.stages[name].output is not None:
                patched[name] = ref.model_copy(update={"output_ref": key})
        if not patched:
            return spec
        return spec.model_copy(update={"upstream": {**spec.upstream, **patched}})

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

    def _output_refs(self, state: RunState) -> dict[str, str]:
        refs = dict(self._approval_refs)
        refs.update({name: run.output_ref for name, run in state.stages.items()
                     if run.output_ref})
        return refs

    def _publish(self, events: list[dict[str, Any]], now: datetime) -> None:
        """Tell the listener; write ``status.json`` when due (:data:`STATUS_EVERY`)."""
        st = self.durable
        key = (st.phase, st.suspended, st.shutdown, st.failure is not None)
        self._status_dirty = self._status_dirty or bool(events) or key != self._status_key
        if self._status_dirty and (key != self._status_key or self._status_at is None
                                   or now >= self._status_at + STATUS_EVERY):
            self._write_status()
            self._status_at, self._status_key = now, key
        if self.listener is not None:
            self.listener(st, events)

    def _write_status(self) -> None:
        refs = {name: self.store.ref(ref) if self._external_refs else ref
                for name, ref in self._output_refs(self.durable).items()}
        try:
            status = to_status(self.pipeline, self.durable, output_refs=refs,
                               trace_ref=str(self.run_dir.trace))
            self._status_text = self.run_dir.write_status(status, unless=self._status_text)
        except OSError as e:
            self._note(f"cannot write {self.run_dir.status}: {e}")
        self._status_dirty = False
