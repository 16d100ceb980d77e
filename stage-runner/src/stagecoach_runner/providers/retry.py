"""HTTP-level retries inside one attempt, and mapping the last failure to an error class.

429 and 5xx (and timeouts, connect errors) are retried up to ``request.retries`` times:
``Retry-After`` is honoured when the provider sends it, otherwise exponential backoff
with jitter. Each retry is reported through ``on_retry`` (the runner turns it into a
``ProviderRetry`` trace event) before sleeping on the injected clock. When retries run
out: 429 → ``RateLimited``, timeout → ``Timeout``, anything else → ``ProviderUnavailable``;
other 4xx fail at once with ``Error``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..clock import Clock
from ..errors import AttemptError
from .base import (
    ChatRequest,
    ChatResponse,
    ConnectFailed,
    ExchangeError,
    NoCassetteEntry,
    Provider,
    ProviderHTTPError,
    RequestTimedOut,
)
from .limits import ProviderLimiter

__all__ = ["Backoff", "OnRetry", "classify", "complete"]

OnRetry = Callable[[str | int, float], Awaitable[None]]
"""Called before each retry with the status (or ``timeout``/``connect``) and delay (s)."""


@dataclass(frozen=True)
class Backoff:
    """Delay before HTTP retry ``n`` (from 1): ``initial * 2^(n-1)``, capped, ± jitter."""

    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2
    max_retry_after: float = 300.0
    """A Retry-After longer than this is not waited for: the attempt fails at once."""

    def delay(self, n: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry ``n``."""
        if retry_after is not None:
            return max(0.0, retry_after)
        base = min(self.cap, self.initial * 2.0 ** (n - 1))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


def classify(provider: str, error: ExchangeError, tries: int) -> AttemptError:
    """The attempt error for a provider's last failed exchange."""
    after = f" after {tries} tries" if tries > 1 else ""
    if isinstance(error, ProviderHTTPError):
        body = f": {error.body[:300]}" if error.body else ""
        if error.status == 429:
            return AttemptError("RateLimited", f"provider {provider}: HTTP 429{after}{body}")
        if error.retryable:
            return AttemptError(
                "ProviderUnavailable", f"provider {provider}: HTTP {error.status}{after}{body}"
            )
        return AttemptError("Error", f"provider {provider}: HTTP {error.status}{body}")
    if isinstance(error, RequestTimedOut):
        return AttemptError("Timeout", f"provider {provider}: request timed out{after}")
    if isinstance(error, NoCassetteEntry):
        return AttemptError("ProviderUnavailable", f"provider {provider}: {error}")
    kind = "unreachable" if isinstance(error, ConnectFailed) else "failed"
    return AttemptError("ProviderUnavailable", f"provider {provider} {kind}{after}: {error}")


def _status(error: ExchangeError) -> str | int:
    if isinstance(error, ProviderHTTPError):
        return error.status
    if isinstance(error, RequestTimedOut):
        return "timeout"
    return "connect"


async def complete(
    provider: Provider,
    request: ChatRequest,
    *,
    clock: Clock,
    limiter: ProviderLimiter | None = None,
    on_retry: OnRetry | None = None,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    estimated_tokens: int = 0,
) -> ChatResponse:
    """Send ``request`` with retries; raises :class:`AttemptError` when it cannot succeed."""
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    retries = provider.spec.request.retries
    tries = 0
    while True:
        if limiter is not None:
            await limiter.acquire(estimated_tokens)
        tries += 1
        try:
            return await provider.send(request)
        except ExchangeError as e:
            error = e
        retry_after = error.retry_after if isinstance(error, ProviderHTTPError) else None
        if not error.retryable or tries > retries:
            raise classify(provider.name, error, tries)
        if retry_after is not None and retry_after > backoff.max_retry_after:
            raise classify(provider.name, error, tries)
        delay = backoff.delay(tries, retry_after, rng)
        if on_retry is not None:
            await on_retry(_status(error), delay)
        await clock.sleep(delay)
