"""The Anthropic Messages API (``POST /v1/messages``).

The API key goes in ``x-api-key`` with a pinned ``anthropic-version``. Anthropic has no
JSON mode; the runner's prompt already asks for JSON and the answer is validated the
same way as for any provider.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
from stagecoach.api import ProviderSpec

from ._http import post_json
from .base import ChatRequest, ChatResponse, ConnectFailed

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_ANTHROPIC_URL", "AnthropicProvider"]

DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by the API; used when neither stage nor model sets it."""


class AnthropicProvider:
    """``type: anthropic``."""

    def __init__(
        self, name: str, spec: ProviderSpec, client: httpx.AsyncClient, api_key: str | None
    ) -> None:
        self.name = name
        self.spec = spec
        self._client = client
        self._api_key = api_key
        self.url = (spec.base_url or DEFAULT_ANTHROPIC_URL).rstrip("/") + "/messages"

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body (no credentials)."""
        info = self.spec.models.get(request.model)
        max_tokens = request.max_tokens or (info.max_output_tokens if info else None)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        return body

    async def send(self, request: ChatRequest) -> ChatResponse:
        """POST /messages once."""
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        data = await post_json(
            self._client,
            self.url,
            self.body(request),
            headers=headers,
            timeout=self.spec.request.timeout.total_seconds(),
        )
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ConnectFailed(f"{self.url}: no content in the answer")
        text = "".join(
            b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        )
        usage = data.get("usage") or {}
        # Anthropic counts prompt-cache reads and writes apart from input_tokens; all of
        # them are input. Reads are the cached input (writes bill at the input price here).
        read = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        return ChatResponse(
            content=text,
            input_tokens=int(usage.get("input_tokens") or 0) + read + written,
            cached_input_tokens=read,
            output_tokens=int(usage.get("output_tokens") or 0),
            model=data.get("model"),
            finish_reason=data.get("stop_reason"),
            usage_reported=bool(usage),
            raw=data,
        )
