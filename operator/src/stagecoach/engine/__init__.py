"""The pure engine: graph, expressions, decisions and ``plan()``.

Imports only the standard library, :mod:`stagecoach.api` and the expression libraries
(CEL, Jinja2); never Kubernetes, never I/O, never the clock. Used alike by
``stagecoach validate``, the local executor and the operator.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

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
    from .planner import AttemptOutcome, Plan, cancel, new_state, observe, plan, step, variables
    from .reuse import PriorStage, ReuseVerdict, apply_reuse, prior_stages, reusable
    from .state import Instance, RunState, StageRun, Tokens, dump_state, load_state, output_refs
    from .status import to_status
    from .validation import validate_manifests, validate_pipeline

_EXPORTS: dict[str, tuple[str, ...]] = {
    "actions": (
        "Action",
        "FinishPipeline",
        "RecordDecision",
        "ResetIteration",
        "ScheduleRetry",
        "SkipStage",
        "StageEvent",
        "StartAttempt",
        "StopAttempt",
        "timestamp",
        "trace_events",
    ),
    "control": (
        "SHUTDOWN_MODES",
        "ApprovalDecision",
        "ApprovalVerdict",
        "Control",
        "approval_inputs",
    ),
    "dag": ("Graph", "GraphError", "build"),
    "expressions": (
        "CelResult",
        "ExpressionError",
        "check_cel",
        "check_template",
        "evaluate_cel",
        "render_template",
    ),
    "planner": (
        "AttemptOutcome",
        "Plan",
        "cancel",
        "new_state",
        "observe",
        "plan",
        "step",
        "variables",
    ),
    "reuse": ("PriorStage", "ReuseVerdict", "apply_reuse", "prior_stages", "reusable"),
    "state": (
        "Instance",
        "RunState",
        "StageRun",
        "Tokens",
        "dump_state",
        "load_state",
        "output_refs",
    ),
    "status": ("to_status",),
    "validation": ("validate_manifests", "validate_pipeline"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

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
