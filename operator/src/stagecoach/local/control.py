"""Run control for local runs: the verbs reach the ``stagecoach run`` that owns RUN_DIR.

PLACEHOLDER being implemented in this session (helper A); see the brief.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.control import ControlError

__all__ = ["send_approval", "send_control"]


def send_control(run_dir: Path, verb: str) -> str:
    """suspend|resume|stop|terminate for the local process owning ``run_dir``."""
    raise ControlError(f"{verb} of local runs is not built yet")


def send_approval(run_dir: Path, stage: str, decision: str, inputs: dict[str, str],
                  message: str | None, *, wait: float = 30.0) -> str:
    """Approve or reject ``stage`` of the local run owning ``run_dir``; the answer."""
    raise ControlError("local approvals are not built yet")
