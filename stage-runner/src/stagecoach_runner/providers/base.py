"""What every provider speaks: one chat request in, one answer or one exchange error out.

A provider's :meth:`Provider.send` performs exactly one exchange (one HTTP request, or
one cassette entry) and raises an :class:`ExchangeError` for a failed one. Retrying,
rate limiting and classification into error classes happen around it, identically for
real and replayed providers (:mod:`.retry`). Requests carry the stage coordinates so a
replay cassette can match them and a recorder can label what it records. No side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stagecoach.api import ProviderSpec

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ConnectFailed",
    "ExchangeError",
    "Message",
    "NoCassetteEntry",
    "Provider",
    "ProviderHTTPError",
    "RequestTimedOut",
]


@dataclass(frozen=True)
class Message:
    """A chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One model call of a stage attempt."""

    model: str
    messages: tuple[Message, ...]
    stage: str
    iteration: int = 1
    index: int | None = None
    attempt: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    json_output: bool = False
    json_schema: dict[str, Any] | None = None

    @property
    def system(self) -> str | None:
        """The system prompt, if any."""
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None


@dataclass(frozen=True)
class ChatResponse:
    """A model's answer and the tokens the provider reported for it."""

    content: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """Of the input tokens, those the provider served from its prompt cache (billed at
    the model's ``cachedInput`` price)."""
    model: str | None = None
    finish_reason: str | None = None
    usage_reported: bool = True
    """False when the provider sent no usage and the counts are local estimates."""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class ExchangeError(Exception):
    """One exchange with a provider failed."""

    retryable: bool = True


class ProviderHTTPError(ExchangeError):
    """The provider answered with an HTTP error status."""

    def __init__(self, status: int, body: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}" + (f": {body}" if body else ""))
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.retryable = status in (408, 409, 429) or status >= 500


class RequestTimedOut(ExchangeError):
    """No answer within the provider's ``request.timeout``."""


class ConnectFailed(ExchangeError):
    """The provider could not be reached, or its answer was unreadable."""


class NoCassetteEntry(ExchangeError):
    """A replay provider has no unused entry for the request (never retried)."""

    retryable = False


class Provider(Protocol):
    """A model endpoint. ``name`` is the ModelProvider's name."""

    name: str
    spec: ProviderSpec

    async def send(self, request: ChatRequest) -> ChatResponse:
        """One exchange; raises :class:`ExchangeError` when it fails."""
        ...
