"""Small formatting helpers shared by the terminal and HTML views of a run report.

Timestamps, durations, token counts and short previews of untrusted values are written
the same way in both views, so a number read in the terminal can be found in the HTML.
No side effects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stagecoach.api import format_usd, parse_usd

__all__ = [
    "clip",
    "fmt_clock",
    "fmt_duration",
    "fmt_int",
    "fmt_offset",
    "fmt_usd",
    "instance_label",
    "parse_budget",
    "parse_ts",
    "preview",
]


def parse_ts(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string (``...Z`` or an offset), else None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def fmt_duration(seconds: float) -> str:
    """``850ms``, ``1.25s``, ``42s``, ``2m05s``, ``1h02m``."""
    seconds = max(0.0, seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 10:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    if seconds < 60:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_offset(ts: datetime | None, origin: datetime | None) -> str:
    """``+1.25s`` relative to the run's start (or ``?`` when either is unknown)."""
    if ts is None or origin is None:
        return "?"
    return "+" + fmt_duration((ts - origin).total_seconds())


def fmt_clock(ts: datetime | None) -> str:
    """``2026-11-24 10:00:00Z`` (seconds precision), or ``-``."""
    if ts is None:
        return "-"
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_int(n: int | None) -> str:
    """``12,345``."""
    return "-" if n is None else f"{n:,}"


def fmt_usd(value: Decimal | None) -> str:
    """``$0.0123``, ``$0.50`` (rounded to a micro-dollar, at least cents shown); ``-``
    when unknown (never "$0" for an unpriced model)."""
    text = format_usd(value)
    if text is None:
        return "-"
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac:0<2}"


def parse_budget(text: str | None) -> Decimal | None:
    """A manifest's ``budget.maxCost``, or None when absent or not an amount."""
    try:
        return parse_usd(text)
    except ValueError:
        return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``…`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def preview(value: Any, limit: int = 80) -> str:
    """A one-line rendering of a JSON value, clipped."""
    if isinstance(value, str):
        summary = value.startswith("<") and value.endswith(">")  # the engine's "<list of 3 ...>"
        text = value if summary else json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = repr(value)
    return clip(" ".join(text.split()), limit)


def instance_label(stage: str | None, index: int | None, iteration: int | None = None) -> str:
    """``scrape[2]``, with `` it2`` for iterations after the first."""
    label = stage or "pipeline"
    if index is not None:
        label += f"[{index}]"
    if iteration is not None and iteration > 1:
        label += f" it{iteration}"
    return label
