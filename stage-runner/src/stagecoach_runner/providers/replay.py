"""The ``replay`` provider: answers from a cassette of recorded exchanges (DESIGN §3).

A :class:`CassettePlayer` owns a cassette and which of its entries are used. Each request
consumes the first unused entry for its stage whose ``iteration``/``index`` (when given)
match. Error entries raise the same exchange errors a real endpoint would (429 with
Retry-After, 5xx, timeout), so the retry and fallback logic is exercised unchanged. The
local executor keeps one player per replay provider for the whole run, so a retried
attempt continues where the previous one stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import ValidationError
from stagecoach.api import Cassette, CassetteEntry, ProviderSpec
from stagecoach.store import NotFound, Store, replay_key

from .base import (
    ChatRequest,
    ChatResponse,
    NoCassetteEntry,
    ProviderHTTPError,
    RequestTimedOut,
)

__all__ = [
    "CassetteLoadError",
    "CassettePlayer",
    "ReplayProvider",
    "restore_positions",
    "save_positions",
]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""LibYAML's parser where it is installed (a 500-entry cassette: milliseconds, not a second)."""


class CassetteLoadError(ValueError):
    """The cassette file is missing or not a valid cassette."""


class CassettePlayer:
    """A cassette and its consumption state.

    >>> player = CassettePlayer.from_path("cassette.yaml")   # doctest: +SKIP
    >>> player.take("research", iteration=1, index=None)      # doctest: +SKIP
    """

    def __init__(self, cassette: Cassette, source: str = "<cassette>") -> None:
        self.cassette = cassette
        self.source = source
        self.used: list[bool] = [False] * len(cassette.entries)
        self.taken: list[int] = []
        """Indices consumed through this object, in order (what :func:`save_positions` keeps)."""

    @classmethod
    def from_bytes(cls, data: bytes | str, source: str = "<cassette>") -> CassettePlayer:
        """Parse YAML (or JSON) cassette text, e.g. a ConfigMap's ``cassette.yaml``."""
        try:
            doc = yaml.load(data, Loader=_LOADER)  # LibYAML's parser where available
            return cls(Cassette.model_validate(doc or {}), source)
        except yaml.YAMLError as e:
            raise CassetteLoadError(f"{source}: not YAML: {e}") from None
        except ValidationError as e:
            raise CassetteLoadError(f"{source}: not a cassette: {e}") from None

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None
    ) -> CassettePlayer:
        """Load a cassette file; a relative path resolves against ``base_dir``."""
        p = Path(path)
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        try:
            data = p.read_bytes()
        except OSError as e:
            raise CassetteLoadError(f"cannot read cassette {p}: {e.strerror}") from None
        return cls.from_bytes(data, str(p))

    @staticmethod
    def matches(entry: CassetteEntry, stage: str, iteration: int, index: int | None) -> bool:
        """Does ``entry`` answer a request of this stage instance?"""
        return (
            entry.stage == stage
            and (entry.iteration is None or entry.iteration == iteration)
            and (entry.index is None or entry.index == index)
        )

    def take(self, stage: str, iteration: int, index: int | None) -> CassetteEntry:
        """Consume the first unused matching entry; :class:`NoCassetteEntry` when none."""
        for i, entry in enumerate(self.cassette.entries):
            if not self.used[i] and self.matches(entry, stage, iteration, index):
                self.used[i] = True
                self.taken.append(i)
                return entry
        where = f"stage {stage!r}, iteration {iteration}" + (
            f", index {index}" if index is not None else ""
        )
        raise NoCassetteEntry(f"no unused cassette entry in {self.source} for {where}")

    def mark_used(self, indices: list[int]) -> None:
        """Mark entries consumed elsewhere (by earlier attempts in other processes)."""
        for i in indices:
            if 0 <= i < len(self.used):
                self.used[i] = True

    @property
    def remaining(self) -> list[CassetteEntry]:
        """Entries not consumed yet."""
        return [e for e, used in zip(self.cassette.entries, self.used, strict=True) if not used]


class ReplayProvider:
    """``type: replay``: one cassette entry per exchange."""

    def __init__(self, name: str, spec: ProviderSpec, player: CassettePlayer) -> None:
        self.name = name
        self.spec = spec
        self.player = player

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Consume the next matching entry."""
        entry = self.player.take(request.stage, request.iteration, request.index)
        if entry.error is not None:
            err = entry.error
            if err.timeout:
                raise RequestTimedOut("replayed timeout")
            assert err.status is not None  # guaranteed by CassetteError's validator
            raise ProviderHTTPError(err.status, err.message or "", err.retry_after)
        assert entry.response is not None  # exactly one of response/error
        r = entry.response
        return ChatResponse(
            content=r.content,
            input_tokens=r.usage.input,
            output_tokens=r.usage.output,
            model=r.model or request.model,
            finish_reason=r.finish_reason,
        )


async def restore_positions(player: CassettePlayer, store: Store, provider: str) -> None:
    """Mark the entries earlier attempts (other processes, e.g. pods) consumed.

    Each attempt records what it consumed under its own key (:func:`save_positions`), so
    a retried attempt in a new pod continues the cassette where the last one stopped.
    """
    prefix = replay_key(provider, "")
    for key in await store.list(prefix):
        try:
            doc = json.loads(await store.get(key))
        except (NotFound, json.JSONDecodeError):
            continue
        player.mark_used([int(i) for i in doc.get("used", [])])


async def save_positions(
    player: CassettePlayer, store: Store, provider: str, writer_id: str
) -> None:
    """Record the entries this process consumed (nothing when it consumed none)."""
    if player.taken:
        data = json.dumps({"used": player.taken}).encode()
        await store.put(replay_key(provider, writer_id), data)
