"""Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp, Ollama).

JSON output uses ``response_format``: ``json_schema`` when the stage has a schema,
``json_object`` otherwise. Some compatible servers (llama-cpp-python) know only
``json_object`` and take the schema beside it (``{"type": "json_object", "schema": ...}``):
when a server rejects ``json_schema`` with an error that names ``response_format``, the
provider switches to that form for the rest of the process and resends at once. Usage
comes from the answer's ``usage``; when an endpoint omits it the runner estimates the
counts and marks them so.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
from stagecoach.api import ProviderSpec

from ._http import post_json
from .base import ChatRequest, ChatResponse, ConnectFailed, ProviderHTTPError

__all__ = ["DEFAULT_OPENAI_URL", "OpenAIProvider"]

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


class OpenAIProvider:
    """``type: openai``."""

    def __init__(
        self, name: str, spec: ProviderSpec, client: httpx.AsyncClient, api_key: str | None
    ) -> None:
        self.name = name
        self.spec = spec
        self._client = client
        self._api_key = api_key
        self.url = (spec.base_url or DEFAULT_OPENAI_URL).rstrip("/") + "/chat/completions"
        self.schema_in_json_object = False
        """True once the server rejected ``json_schema``: send the schema with json_object."""

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body (no credentials)."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.json_schema is not None and self.schema_in_json_object:
            body["response_format"] = {"type": "json_object", "schema": request.json_schema}
        elif request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema},
            }
        elif request.json_output:
            body["response_format"] = {"type": "json_object"}
        return body

    def _rejects_json_schema(self, request: ChatRequest, error: ProviderHTTPError) -> bool:
        return (
            request.json_schema is not None
            and not self.schema_in_json_object
            and error.status in (400, 422, 500)
            and "response_format" in error.body
            and "json_schema" in error.body
        )

    async def send(self, request: ChatRequest) -> ChatResponse:
        """POST /chat/completions once."""
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        timeout = self.spec.request.timeout.total_seconds()
        try:
            data = await post_json(
                self._client, self.url, self.body(request), headers=headers, timeout=timeout
            )
        except ProviderHTTPError as e:
            if not self._rejects_json_schema(request, e):
                raise
            self.schema_in_json_object = True
            data = await post_json(
                self._client, self.url, self.body(request), headers=headers, timeout=timeout
            )
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ConnectFailed(f"{self.url}: no choices[0].message in the answer") from None
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return ChatResponse(
            content=content,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_input_tokens=int(cached or 0),
            model=data.get("model"),
            finish_reason=choice.get("finish_reason"),
            usage_reported=bool(usage),
            raw=data,
        )
