"""Model providers for agent stages: OpenAI-compatible, Anthropic, replay (DESIGN §3).

:class:`ProviderPool` builds them from :class:`~stagecoach.api.ProviderSpec`;
:func:`complete` sends a request with HTTP retries and rate limits and maps the last
failure to an error class; :class:`CassettePlayer`, :class:`ReplayProvider` and
:class:`Recorder` replay and record cassettes.
"""

from .anthropic import AnthropicProvider
from .base import (
    ChatRequest,
    ChatResponse,
    ConnectFailed,
    ExchangeError,
    Message,
    NoCassetteEntry,
    Provider,
    ProviderHTTPError,
    RequestTimedOut,
)
from .limits import LimiterRegistry, ProviderLimiter
from .openai import OpenAIProvider
from .pool import ProviderPool, api_key_env_name
from .recorder import Recorder, RecordingProvider
from .replay import (
    CassetteLoadError,
    CassettePlayer,
    ReplayProvider,
    restore_positions,
    save_positions,
)
from .retry import Backoff, classify, complete

__all__ = [
    "AnthropicProvider",
    "Backoff",
    "CassetteLoadError",
    "CassettePlayer",
    "ChatRequest",
    "ChatResponse",
    "ConnectFailed",
    "ExchangeError",
    "LimiterRegistry",
    "Message",
    "NoCassetteEntry",
    "OpenAIProvider",
    "Provider",
    "ProviderHTTPError",
    "ProviderLimiter",
    "ProviderPool",
    "Recorder",
    "RecordingProvider",
    "ReplayProvider",
    "RequestTimedOut",
    "api_key_env_name",
    "classify",
    "complete",
    "restore_positions",
    "save_positions",
]
