"""The run state the engine plans over: plain data, serialisable, no behaviour.

Shells own a :class:`RunState` and hand it to :func:`stagecoach.engine.planner.plan`, which
returns a new one; they never edit it themselves except through
:func:`stagecoach.engine.planner.observe` (an attempt finished) and ``cancel``. The local
executor keeps it in memory (and writes ``status.json``); the operator rebuilds it from
the CR status and the store. No side effects.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "TERMINAL",
    "Instance",
    "RunState",
    "StageRun",
    "Tokens",
    "copy_run",
    "copy_state",
    "dump_state",
    "initial_state",
    "load_state",
    "output_refs",
]

TERMINAL = frozenset({"Succeeded", "Failed", "Skipped"})
"""Stage phases a stage does not leave within its iteration."""


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
    decision: dict[str, Any] | None = None
    """Approval stages: the decision (also the output when approved); always persisted."""


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
    instance_refs: list[str | None] | None = None
    """forEach stages: where each instance's output is stored (None: failed)."""
    output_iteration: int | None = None
    tokens: Tokens = field(default_factory=Tokens)
    cost: str | None = None
    """USD of those tokens, exact (a decimal string); None while nothing was priced."""
    loop_from: str | None = None
    loop_reason: str | None = None
    inline_output: Any = None
    """An output the engine made itself (an approval's decision): persisted with the
    state, since no store holds it."""
    spec_hash: str | None = None
    """Hash of the stage's resolved spec (what a later ``resumeFrom`` compares)."""
    reused_from: str | None = None
    """The pipeline this stage's output was reused from (``resumeFrom``)."""

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
    """Local Ctrl-C: the same as ``shutdown: Terminate``."""
    suspended: bool = False
    shutdown: str | None = None
    """``Stop`` or ``Terminate`` once asked for (never goes back)."""
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Approval decisions already judged, by name → verdict (applied at most once)."""
    loops: dict[str, int] = field(default_factory=dict)
    """Times each back-edge was taken, keyed ``<stage>#<route index>``."""
    tokens: Tokens = field(default_factory=Tokens)
    cost: str | None = None
    """USD over all stages, exact (a decimal string); None while nothing was priced."""
    budget_exceeded: bool = False
    final_output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (datetimes stay datetime objects)."""
        return asdict(self)

    @property
    def terminal(self) -> bool:
        """True once the pipeline reached a final phase."""
        return self.phase in {"Succeeded", "Failed", "Cancelled", "Invalid"}


def initial_state(stage_names: list[str],
                  hashes: dict[str, str] | None = None) -> RunState:
    """A fresh state with every stage Pending in iteration 1."""
    return RunState(stages={n: StageRun(n, spec_hash=(hashes or {}).get(n))
                            for n in stage_names})


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _plain(value: Any) -> Any:
    """A deep copy of JSON-like data (what :func:`dataclasses.asdict` does to field
    values, without its per-value dispatch)."""
    if value is None or isinstance(value, str | int | float | datetime):
        return value  # immutable
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Tokens):
        return {"input": value.input, "output": value.output}
    return copy.deepcopy(value)


_INSTANCE_TIMES = ("started_at", "finished_at", "next_attempt_at")


def dump_state(state: RunState, *, with_outputs: bool = False) -> dict[str, Any]:
    """JSON-ready form of the state. Outputs (payloads) are left out unless asked for:
    shells persist references and reload values from the store with :func:`load_state`.
    The final output, a payload as well, is kept only as "there is one" (``""``)."""

    def inst(i: Instance) -> dict[str, Any]:
        d = {k: _plain(v) for k, v in vars(i).items() if with_outputs or k != "output"}
        for k in _INSTANCE_TIMES:
            d[k] = _ts(getattr(i, k))
        return d

    stages = {}
    for name, run in state.stages.items():
        d = {k: _plain(v) for k, v in vars(run).items()
             if k != "instances" and (with_outputs or k != "output")}
        d["instances"] = [inst(i) for i in run.instances]
        d["started_at"], d["finished_at"] = _ts(run.started_at), _ts(run.finished_at)
        stages[name] = d
    out = {k: _plain(v) for k, v in vars(state).items() if k != "stages"}
    out["stages"] = stages
    out["started_at"], out["finished_at"] = _ts(state.started_at), _ts(state.finished_at)
    out["failure"] = list(state.failure) if state.failure else None
    if not with_outputs and state.final_output is not None:
        out["final_output"] = ""  # a payload too (the shells store it): "there is one"
    return out


def load_state(data: dict[str, Any], outputs: dict[str, Any] | None = None) -> RunState:
    """Inverse of :func:`dump_state`. ``outputs`` maps output references to values
    (what the shell loaded from the store); missing references read as None."""
    values = outputs or {}

    def inst(d: dict[str, Any]) -> Instance:
        d = dict(d)
        for k in ("started_at", "finished_at", "next_attempt_at"):
            d[k] = _dt(d.get(k))
        if "output" not in d:
            d["output"] = (values.get(d["output_ref"]) if d.get("output_ref")
                           else d.get("decision") if d.get("phase") == "Succeeded" else None)
        return Instance(**d)

    stages: dict[str, StageRun] = {}
    for name, d in data["stages"].items():
        d = dict(d)
        d["instances"] = [inst(i) for i in d.get("instances", [])]
        d["tokens"] = Tokens(**d.get("tokens", {}))
        d["started_at"], d["finished_at"] = _dt(d.get("started_at")), _dt(d.get("finished_at"))
        if "output" not in d:
            if d.get("instance_refs") is not None:
                d["output"] = [values.get(r) if r else None for r in d["instance_refs"]]
            elif d.get("output_ref"):
                d["output"] = values.get(d["output_ref"])
            else:
                d["output"] = d.get("inline_output")
        stages[name] = StageRun(**d)
    rest = {k: v for k, v in data.items() if k != "stages"}
    rest["tokens"] = Tokens(**rest.get("tokens", {}))
    rest["started_at"], rest["finished_at"] = _dt(rest.get("started_at")), _dt(
        rest.get("finished_at"))
    rest["failure"] = tuple(rest["failure"]) if rest.get("failure") else None
    return RunState(stages=stages, **rest)


def output_refs(state: RunState) -> set[str]:
    """Every output reference the state points at (what a shell must load)."""
    refs: set[str] = set()
    for run in state.stages.values():
        if run.output_ref:
            refs.add(run.output_ref)
        refs.update(r for r in run.instance_refs or [] if r)
        refs.update(i.output_ref for i in run.instances if i.output_ref)
    return refs


def _shallow(obj: Any) -> Any:
    """``copy.copy`` of a plain dataclass instance, without the reduce protocol."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def copy_run(run: StageRun) -> StageRun:
    """A copy of one stage's record safe to modify (payloads shared)."""
    new: StageRun = _shallow(run)
    new.instances = [_shallow(i) for i in run.instances]
    new.tokens = Tokens(run.tokens.input, run.tokens.output)
    if run.instance_refs is not None:
        new.instance_refs = list(run.instance_refs)
    return new


def copy_state(state: RunState, *, share: frozenset[str] | set[str] = frozenset()) -> RunState:
    """A copy safe to modify: every mutable record is new; output payloads are shared
    (the engine never changes a payload, it only replaces it). Much cheaper than
    ``copy.deepcopy`` on large pipelines. The records of the stages named in ``share``
    are the same objects as in ``state``: the caller copies one (:func:`copy_run`)
    before changing it (the planner does this for stages that had ended)."""
    stages = {name: run if name in share else copy_run(run)
              for name, run in state.stages.items()}
    out: RunState = _shallow(state)
    out.stages = stages
    out.loops = dict(state.loops)
    out.approvals = dict(state.approvals)
    out.tokens = Tokens(state.tokens.input, state.tokens.output)
    return out
