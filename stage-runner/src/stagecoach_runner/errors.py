"""Errors as values with a class (DESIGN §2 error classes).

Everything that fails an attempt is raised inside the runner as :class:`AttemptError`
and turned into a failed :class:`~stagecoach.api.AttemptResult` in exactly one place,
:func:`stagecoach_runner.run_attempt`. No side effects.
"""

from __future__ import annotations

from stagecoach.api import ErrorClass

__all__ = ["FALLBACK_CLASSES", "AttemptError"]

FALLBACK_CLASSES: frozenset[str] = frozenset({"RateLimited", "ProviderUnavailable", "Timeout"})
"""Failures of a provider after which the stage's ``fallbacks`` are tried."""


class AttemptError(Exception):
    """The attempt failed with ``error_class``; ``message`` tells the user what to do."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class: ErrorClass = error_class
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_class}: {self.message}"
