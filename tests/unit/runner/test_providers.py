"""Providers over httpx.MockTransport: wire format, retries, classification, limits, keys."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import httpx2 as httpx
import pytest
from stagecoach.api import ProviderSpec
from stagecoach_runner import AttemptError, FakeClock
from stagecoach_runner.providers import (
    Backoff,
    ChatRequest,
    LimiterRegistry,
    Message,
    ProviderPool,
    api_key_env_name,
    complete,
)
from stagecoach_runner.providers._http import parse_retry_after

REQ = ChatRequest(
    model="m",
    messages=(Message("system", "be brief"), Message("user", "hi")),
    stage="s",
    temperature=0.2,
    max_tokens=50,
)


def _openai_answer(content: str = "hello", usage: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": "m-2024",
        "choices": [
            {"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }
    if usage:
        doc["usage"] = {"prompt_tokens": 11, "completion_tokens": 7}
    return doc


class Script:
    """A MockTransport handler answering from a list; records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, n: int = 0) -> dict[str, Any]:
        return json.loads(self.requests[n].content)  # type: ignore[no-any-return]


def _spec(**kw: Any) -> ProviderSpec:
    doc = {"type": "openai", "baseURL": "http://llm.test/v1", "apiKeyEnv": "MY_KEY", **kw}
    return ProviderSpec.model_validate(doc)


async def test_openai_wire_format_and_usage() -> None:
    script = Script(httpx.Response(200, json=_openai_answer()))
    async with ProviderPool(
        transport=httpx.MockTransport(script), environ={"MY_KEY": "sk-123"}
    ) as pool:
        provider = pool.get("main", _spec())
        out = await complete(provider, REQ, clock=FakeClock())
    assert (out.content, out.input_tokens, out.output_tokens) == ("hello", 11, 7)
    assert out.model == "m-2024" and out.finish_reason == "stop"
    req = script.requests[0]
    assert str(req.url) == "http://llm.test/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-123"
    assert script.body() == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 50,
    }


async def test_openai_json_modes() -> None:
    script = Script(*(httpx.Response(200, json=_openai_answer("{}")) for _ in range(2)))
    async with ProviderPool(transport=httpx.MockTransport(script), environ={}) as pool:
        provider = pool.get("main", _spec())
        await complete(provider, replace(REQ, json_output=True), clock=FakeClock())
        schema = {"type": "object"}
        await complete(
            provider, replace(REQ, json_output=True, json_schema=schema), clock=FakeClock()
        )
    assert script.body(0)["response_format"] == {"type": "json_object"}
    assert script.body(1)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    assert "authorization" not in script.requests[0].headers


async def test_anthropic_wire_format() -> None:
    answer = {
        "model": "claude-x",
        "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
        "usage": {"input_tokens": 3, "output_tokens": 2},
        "stop_reason": "end_turn",
    }
    script = Script(httpx.Response(200, json=answer))
    spec = ProviderSpec(type="anthropic", api_key_env="AK")
    async with ProviderPool(
        transport=httpx.MockTransport(script), environ={"AK": "ant-key"}
    ) as pool:
        out = await complete(pool.get("claude", spec), REQ, clock=FakeClock())
    assert (out.content, out.input_tokens, out.output_tokens) == ("hi there", 3, 2)
    req = script.requests[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "ant-key"
    assert req.headers["anthropic-version"] == "2023-06-01"
    body = script.body()
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 50


async def test_retry_after_is_honoured_and_reported() -> None:
    script = Script(
        httpx.Response(429, headers={"retry-after": "3"}, text="slow down"),
        httpx.Response(503),
        httpx.Response(200, json=_openai_answer()),
    )
    retries: list[tuple[Any, float]] = []

    async def on_retry(status: str | int, delay: float) -> None:
        retries.append((status, delay))

    clock = FakeClock()
    async with ProviderPool(transport=httpx.MockTransport(script), environ={}) as pool:
        out = await complete(
            pool.get("main", _spec()),
            REQ,
            clock=clock,
            on_retry=on_retry,
            backoff=Backoff(initial=1, jitter=0),
            rng=random.Random(1),
        )
    assert out.content == "hello"
    assert retries == [(429, 3.0), (503, 2.0)]
    assert clock.sleeps == [3.0, 2.0]


@pytest.mark.parametrize(
    ("answers", "error_class", "needle"),
    [
        ([httpx.Response(429)] * 3, "RateLimited", "HTTP 429 after 3 tries"),
        ([httpx.Response(500)] * 3, "ProviderUnavailable", "HTTP 500"),
        ([httpx.ReadTimeout("slow")] * 3, "Timeout", "timed out"),
        ([httpx.ConnectError("refused")] * 3, "ProviderUnavailable", "unreachable"),
        ([httpx.Response(401, text="bad key")], "Error", "HTTP 401: bad key"),
        ([httpx.Response(200, text="not json")] * 3, "ProviderUnavailable", "not JSON"),
        ([httpx.Response(200, json={"x": 1})] * 3, "ProviderUnavailable", "no choices"),
    ],
)
async def test_failures_are_classified_after_retries(
    answers: list[Any], error_class: str, needle: str
) -> None:
    script = Script(*answers)
    clock = FakeClock()
    async with ProviderPool(transport=httpx.MockTransport(script), environ={}) as pool:
        provider = pool.get("main", _spec(request={"retries": 2, "timeout": "5s"}))
        with pytest.raises(AttemptError) as err:
            await complete(provider, REQ, clock=clock)
    assert err.value.error_class == error_class
    assert needle in err.value.message
    assert len(script.requests) == len(answers)


async def test_huge_retry_after_fails_at_once() -> None:
    script = Script(httpx.Response(429, headers={"retry-after": "3600"}))
    async with ProviderPool(transport=httpx.MockTransport(script), environ={}) as pool:
        with pytest.raises(AttemptError) as err:
            await complete(pool.get("main", _spec()), REQ, clock=FakeClock())
    assert err.value.error_class == "RateLimited"
    assert len(script.requests) == 1


def test_backoff_and_retry_after_parsing() -> None:
    b = Backoff(initial=1, cap=5, jitter=0.2)
    rng = random.Random(0)
    delays = [b.delay(n, None, rng) for n in range(1, 6)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and delays[4] <= 6.0
    assert b.delay(1, 7, rng) == 7
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_api_key_precedence_and_redaction() -> None:
    assert api_key_env_name("open-ai.eu") == "STAGECOACH_API_KEY_OPEN_AI_EU"
    env = {"STAGECOACH_API_KEY_MAIN": "from-secret", "MY_KEY": "from-local"}
    pool = ProviderPool(environ=env)
    assert pool.api_key("main", _spec()) == "from-secret"
    assert pool.api_key("other", _spec()) == "from-local"
    assert pool.redactor.text("key=from-secret and from-local") == "key=*** and ***"


async def test_limiter_registry() -> None:
    reg = LimiterRegistry()
    spec = _spec(limits={"requestsPerMinute": 60, "tokensPerMinute": 100})
    assert reg.get("none", _spec().limits) is None
    limiter = reg.get("main", spec.limits)
    assert limiter is not None and reg.get("main", spec.limits) is limiter
    await limiter.acquire(10_000)  # capped at the bucket size instead of raising


async def test_json_schema_falls_back_to_json_object_with_schema() -> None:
    """llama-cpp-python rejects response_format json_schema; it takes json_object+schema."""
    rejected = httpx.Response(
        500, text="Input should be 'text' or 'json_object' ('response_format', 'type') json_schema"
    )
    script = Script(
        rejected,
        httpx.Response(200, json=_openai_answer("{}")),
        httpx.Response(200, json=_openai_answer("{}")),
    )
    schema = {"type": "object"}
    req = replace(REQ, json_output=True, json_schema=schema)
    async with ProviderPool(transport=httpx.MockTransport(script), environ={}) as pool:
        provider = pool.get("main", _spec())
        await complete(provider, req, clock=FakeClock())
        await complete(provider, req, clock=FakeClock())
    assert script.body(0)["response_format"]["type"] == "json_schema"
    assert script.body(1)["response_format"] == {"type": "json_object", "schema": schema}
    assert script.body(2)["response_format"] == {"type": "json_object", "schema": schema}


async def test_prompt_cache_tokens_are_read_from_both_wire_formats() -> None:
    openai = _openai_answer()
    openai["usage"] = {"prompt_tokens": 100, "completion_tokens": 5,
                       "prompt_tokens_details": {"cached_tokens": 60}}
    anthropic = {"model": "claude-x", "content": [{"type": "text", "text": "ok"}],
                 "usage": {"input_tokens": 10, "output_tokens": 2,
                           "cache_read_input_tokens": 70, "cache_creation_input_tokens": 20},
                 "stop_reason": "end_turn"}
    script = Script(httpx.Response(200, json=openai), httpx.Response(200, json=anthropic))
    async with ProviderPool(transport=httpx.MockTransport(script),
                            environ={"MY_KEY": "k", "AK": "k"}) as pool:
        a = await complete(pool.get("main", _spec()), REQ, clock=FakeClock())
        b = await complete(pool.get("claude", ProviderSpec(type="anthropic", api_key_env="AK")),
                           REQ, clock=FakeClock())
    assert (a.input_tokens, a.cached_input_tokens, a.output_tokens) == (100, 60, 5)
    # Anthropic counts cache reads and writes apart from input_tokens: all are input
    assert (b.input_tokens, b.cached_input_tokens, b.output_tokens) == (100, 70, 2)
