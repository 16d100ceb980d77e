"""Recording provider exchanges as a cassette (``stagecoach run --record``).

:meth:`Recorder.wrap` puts a recording layer around any provider, ``replay`` included
(re-recording a replayed run gives a cassette of exactly what it used). Every exchange is
appended as a cassette entry for the request's stage, iteration and index: answers
with their usage, failures (HTTP status with Retry-After, timeouts) as error entries, so
replaying the cassette reproduces the run, retries included. A request a cassette had no
answer for is not an exchange and is not recorded. Requests are recorded only as
provider and model; credentials never reach the recorder.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from stagecoach.api import (
    Cassette,
    CassetteEntry,
    CassetteError,
    CassetteResponse,
    ProviderSpec,
)
from stagecoach.api.provider import CassetteUsage

from .base import (
    ChatRequest,
    ChatResponse,
    ExchangeError,
    NoCassetteEntry,
    Provider,
    ProviderHTTPError,
    RequestTimedOut,
)

__all__ = ["Recorder", "RecordingProvider"]


class Recorder:
    """Collects entries from every wrapped provider, in the order exchanges finish."""

    def __init__(self, cassette: Cassette | None = None, *, errors: bool = True) -> None:
        self.cassette = cassette or Cassette()
        self.errors = errors

    def wrap(self, provider: Provider) -> RecordingProvider:
        """``provider`` with every exchange recorded here."""
        return RecordingProvider(provider, self)

    def record(self, request: ChatRequest, outcome: ChatResponse | ExchangeError) -> None:
        """Append one entry."""
        common = {
            "stage": request.stage,
            "iteration": request.iteration,
            "index": request.index,
            "request": {"model": request.model},
        }
        if isinstance(outcome, ChatResponse):
            entry = CassetteEntry(
                **common,
                response=CassetteResponse(
                    content=outcome.content,
                    usage=CassetteUsage(input=outcome.input_tokens, output=outcome.output_tokens),
                    model=outcome.model,
                    finish_reason=outcome.finish_reason,
                ),
            )
        elif isinstance(outcome, ProviderHTTPError):
            entry = CassetteEntry(
                **common,
                error=CassetteError(
                    status=outcome.status,
                    retry_after=outcome.retry_after,
                    message=outcome.body[:500] or None,
                ),
            )
        elif isinstance(outcome, RequestTimedOut):
            entry = CassetteEntry(**common, error=CassetteError(timeout=True))
        else:
            entry = CassetteEntry(**common, error=CassetteError(status=503, message=str(outcome)))
        self.cassette.entries.append(entry)

    def to_yaml(self) -> str:
        """The cassette as YAML."""
        return yaml.safe_dump(self.cassette.dump(), sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the cassette file (replacing it)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        os.replace(tmp, p)


class RecordingProvider:
    """A provider whose exchanges are recorded."""

    def __init__(self, inner: Provider, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.name: str = inner.name
        self.spec: ProviderSpec = inner.spec

    async def send(self, request: ChatRequest) -> ChatResponse:
        """Send through the wrapped provider and record what happened."""
        try:
            response = await self.inner.send(request)
        except NoCassetteEntry:
            raise
        except ExchangeError as e:
            if self.recorder.errors:
                self.recorder.record(request, e)
            raise
        self.recorder.record(request, response)
        return response
