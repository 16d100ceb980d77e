"""The ``llm_server`` fixture: a scripted HTTP model server on 127.0.0.1, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from llm_server import LLMServer  # type: ignore[import-not-found]


@pytest.fixture
async def llm_server() -> AsyncIterator[LLMServer]:
    server = LLMServer()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
