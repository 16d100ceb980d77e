"""Small named decisions, each a pure function tested against a table of cases.

In the spirit of cert-manager's ``policies.go``: the planner asks these questions and
acts on the answers; none of them reads a clock (``now`` is passed in) or draws random
numbers (jitter comes from a deterministic hash unless a function is injected).
No side effects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from ..api import ResolvedStage, RetryPolicy, Route, format_usd, parse_usd
from .state import Instance, StageRun, Tokens

__all__ = [
    "DepVerdict",
    "attempt_deadline",
    "backoff_delay",
    "budget_message",
    "dependency_verdict",
    "elapsed_ms",
    "halt_class",
    "hash_jitter",
    "loop_allowed",
    "over_budget",
    "pipeline_deadline",
    "should_retry",
]

DepVerdict = Literal["wait", "ready", "all_skipped", "blocked"]


def dependency_verdict(stage: ResolvedStage, runs: Mapping[str, StageRun],
                       on_failure: Mapping[str, str]) -> DepVerdict:
    """Can ``stage`` start, judging only by its dependencies' current phases?

    ready: every dependency Succeeded, Skipped, or Failed with ``onFailure: continue``;
    all_skipped: it has dependencies and all were skipped; blocked: one failed for good;
    wait: otherwise.
    """
    if not stage.depends_on:
        return "ready"
    phases = [runs[d].phase for d in stage.depends_on]
    for dep, phase in zip(stage.depends_on, phases, strict=True):
        if phase == "Failed" and on_failure.get(dep) != "continue":
            return "blocked"
    if any(p not in {"Succeeded", "Skipped", "Failed"} for p in phases):
        return "wait"
    if all(p == "Skipped" for p in phases):
        return "all_skipped"
    return "ready"


def should_retry(policy: RetryPolicy, error_class: str, attempt: int) -> bool:
    """Retry when the class is listed (never InvalidInput) and attempts remain."""
    if error_class == "InvalidInput" or error_class not in policy.on:
        return False
    return attempt < policy.limit + 1


def backoff_delay(policy: RetryPolicy, failed_attempt: int, jitter_unit: float) -> timedelta:
    """``initial * factor^(n-1)`` capped at ``max``, then ±``jitter`` (unit in [-1, 1])."""
    b = policy.backoff
    base = b.initial.total_seconds() * (b.factor ** max(failed_attempt - 1, 0))
    base = min(base, b.max.total_seconds())
    factor = 1.0 + b.jitter * max(-1.0, min(1.0, jitter_unit))
    return timedelta(seconds=max(0.0, base * factor))


def hash_jitter(key: str) -> float:
    """A deterministic number in [-1, 1] from ``key`` (same inputs → same plan)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def attempt_deadline(stage: ResolvedStage, instance: Instance) -> datetime | None:
    """When the running attempt overruns its stage timeout, or None."""
    if stage.timeout is None or instance.started_at is None:
        return None
    return instance.started_at + stage.timeout


def pipeline_deadline(started_at: datetime | None, timeout: timedelta | None) -> datetime | None:
    """When the whole pipeline overruns, or None."""
    if started_at is None or timeout is None:
        return None
    return started_at + timeout


def over_budget(max_tokens: int | None, used: Tokens, max_cost: str | None = None,
                cost: str | None = None) -> bool:
    """True when the token budget or the USD budget is used up."""
    if max_tokens is not None and used.total >= max_tokens:
        return True
    spent, limit = parse_usd(cost), parse_usd(max_cost)
    return limit is not None and spent is not None and spent >= limit


def budget_message(max_tokens: int | None, used: Tokens, max_cost: str | None = None,
                   cost: str | None = None) -> str:
    """The pipeline's message once the budget is used up (always the current totals)."""
    spent, limit = parse_usd(cost), parse_usd(max_cost)
    if limit is not None and spent is not None and spent >= limit and not (
            max_tokens is not None and used.total >= max_tokens):
        return (f"cost budget used up: ${format_usd(spent)} of ${format_usd(limit)}; "
                "no new stage starts")
    return f"token budget used up: {used.total} of {max_tokens} tokens; no new stage starts"


def elapsed_ms(started_at: datetime | None, now: datetime) -> int | None:
    """Milliseconds from ``started_at`` to ``now`` (None when it never started)."""
    if started_at is None:
        return None
    return max(0, round((now - started_at).total_seconds() * 1000))


_HALT_CLASSES = frozenset({"Timeout", "BudgetExceeded", "Cancelled"})


def halt_class(reason: str) -> str:
    """The error class of attempts and stages stopped because the pipeline ends early:
    its timeout, its budget or a cancellation; anything else (another stage failed, a
    back-edge exhausted) stops them as ``Cancelled``."""
    return reason if reason in _HALT_CLASSES else "Cancelled"


def loop_allowed(route: Route, taken: int) -> bool:
    """May the back-edge be taken again? Its target's runs via this edge stay ≤ max."""
    return taken + 1 < route.max_iterations
