"""Key layout shared by every store backend (DESIGN §5).

``outputs/<stage>/<iteration>.json`` holds a stage's output for an iteration,
``outputs/<stage>/<iteration>-<index>.json`` one forEach instance's, and
``trace/<writer>.jsonl`` each writer's trace record, and
``replay/<provider>/<writer>.json`` which cassette entries a writer's attempt consumed
(so replay continues across pods). The local run directory uses the
keys as relative paths, so the layout is what a user sees on disk. No side effects.
"""

from __future__ import annotations

import re

__all__ = [
    "CACHE",
    "OUTPUTS",
    "REPLAY",
    "TRACE",
    "output_key",
    "parse_output_key",
    "replay_key",
    "trace_key",
]

OUTPUTS = "outputs/"
TRACE = "trace/"
REPLAY = "replay/"
CACHE = "cache/"
"""Stage-cache entries (:mod:`.cache`), in a store of their own, never a run's."""

_WRITER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_OUTPUT = re.compile(r"^outputs/([a-z0-9-]+)/(\d+)(?:-(\d+))?\.json$")


def output_key(stage: str, iteration: int, index: int | None = None) -> str:
    """``outputs/<stage>/<iteration>[-<index>].json``."""
    if iteration < 1:
        raise ValueError(f"iterations count from 1, got {iteration}")
    suffix = "" if index is None else f"-{index}"
    return f"{OUTPUTS}{stage}/{iteration}{suffix}.json"


def parse_output_key(key: str) -> tuple[str, int, int | None]:
    """Inverse of :func:`output_key`: ``(stage, iteration, index)``."""
    m = _OUTPUT.match(key)
    if not m:
        raise ValueError(f"not an output key: {key!r}")
    return m.group(1), int(m.group(2)), None if m.group(3) is None else int(m.group(3))


def trace_key(writer_id: str) -> str:
    """``trace/<writer>.jsonl``; writer ids are file-name safe."""
    if not _WRITER.match(writer_id):
        raise ValueError(f"invalid trace writer id {writer_id!r}: use letters, digits, . _ -")
    return f"{TRACE}{writer_id}.jsonl"


def replay_key(provider: str, writer_id: str) -> str:
    """``replay/<provider>/<writer>.json``; with an empty writer, the provider's prefix."""
    if not _WRITER.match(provider):
        raise ValueError(f"invalid provider name {provider!r}")
    if not writer_id:
        return f"{REPLAY}{provider}/"
    if not _WRITER.match(writer_id):
        raise ValueError(f"invalid writer id {writer_id!r}: use letters, digits, . _ -")
    return f"{REPLAY}{provider}/{writer_id}.json"
