"""``stagecoach-runner``: runs one stage attempt, in a pod or in-process (DESIGN §6).

:func:`run_attempt` is the core; ``python -m stagecoach_runner`` wraps it for a pod.
This package imports only :mod:`stagecoach.api` and :mod:`stagecoach.store` from the
rest of Stagecoach, never the engine or a shell.
"""

from .agent import TokenMeter, build_messages, parse_output
from .attempt import run_attempt
from .clock import Clock, FakeClock, SystemClock, format_ts
from .errors import FALLBACK_CLASSES, AttemptError
from .providers import CassettePlayer, LimiterRegistry, ProviderPool, Recorder
from .runstage import RunPaths, collect_output, prepare_input, run_command
from .tracing import Redactor, TraceSink, TraceWriter, writer_id_for

__all__ = [
    "FALLBACK_CLASSES",
    "AttemptError",
    "CassettePlayer",
    "Clock",
    "FakeClock",
    "LimiterRegistry",
    "ProviderPool",
    "Recorder",
    "Redactor",
    "RunPaths",
    "SystemClock",
    "TokenMeter",
    "TraceSink",
    "TraceWriter",
    "build_messages",
    "collect_output",
    "format_ts",
    "parse_output",
    "prepare_input",
    "run_attempt",
    "run_command",
    "writer_id_for",
]
