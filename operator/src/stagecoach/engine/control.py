"""What a person asks of a run (DESIGN §9), as values the engine plans with.

:class:`Control` is ``spec.suspend`` / ``spec.shutdown`` (or the local verbs and Ctrl-C);
:class:`ApprovalDecision` is one ``StageApproval`` (or ``stagecoach approve RUN_DIR``);
:class:`ApprovalVerdict` is the engine's answer to it, which the shell reports back to
whoever decided (the StageApproval's status, the CLI's exit code). The checks on an
approval's inputs live here too, so both shells and the CLI refuse the same things with
the same words. No side effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..api import ApprovalSpec

__all__ = [
    "SHUTDOWN_MODES",
    "ApprovalDecision",
    "ApprovalVerdict",
    "Control",
    "ControlError",
    "approval_inputs",
]

SHUTDOWN_MODES = ("Stop", "Terminate")


class ControlError(Exception):
    """A control request (a CLI verb) that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Control:
    """The run-control fields: suspended, and the shutdown asked for (if any)."""

    suspend: bool = False
    shutdown: Literal["Stop", "Terminate"] | None = None
    by: str | None = None
    """Who asked (for the trace), when the shell knows."""


@dataclass(frozen=True)
class ApprovalDecision:
    """One decision on one approval stage. ``name`` identifies it (the StageApproval's
    name, or a local request id): a decision is applied at most once."""

    name: str
    stage: str
    decision: Literal["Approve", "Reject"]
    approver: str | None
    iteration: int | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class ApprovalVerdict:
    """The engine's answer to a decision: applied (``Accepted``) or ``Refused`` with a
    reason and a message that says what was wrong."""

    name: str
    accepted: bool
    reason: str
    message: str

    @property
    def phase(self) -> str:
        """``Accepted`` or ``Refused`` (the StageApproval status phase)."""
        return "Accepted" if self.accepted else "Refused"

    def to_dict(self) -> dict[str, Any]:
        """Plain form (run state, local answer files)."""
        return {"accepted": self.accepted, "reason": self.reason, "message": self.message}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ApprovalVerdict:
        """Inverse of :meth:`to_dict`."""
        return cls(name, bool(data["accepted"]), str(data["reason"]), str(data["message"]))


def approval_inputs(spec: ApprovalSpec, given: Mapping[str, str],
                    decision: str) -> tuple[dict[str, str], list[str]]:
    """The inputs with defaults applied, and what is wrong with the given ones.

    Unknown names and values outside ``enum`` are always wrong; a ``required`` input
    without a value or default is wrong only for an approval (a rejection needs none).
    """
    problems: list[str] = []
    declared = {i.name: i for i in spec.inputs}
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(f"input {name!r} is not one of the stage's inputs ({known})")
    values: dict[str, str] = {}
    for name, spec_input in declared.items():
        value = given.get(name, spec_input.default)
        if value is None:
            if spec_input.required and decision == "Approve":
                problems.append(f"input {name!r} is required")
            continue
        if spec_input.enum is not None and value not in spec_input.enum:
            problems.append(f"input {name!r} must be one of {', '.join(spec_input.enum)}, "
                            f"got {value!r}")
            continue
        values[name] = value
    return values, problems
