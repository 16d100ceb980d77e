"""An OpenAI-compatible chat-completions server that answers after a fixed delay.

Used by the benchmarks so Stagecoach and its peers do the same HTTP work against the
same latency: ``python bench/fake_llm.py PORT DELAY_MS``. Answers ``{"ok": true}`` (valid
JSON for JSON stages) with fixed token usage. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

ANSWER = {
    "id": "bench",
    "object": "chat.completion",
    "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": '{"ok": true}'}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
}


def app(delay: float) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        return web.json_response(ANSWER)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench"}]})

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_get("/v1/models", models)
    return application


if __name__ == "__main__":
    port, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    web.run_app(app(delay_ms / 1000), host="127.0.0.1", port=port, print=None,
                access_log=None)
