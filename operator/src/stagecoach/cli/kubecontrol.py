"""Run control for cluster pipelines.

PLACEHOLDER being implemented in this session (helper C); see the brief.
"""

from __future__ import annotations

from ..engine.control import ControlError

__all__ = ["approve", "control", "retry"]


def control(name: str, verb: str, *, namespace: str | None, kubeconfig: str | None) -> str:
    """Patch spec.suspend / spec.shutdown of AgentPipeline ``name``."""
    raise ControlError("not built yet")


def approve(name: str, stage: str, decision: str, inputs: dict[str, str],
            message: str | None, *, namespace: str | None, kubeconfig: str | None,
            wait: float = 30.0) -> str:
    """Create a StageApproval as the current user and wait for the operator's answer."""
    raise ControlError("not built yet")


def retry(source: str, *, namespace: str | None, new_name: str | None = None,
           kubeconfig: str | None) -> str:
    """Create NAME-r<n> with resumeFrom: NAME."""
    raise ControlError("not built yet")
