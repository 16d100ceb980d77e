"""run_attempt for agent stages, end to end over MockTransport and replay cassettes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
from stagecoach.api import AttemptSpec
from stagecoach.store import LocalStore, decode_output, encode_output
from stagecoach_runner import CassettePlayer, FakeClock, ProviderPool, TraceWriter, run_attempt

MakeSpec = Callable[..., AttemptSpec]


def _answer(content: str, pt: int = 10, ct: int = 5) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "model": "m",
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct},
        },
    )


class Server:
    """MockTransport handler: per-host scripted answers; records request bodies."""

    def __init__(self, **hosts: list[httpx.Response]) -> None:
        self.hosts = {h.replace("_", "."): list(a) for h, a in hosts.items()}
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.bodies.append((host, json.loads(request.content)))
        return self.hosts[host].pop(0)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def _types(store_events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in store_events]


async def test_json_output_with_upstream_and_params(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    await store.put("outputs/research/1.json", encode_output({"sources": ["a", "b"]}, "json"))
    for i, v in enumerate(["x", "y"]):
        await store.put(f"outputs/scrape/1-{i}.json", encode_output(v, "text"))
    server = Server(main_test=[_answer('```json\n{"ok": true}\n```')])
    spec = make_spec(
        agent={
            "system": "You are {{ params.role }}.",
            "prompt": "Sources {{ stages.research.output.sources | join(',') }} "
            "scraped {{ stages.scrape.output | tojson }} loop {{ loop.iteration }}",
            "output": {"format": "json", "schema": {"type": "object", "required": ["ok"]}},
        },
        params={"role": "careful"},
        iteration=2,
        loop={"iteration": 2, "from": "verify"},
        upstream={
            "research": {"phase": "Succeeded", "outputRef": "outputs/research/1.json"},
            "scrape": {
                "phase": "Succeeded",
                "instanceRefs": ["outputs/scrape/1-0.json", "outputs/scrape/1-1.json"],
            },
        },
    )
    result = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert result.ok, result.message
    assert result.output_ref == "outputs/s/2.json"
    assert (result.tokens.input, result.tokens.output) == (10, 5)
    assert (result.provider, result.model) == ("main", "m")
    assert decode_output(await store.get("outputs/s/2.json")).value == {"ok": True}
    # The stored bytes also travel inline (the operator needs no read of its own).
    assert result.output is not None
    assert result.output.encode() == await store.get("outputs/s/2.json")
    body = server.bodies[0][1]
    assert body["messages"][0]["content"].startswith(
        "You are careful.\n\nRespond with a single JSON"
    )
    assert body["messages"][1]["content"] == 'Sources a,b scraped ["x", "y"] loop 2'
    assert body["response_format"]["type"] == "json_schema"
    events = await store.read_trace()
    assert _types(events) == ["InputSnapshot", "OutputSnapshot"]
    assert events[0]["stage"] == "s" and events[0]["iteration"] == 2 and events[0]["index"] is None
    assert events[0]["pipeline"] == "p" and events[0]["uid"] == "u"


async def test_malformed_output_counts_tokens_and_names_the_problem(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    server = Server(main_test=[_answer('{"ok": "yes"}', 40, 9), _answer("not json", 40, 3)])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    spec = make_spec(agent={"output": {"format": "json", "schema": schema}})
    result = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert result.error_class == "MalformedOutput"
    assert "$.ok: expected boolean, got string" in (result.message or "")
    assert (result.tokens.input, result.tokens.output) == (40, 9)
    assert result.exit_code == 4

    retry = make_spec(
        agent={"output": {"format": "json"}}, attempt=2, previous_error=result.message
    )
    result2 = await run_attempt(retry, store, transport=server.transport, clock=clock)
    assert result2.error_class == "MalformedOutput" and "not valid JSON" in (result2.message or "")
    assert (
        "Your previous answer was rejected: the answer does not match"
        in (server.bodies[1][1]["messages"][1]["content"])
    )


async def test_text_output_and_missing_usage_is_estimated(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    answer = httpx.Response(200, json={"choices": [{"message": {"content": "hello world"}}]})
    result = await run_attempt(
        make_spec(), store, transport=Server(main_test=[answer]).transport, clock=clock
    )
    assert result.ok
    assert result.tokens.output == 2 and result.tokens.input > 0
    stored = decode_output(await store.get("outputs/s/1.json"))
    assert (stored.value, stored.format) == ("hello world", "text")


async def test_context_overflow_fail_and_truncate(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    await store.put("outputs/big/1.json", encode_output("word " * 3000, "text"))
    providers = {
        "main": {
            "type": "openai",
            "baseURL": "http://main.test/v1",
            "models": {"m": {"contextWindow": 1000}},
        }
    }
    upstream = {"big": {"phase": "Succeeded", "outputRef": "outputs/big/1.json"}}
    agent = {"prompt": "Summarise {{ stages.big.output }}", "maxTokens": 200}
    spec = make_spec(agent=agent, providers=providers, upstream=upstream)
    server = Server(main_test=[_answer("short")])
    failed = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert failed.error_class == "ContextOverflow" and "800 input tokens" in (failed.message or "")
    assert not server.bodies, "nothing was sent"

    spec = make_spec(
        agent={**agent, "context": {"overflow": "truncate"}},
        providers=providers,
        upstream=upstream,
        attempt=2,
    )
    ok = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert ok.ok, ok.message
    sent = server.bodies[0][1]["messages"][0]["content"]
    assert sent.endswith("[truncated]") and len(sent) < 4000
    events = [e for e in await store.read_trace() if e["attempt"] == 2]
    assert _types(events) == ["ContextTruncated", "InputSnapshot", "OutputSnapshot"]
    assert events[0]["data"]["input"] == "stages.big.output"
    assert events[0]["data"]["tokensBefore"] >= 3000 and events[0]["data"]["tokensAfter"] < 800


async def test_fallback_to_second_provider(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    providers = {
        "main": {"type": "openai", "baseURL": "http://main.test/v1", "request": {"retries": 1}},
        "backup": {"type": "openai", "baseURL": "http://backup.test/v1"},
    }
    server = Server(
        main_test=[httpx.Response(503), httpx.Response(503)],
        backup_test=[_answer("from backup", 7, 2)],
    )
    spec = make_spec(
        agent={"fallbacks": [{"provider": "backup", "model": "small"}]}, providers=providers
    )
    result = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert result.ok, result.message
    assert (result.provider, result.model) == ("backup", "m")
    assert server.bodies[-1] == ("backup.test", server.bodies[-1][1])
    assert server.bodies[-1][1]["model"] == "small"
    events = await store.read_trace()
    assert _types(events) == ["InputSnapshot", "ProviderRetry", "InputSnapshot", "OutputSnapshot"]
    assert events[1]["data"]["status"] == 503
    assert events[2]["data"]["fallback"] is True


async def test_fallbacks_exhausted_reports_all(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    providers = {
        "main": {"type": "openai", "baseURL": "http://main.test/v1", "request": {"retries": 0}},
        "backup": {"type": "openai", "baseURL": "http://backup.test/v1", "request": {"retries": 0}},
    }
    server = Server(main_test=[httpx.Response(500)], backup_test=[httpx.Response(429)])
    spec = make_spec(agent={"fallbacks": [{"provider": "backup"}]}, providers=providers)
    result = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert result.error_class == "RateLimited"
    assert "provider main: HTTP 500" in (result.message or "")
    assert "provider backup: HTTP 429" in (result.message or "")


async def test_invalid_input_cases(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    r = await run_attempt(make_spec(agent={"prompt": "{{ params.topic }}"}), store, clock=clock)
    assert r.error_class == "InvalidInput" and "topic" in (r.message or "")
    r = await run_attempt(make_spec(agent={"provider": "ghost"}), store, clock=clock)
    assert r.error_class == "InvalidInput" and "ghost" in (r.message or "")
    r = await run_attempt(
        make_spec(
            agent={"prompt": "{{ stages.x.output }}"},
            upstream={"x": {"phase": "Succeeded", "outputRef": "outputs/x/1.json"}},
        ),
        store,
        clock=clock,
    )
    assert r.error_class == "Error" and "missing from the store" in (r.message or "")
    # an output the templates never read is not loaded at all
    r = await run_attempt(
        make_spec(upstream={"x": {"phase": "Succeeded", "outputRef": "outputs/x/1.json"}}),
        store,
        clock=clock,
    )
    assert r.error_class != "Error" or "missing from the store" not in (r.message or "")


async def test_secrets_never_reach_trace_or_result(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    server = Server(main_test=[httpx.Response(401, text="invalid key sk-secret-123")])
    providers = {"main": {"type": "openai", "baseURL": "http://main.test/v1", "apiKeyEnv": "K"}}
    spec = make_spec(
        providers=providers, agent={"prompt": "key {{ params.k }}"}, params={"k": "sk-secret-123"}
    )
    result = await run_attempt(
        spec, store, transport=server.transport, clock=clock, environ={"K": "sk-secret-123"}
    )
    assert result.error_class == "Error"
    assert "sk-secret-123" not in result.to_termination_message()
    raw = b"".join([await store.get(k) for k in await store.list("trace/")])
    assert b"sk-secret-123" not in raw and b"***" in raw


async def test_shared_pool_keeps_cassette_position_across_attempts(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text(
        "entries:\n"
        "- {stage: s, error: {status: 429}}\n"
        "- {stage: s, response: {content: done, usage: {input: 1, output: 1}}}\n"
    )
    providers = {
        "main": {"type": "replay", "cassette": {"path": "c.yaml"}, "request": {"retries": 0}}
    }
    players: dict[str, CassettePlayer] = {}
    async with ProviderPool(players=players, base_dir=tmp_path) as pool:
        first = await run_attempt(make_spec(providers=providers), store, clock=clock, pool=pool)
        second = await run_attempt(
            make_spec(providers=providers, attempt=2), store, clock=clock, pool=pool
        )
    assert first.error_class == "RateLimited"
    assert second.ok and second.tokens.input == 1
    assert players["main"].remaining == []


async def test_attempt_timeout(make_spec: MakeSpec, store: LocalStore) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return _answer("late")

    spec = make_spec()
    spec.stage.timeout = timedelta(milliseconds=50)
    result = await run_attempt(spec, store, transport=httpx.MockTransport(slow))
    assert result.error_class == "Timeout" and "exceeded its timeout of 50ms" in (
        result.message or ""
    )


async def test_custom_trace_writer(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    writer = TraceWriter(store, make_spec(), clock, writer_id="executor-inline")
    server = Server(main_test=[_answer("x")])
    await run_attempt(
        make_spec(), store, transport=server.transport, clock=clock, trace_writer=writer
    )
    assert await store.list("trace/") == ["trace/executor-inline.jsonl"]
    assert _types(writer.events) == ["InputSnapshot", "OutputSnapshot"]


async def test_private_pools_continue_the_cassette_through_the_store(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock, tmp_path: Path
) -> None:
    """Pods: each attempt has its own pool; consumed entries are recorded in the store."""
    (tmp_path / "c.yaml").write_text(
        "entries:\n- {stage: s, error: {status: 500}}\n- {stage: s, response: {content: second}}\n"
    )
    providers = {
        "main": {"type": "replay", "cassette": {"path": "c.yaml"}, "request": {"retries": 0}}
    }
    first = await run_attempt(make_spec(providers=providers), store, clock=clock)
    assert first.error_class == "ProviderUnavailable"
    assert await store.list("replay/") == ["replay/main/runner-s-1-1.json"]
    second = await run_attempt(make_spec(providers=providers, attempt=2), store, clock=clock)
    assert second.ok, second.message
    assert decode_output(await store.get("outputs/s/1.json")).value == "second"


async def test_missing_cassette_is_invalid_input(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    providers = {"main": {"type": "replay", "cassette": {"path": "nope.yaml"}}}
    result = await run_attempt(make_spec(providers=providers), store, clock=clock)
    assert result.error_class == "InvalidInput" and "nope.yaml" in (result.message or "")


async def test_output_too_large(make_spec: MakeSpec, tmp_path: Path, clock: FakeClock) -> None:
    store = LocalStore(tmp_path / "small", max_value_bytes=100)
    server = Server(main_test=[_answer("x" * 500)])
    result = await run_attempt(make_spec(), store, transport=server.transport, clock=clock)
    assert result.error_class == "OutputTooLarge" and "exceed" in (result.message or "")
    assert result.tokens.output == 5, "the answer was billed"


async def test_usage_is_reported_per_provider_and_requested_model(
    make_spec: MakeSpec, store: LocalStore, clock: FakeClock
) -> None:
    """The shells bill each provider/model at its own price: a fallback's tokens are
    reported under the fallback, with the model name the stage asked for (the pricing
    key), not the one the server answered with."""
    providers = {
        "main": {"type": "openai", "baseURL": "http://main.test/v1", "request": {"retries": 0}},
        "backup": {"type": "openai", "baseURL": "http://backup.test/v1"},
    }
    server = Server(main_test=[httpx.Response(503)], backup_test=[_answer("ok", 7, 2)])
    spec = make_spec(agent={"fallbacks": [{"provider": "backup", "model": "small"}]},
                     providers=providers)
    result = await run_attempt(spec, store, transport=server.transport, clock=clock)
    assert result.ok, result.message
    assert [(u.provider, u.model, u.input, u.output) for u in result.usage] == [
        ("backup", "small", 7, 2)]
    bad = Server(main_test=[_answer("not json", 40, 3)])
    failed = await run_attempt(make_spec(agent={"output": {"format": "json"}}), store,
                               transport=bad.transport, clock=clock)
    assert failed.error_class == "MalformedOutput"
    assert [(u.provider, u.model, u.input, u.output) for u in failed.usage] == [
        ("main", "m", 40, 3)]  # a rejected answer was billed: it is in the usage
