"""Client-side rate limits: ``requestsPerMinute`` and ``tokensPerMinute`` token buckets.

The operator also admits stages against these limits; inside a runner (or the local
executor, which runs many attempts in one process) every request first takes a request
and its estimated tokens from the provider's buckets. One :class:`LimiterRegistry` is
shared by everything in a process that calls the same provider.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter
from stagecoach.api import ProviderLimits

__all__ = ["LimiterRegistry", "ProviderLimiter"]


class ProviderLimiter:
    """The buckets of one provider; either may be absent."""

    def __init__(self, limits: ProviderLimits) -> None:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.requests = AsyncLimiter(rpm, 60) if rpm else None
        self.tokens = AsyncLimiter(tpm, 60) if tpm else None

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request and ``tokens`` tokens (capped at the bucket) are free."""
        if self.requests is not None:
            await self.requests.acquire()
        if self.tokens is not None and tokens > 0:
            await self.tokens.acquire(min(float(tokens), self.tokens.max_rate))


class LimiterRegistry:
    """Limiters keyed by provider name, created on first use."""

    def __init__(self) -> None:
        self._limiters: dict[str, ProviderLimiter] = {}

    def get(self, provider: str, limits: ProviderLimits) -> ProviderLimiter | None:
        """The provider's limiter, or None when it has no per-minute limits."""
        if not (limits.requests_per_minute or limits.tokens_per_minute):
            return None
        if provider not in self._limiters:
            self._limiters[provider] = ProviderLimiter(limits)
        return self._limiters[provider]
