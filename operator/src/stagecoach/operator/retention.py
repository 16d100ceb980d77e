"""How long a finished pipeline stays (DESIGN §10). Pure: no side effects.

``spec.ttlSecondsAfterFinished``, else the operator's default
(``STAGECOACH_TTL_SECONDS_AFTER_FINISHED``, the chart's
``operator.ttlSecondsAfterFinished``), counts from ``status.finishedAt``; when it has
passed the operator deletes the pipeline and the garbage collector deletes everything it
owns (Jobs, pods, ConfigMaps). Until then outputs and the trace stay readable. Like the
Job controller's TTL, it survives restarts: the deadline is derived from the object,
never kept in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

__all__ = ["TTL_ENV", "default_ttl", "expires_at"]

TTL_ENV = "STAGECOACH_TTL_SECONDS_AFTER_FINISHED"


def default_ttl(environ: Mapping[str, str]) -> int | None:
    """The operator's default TTL in seconds (None: keep finished pipelines). Raises
    ValueError on a value that is not a non-negative integer."""
    raw = (environ.get(TTL_ENV) or "").strip()
    if not raw or raw == "null":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{TTL_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{TTL_ENV}={raw!r} must not be negative")
    return value


def expires_at(body: Mapping[str, Any], default: int | None) -> datetime | None:
    """When the finished pipeline ``body`` is to be deleted; None: never (not finished,
    no TTL, or no ``finishedAt``, e.g. ``Invalid``)."""
    spec = body.get("spec") or {}
    ttl = spec.get("ttlSecondsAfterFinished")
    ttl = default if ttl is None else ttl
    finished = (body.get("status") or {}).get("finishedAt")
    if ttl is None or not finished:
        return None
    try:
        at = datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at + timedelta(seconds=int(ttl))
