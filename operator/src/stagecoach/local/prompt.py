"""The terminal prompt for approval stages (``stagecoach run`` on a terminal).

When an approval stage starts waiting and stdin and stdout are a terminal (and
``--auto-approve`` is not given) the run asks here: ``Approve? [y/N]``, then each input
with its default and allowed values, or a note for a rejection. The questions run in a
daemon thread, one gate at a time, so the event loop keeps running attempts, answering
verbs and timing out gates meanwhile; the progress display is paused while asking. A
gate decided elsewhere (``stagecoach approve RUN_DIR ...`` from another terminal, its
timeout, Terminate) cancels its question: the thread polls stdin with ``select`` and
gives up as soon as the gate no longer waits. The approver is the local user.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from ..engine import ApprovalDecision
from .executor import Gate

__all__ = ["TerminalApprover"]

_POLL = 0.2


class _Pausable(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class _Cancelled(Exception):
    pass


class TerminalApprover:
    """Asks about waiting gates on a terminal (an :class:`~.executor.Approver`)."""

    def __init__(self, stdin: TextIO, out: TextIO, user: str, display: _Pausable | None = None,
                 run_dir: str | None = None) -> None:
        self.stdin, self.out, self.user = stdin, out, user
        self.display = display
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._queue: list[tuple[Gate, Callable[[ApprovalDecision], None]]] = []
        self._cancelled: set[str] = set()
        self._current: str | None = None
        self._thread: threading.Thread | None = None
        self._count = 0

    def ask(self, gate: Gate, decide: Callable[[ApprovalDecision], None]) -> None:
        with self._lock:
            self._cancelled.discard(gate.stage)
            self._queue.append((gate, decide))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="approval-prompt",
                                                daemon=True)
                self._thread.start()

    def cancel(self, stage: str) -> None:
        with self._lock:
            self._queue = [(g, d) for g, d in self._queue if g.stage != stage]
            if self._current == stage:
                self._cancelled.add(stage)

    def close(self, timeout: float = 2.0) -> None:
        """The run ended: stop asking, and let the prompt say so before the process exits."""
        with self._lock:
            self._queue.clear()
            if self._current is not None:
                self._cancelled.add(self._current)
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the prompt thread ---------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                gate, decide = self._queue.pop(0)
                self._current = gate.stage
            if self.display is not None:
                self.display.pause()
            try:
                decision = self._interview(gate)
            except _Cancelled:
                self._say(f"(no longer waiting: {gate.stage} was decided elsewhere or the "
                          "run ended)")
                decision = None
            except (EOFError, OSError):
                self._say("(stdin closed: decide with stagecoach approve/reject)")
                decision = None
            finally:
                with self._lock:
                    self._current = None
                    self._cancelled.discard(gate.stage)
                if self.display is not None:
                    self.display.resume()
            if decision is not None:
                decide(decision)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _line(self, question: str, stage: str) -> str:
        self.out.write(question)
        self.out.flush()
        while True:
            with self._lock:
                if stage in self._cancelled:
                    self.out.write("\n")
                    raise _Cancelled
            ready, _, _ = select.select([self.stdin], [], [], _POLL)
            if ready:
                line = self.stdin.readline()
                if line == "":
                    raise EOFError
                return line.strip()

    def _interview(self, gate: Gate) -> ApprovalDecision:
        self._say(f"\n{gate.stage} awaits approval: {gate.message}")
        answer = self._line("Approve? [y/N] ", gate.stage).lower()
        approve = answer in {"y", "yes"}
        inputs: dict[str, str] = {}
        message: str | None = None
        if approve:
            for spec in gate.inputs:
                value = self._input(gate.stage, spec)
                if value is not None:
                    inputs[str(spec["name"])] = value
        message = self._line("Note (optional): " if approve else "Why? (optional): ",
                             gate.stage) or None
        self._count += 1
        return ApprovalDecision(name=f"prompt-{gate.stage}-{gate.iteration}-{self._count}",
                                stage=gate.stage, decision="Approve" if approve else "Reject",
                                approver=self.user, iteration=gate.iteration,
                                inputs=inputs, message=message)

    def _input(self, stage: str, spec: dict[str, Any]) -> str | None:
        name = str(spec.get("name"))
        enum = [str(v) for v in spec["enum"]] if isinstance(spec.get("enum"), list) else None
        default = spec.get("default")
        hint = f" ({spec['description']})" if spec.get("description") else ""
        choices = f" [{'|'.join(enum)}]" if enum else ""
        shown = f" (default {default})" if default is not None else ""
        while True:
            value = self._line(f"  {name}{hint}{choices}{shown}: ", stage)
            if not value:
                if default is None and spec.get("required"):
                    self._say(f"  {name} is required")
                    continue
                return None  # the engine applies the default
            if enum is not None and value not in enum:
                self._say(f"  {name} must be one of {', '.join(enum)}")
                continue
            return value
