"""The run state the engine plans over: plain data, serialisable, no behaviour.

Shells own a :class:`RunState` and hand it to :func:`stagecoach.engine.plan.plan`, which
returns a new one; they never edit it themselves except through
:func:`stagecoach.engine.plan.observe` (an attempt finished) and ``cancel``. The local
executor keeps it in memory (and writes ``status.json``); the operator rebuilds it from
the CR status and the store. No side effects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Instance",
    "RunState",
    "StageRun",
    "Tokens",
    "initial_state",
]

TERMINAL = frozenset({"Succeeded", "Failed", "Skipped"})
ACTIVE = frozenset({"Running"})


@dataclass
class Tokens:
    """Token counters."""

    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        """Input plus output."""
        return self.input + self.output

    def add(self, other: Tokens) -> None:
        """Add another counter in place."""
        self.input += other.input
        self.output += other.output


@dataclass
class Instance:
    """One runnable unit of a stage iteration: the stage itself, or one forEach item."""

    index: int | None = None
    item: Any = None
    phase: str = "Pending"  # Pending | Waiting | Queued | Running | Succeeded | Failed
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    output: Any = None
    output_ref: str | None = None
    previous_error: str | None = None
    provider: str | None = None


@dataclass
class StageRun:
    """A stage's progress in its current iteration, plus what survives iterations."""

    name: str
    phase: str = "Pending"
    iteration: int = 1
    instances: list[Instance] = field(default_factory=list)
    fan_out: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    output: Any = None
    """Latest successful output (kept when a loop resets the stage)."""
    output_ref: str | None = None
    output_iteration: int | None = None
    tokens: Tokens = field(default_factory=Tokens)
    loop_from: str | None = None
    loop_reason: str | None = None

    @property
    def attempt(self) -> int:
        """Highest attempt number among the instances (0 before the first start)."""
        return max((i.attempt for i in self.instances), default=0)


@dataclass
class RunState:
    """Everything the engine needs to know about one pipeline run."""

    stages: dict[str, StageRun]
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Cancelled
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    failure: tuple[str, str] | None = None
    """Set when the pipeline is going to fail: (reason, message). No new stage starts."""
    cancel_requested: bool = False
    loops: dict[str, int] = field(default_factory=dict)
    """Times each back-edge was taken, keyed ``<stage>#<route index>``."""
    tokens: Tokens = field(default_factory=Tokens)
    budget_exceeded: bool = False
    final_output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (datetimes stay datetime objects)."""
        return asdict(self)

    @property
    def terminal(self) -> bool:
        """True once the pipeline reached a final phase."""
        return self.phase in {"Succeeded", "Failed", "Cancelled", "Invalid"}


def initial_state(stage_names: list[str]) -> RunState:
    """A fresh state with every stage Pending in iteration 1."""
    return RunState(stages={n: StageRun(n) for n in stage_names})
