"""Building providers from their specs, with credentials, limits and shared state.

A :class:`ProviderPool` holds what must outlive one attempt: the HTTP client (and its
connection pool), the rate limiters, the cassette players and an optional recorder. A
pod runs one attempt and one pool; the local executor creates one pool per run and
passes it to every :func:`~stagecoach_runner.run_attempt`, so limits and cassette
positions are shared by all stages.

API keys come from ``STAGECOACH_API_KEY_<PROVIDER>`` (the operator injects it from the
provider's Secret; the name upper-cased, ``-`` and ``.`` as ``_``) or else from the
variable the provider's ``apiKeyEnv`` names (local mode). Every key found is registered
with the pool's :class:`~stagecoach_runner.tracing.Redactor`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import TracebackType

import httpx2 as httpx
from stagecoach.api import ProviderSpec

from ..tracing import Redactor
from .anthropic import AnthropicProvider
from .base import Provider
from .limits import LimiterRegistry
from .openai import OpenAIProvider
from .recorder import Recorder
from .replay import CassettePlayer, ReplayProvider

__all__ = ["ProviderPool", "api_key_env_name"]


def api_key_env_name(provider: str) -> str:
    """``STAGECOACH_API_KEY_<PROVIDER>``: the variable the operator sets from the Secret."""
    return "STAGECOACH_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", provider).upper()


class ProviderPool:
    """Providers by name, built on first use.

    >>> async with ProviderPool(transport=httpx.MockTransport(handler)) as pool:  # doctest: +SKIP
    ...     provider = pool.get("openai", spec)
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        players: dict[str, CassettePlayer] | None = None,
        limiters: LimiterRegistry | None = None,
        recorder: Recorder | None = None,
        environ: Mapping[str, str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.players = players if players is not None else {}
        self.limiters = limiters or LimiterRegistry()
        self.recorder = recorder
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir
        self.redactor = Redactor()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._providers: dict[str, Provider] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared HTTP client (created lazily)."""
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport)
        return self._client

    def api_key(self, name: str, spec: ProviderSpec) -> str | None:
        """The provider's API key from the environment, if any (registered as a secret)."""
        key = self.environ.get(api_key_env_name(name))
        if not key and spec.api_key_env:
            key = self.environ.get(spec.api_key_env)
        self.redactor.add(key)
        return key or None

    def player(self, name: str, spec: ProviderSpec) -> CassettePlayer:
        """The replay provider's player, loaded from ``cassette.path`` on first use."""
        if name not in self.players:
            if spec.cassette is None or not spec.cassette.path:
                raise ValueError(
                    f"replay provider {name!r} has no cassette path and no player was given"
                )
            self.players[name] = CassettePlayer.from_path(spec.cassette.path, self.base_dir)
        return self.players[name]

    def get(self, name: str, spec: ProviderSpec) -> Provider:
        """The provider called ``name`` (recording if the pool has a recorder, whatever its
        type: a replayed answer is recorded like a live one)."""
        if name in self._providers:
            return self._providers[name]
        provider: Provider
        if spec.type == "replay":
            provider = ReplayProvider(name, spec, self.player(name, spec))
        elif spec.type == "anthropic":
            provider = AnthropicProvider(name, spec, self.client, self.api_key(name, spec))
        else:
            provider = OpenAIProvider(name, spec, self.client, self.api_key(name, spec))
        if self.recorder is not None:  # replay too: the new cassette replays the same run
            provider = self.recorder.wrap(provider)
        self._providers[name] = provider
        return provider

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
