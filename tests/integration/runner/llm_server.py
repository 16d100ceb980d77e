"""A scripted OpenAI/Anthropic-compatible HTTP server on 127.0.0.1 (aiohttp) for tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted answer: a status and JSON body (or raw text), after an optional delay."""

    status: int = 200
    body: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def chat(content: str, prompt_tokens: int = 12, completion_tokens: int = 6) -> Reply:
    """An OpenAI chat completion."""
    return Reply(
        body={
            "id": "x",
            "model": "tiny",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }
    )


class LLMServer:
    """Answers POSTs from per-route scripts (route = first path segment)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.url = ""

    def script(self, route: str, *replies: Reply) -> str:
        """Queue replies for ``/<route>/...``; returns the route's base URL."""
        self.scripts.setdefault(route, []).extend(replies)
        return f"{self.url}/{route}/v1"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = request.path.strip("/").split("/")[0]
        self.requests.append((request.path, dict(request.headers), await request.json()))
        queue = self.scripts.get(route) or []
        if not queue:
            return web.json_response({"error": "script exhausted"}, status=599)
        reply = queue.pop(0)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.text is not None:
            return web.Response(status=reply.status, text=reply.text, headers=reply.headers)
        return web.Response(
            status=reply.status,
            text=json.dumps(reply.body if reply.body is not None else {"error": "x"}),
            content_type="application/json",
            headers=reply.headers,
        )
