"""The pure engine: graph, expressions, decisions and ``plan()``.

Imports only the standard library, :mod:`stagecoach.api` and the expression libraries
(CEL, Jinja2); never Kubernetes, never I/O, never the clock. Used alike by
``stagecoach validate``, the local executor and the operator.

Submodules load on first use of one of their names (``validate`` needs neither the
planner nor the actions), so a command pays only for what it touches; type checkers see
ordinary imports.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import (
        Action,
        FinishPipeline,
        RecordDecision,
        ResetIteration,
        ScheduleRetry,
        SkipStage,
        StageEvent,
        StartAttempt,
        StopAttempt,
        timestamp,
        trace_events,
    )
    from .control import SHUTDOWN_MODES, ApprovalDecision, ApprovalVerdict, Control, approval_inputs
    from .dag import Graph, GraphError, build
    from .expressions import (
        CelResult,
        ExpressionError,
        check_cel,
        check_template,
        evaluate_cel,
        render_template,
    )
    from .plan import AttemptOutcome, Plan, cancel, new_state, observe, plan, step, variables
    from .reuse import PriorStage, ReuseVerdict, apply_reuse, prior_stages, reusable
    from .state import Instance, RunState, StageRun, Tokens, dump_state, load_state, output_refs
    from .status import to_status
    from .validation import validate_manifests, validate_pipeline

__all__ = [
    "SHUTDOWN_MODES",
    "Action",
    "ApprovalDecision",
    "ApprovalVerdict",
    "AttemptOutcome",
    "CelResult",
    "Control",
    "ExpressionError",
    "FinishPipeline",
    "Graph",
    "GraphError",
    "Instance",
    "Plan",
    "PriorStage",
    "RecordDecision",
    "ResetIteration",
    "ReuseVerdict",
    "RunState",
    "ScheduleRetry",
    "SkipStage",
    "StageEvent",
    "StageRun",
    "StartAttempt",
    "StopAttempt",
    "Tokens",
    "apply_reuse",
    "approval_inputs",
    "build",
    "cancel",
    "check_cel",
    "check_template",
    "dump_state",
    "evaluate_cel",
    "load_state",
    "new_state",
    "observe",
    "output_refs",
    "plan",
    "prior_stages",
    "render_template",
    "reusable",
    "step",
    "timestamp",
    "to_status",
    "trace_events",
    "validate_manifests",
    "validate_pipeline",
    "variables",
]

_LAZY = {
    "Action": "actions",
    "ApprovalDecision": "control",
    "ApprovalVerdict": "control",
    "AttemptOutcome": "plan",
    "CelResult": "expressions",
    "Control": "control",
    "ExpressionError": "expressions",
    "FinishPipeline": "actions",
    "Graph": "dag",
    "GraphError": "dag",
    "Instance": "state",
    "Plan": "plan",
    "PriorStage": "reuse",
    "RecordDecision": "actions",
    "ResetIteration": "actions",
    "ReuseVerdict": "reuse",
    "RunState": "state",
    "SHUTDOWN_MODES": "control",
    "ScheduleRetry": "actions",
    "SkipStage": "actions",
    "StageEvent": "actions",
    "StageRun": "state",
    "StartAttempt": "actions",
    "StopAttempt": "actions",
    "Tokens": "state",
    "apply_reuse": "reuse",
    "approval_inputs": "control",
    "build": "dag",
    "cancel": "plan",
    "check_cel": "expressions",
    "check_template": "expressions",
    "dump_state": "state",
    "evaluate_cel": "expressions",
    "load_state": "state",
    "new_state": "plan",
    "observe": "plan",
    "output_refs": "state",
    "plan": "plan",
    "prior_stages": "reuse",
    "render_template": "expressions",
    "reusable": "reuse",
    "step": "plan",
    "timestamp": "actions",
    "to_status": "status",
    "trace_events": "actions",
    "validate_manifests": "validation",
    "validate_pipeline": "validation",
    "variables": "plan",
}
"""Public name → the submodule that defines it."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
