"""Providers against a real HTTP server on 127.0.0.1: retries, timeouts, fallbacks,
malformed answers, context overflow, recording and replaying."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llm_server import LLMServer, Reply, chat  # type: ignore[import-not-found]
from stagecoach.api import AttemptSpec
from stagecoach.store import LocalStore, decode_output, encode_output
from stagecoach_runner import (
    CassettePlayer,
    FakeClock,
    ProviderPool,
    Recorder,
    SystemClock,
    run_attempt,
)


def _spec(
    tmp_path: Path, providers: dict[str, Any], agent: dict[str, Any] | None = None, **over: Any
) -> AttemptSpec:
    doc: dict[str, Any] = {
        "pipeline": {"name": "demo", "uid": "run-1"},
        "stage": {
            "name": "ask",
            "agent": {
                "provider": "main",
                "model": "tiny",
                "prompt": "Say hi to {{ params.who }}",
                **(agent or {}),
            },
        },
        "params": {"who": "you"},
        "store": {"type": "local", "path": str(tmp_path / "run")},
        "providers": providers,
        "baseDir": str(tmp_path),
    }
    doc.update(over)
    return AttemptSpec.model_validate(doc)


def _openai(url: str, **kw: Any) -> dict[str, Any]:
    return {"type": "openai", "baseURL": url, **kw}


async def test_429_with_retry_after_is_waited_for(llm_server: LLMServer, tmp_path: Path) -> None:
    url = llm_server.script(
        "main", Reply(429, {"error": "slow"}, headers={"Retry-After": "1"}), chat("hi")
    )
    spec = _spec(tmp_path, {"main": _openai(url)})
    store = LocalStore(tmp_path / "run")
    started = time.monotonic()
    result = await run_attempt(spec, store, clock=SystemClock())
    assert result.ok, result.message
    assert time.monotonic() - started >= 1.0
    retry = [e for e in await store.read_trace() if e["type"] == "ProviderRetry"]
    assert [(e["data"]["status"], e["data"]["delayMs"]) for e in retry] == [(429, 1000)]


async def test_500_then_success(llm_server: LLMServer, tmp_path: Path) -> None:
    url = llm_server.script("main", Reply(500), Reply(502, text="bad gateway"), chat("ok", 30, 4))
    store = LocalStore(tmp_path / "run")
    result = await run_attempt(_spec(tmp_path, {"main": _openai(url)}), store, clock=FakeClock())
    assert result.ok and (result.tokens.input, result.tokens.output) == (30, 4)
    assert decode_output(await store.get(result.output_ref or "")).value == "ok"
    assert len(llm_server.requests) == 3


async def test_request_timeout_becomes_timeout(llm_server: LLMServer, tmp_path: Path) -> None:
    url = llm_server.script("main", Reply(delay=1.0, body={}), Reply(delay=1.0, body={}))
    spec = _spec(tmp_path, {"main": _openai(url, request={"timeout": "200ms", "retries": 1})})
    result = await run_attempt(spec, LocalStore(tmp_path / "run"), clock=FakeClock())
    assert result.error_class == "Timeout"
    assert "timed out after 2 tries" in (result.message or "")


async def test_unreachable_provider(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"main": _openai("http://127.0.0.1:9/v1", request={"retries": 1})})
    result = await run_attempt(spec, LocalStore(tmp_path / "run"), clock=FakeClock())
    assert result.error_class == "ProviderUnavailable" and "unreachable" in (result.message or "")


async def test_malformed_json_answer(llm_server: LLMServer, tmp_path: Path) -> None:
    url = llm_server.script("main", chat("Sure! here it is: {not json", 50, 20))
    spec = _spec(tmp_path, {"main": _openai(url)}, {"output": {"format": "json"}})
    result = await run_attempt(spec, LocalStore(tmp_path / "run"), clock=FakeClock())
    assert result.error_class == "MalformedOutput"
    assert (result.tokens.input, result.tokens.output) == (50, 20)
    body = llm_server.requests[0][2]
    assert body["response_format"] == {"type": "json_object"}


async def test_context_overflow_fail_and_truncate(llm_server: LLMServer, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "run")
    await store.put("outputs/doc/1.json", encode_output({"text": "lorem ipsum " * 2000}, "json"))
    url = llm_server.script("main", chat("summary"))
    providers = {
        "main": _openai(url, models={"tiny": {"contextWindow": 600, "maxOutputTokens": 100}})
    }
    upstream = {"doc": {"phase": "Succeeded", "outputRef": "outputs/doc/1.json"}}
    agent = {"prompt": "Summarise: {{ stages.doc.output.text }}"}
    failed = await run_attempt(
        _spec(tmp_path, providers, agent, upstream=upstream), store, clock=FakeClock()
    )
    assert failed.error_class == "ContextOverflow"
    assert llm_server.requests == []
    ok = await run_attempt(
        _spec(
            tmp_path,
            providers,
            {**agent, "context": {"overflow": "truncate"}},
            upstream=upstream,
            attempt=2,
        ),
        store,
        clock=FakeClock(),
    )
    assert ok.ok, ok.message
    sent = llm_server.requests[0][2]["messages"][0]["content"]
    assert sent.startswith("Summarise: lorem ipsum") and sent.endswith("[truncated]")
    assert "ContextTruncated" in [e["type"] for e in await store.read_trace()]


async def test_fallback_to_second_provider(llm_server: LLMServer, tmp_path: Path) -> None:
    main = llm_server.script("main", Reply(429), Reply(429))
    backup = llm_server.script("backup", chat('{"answer": 42}'))
    providers = {
        "main": _openai(main, request={"retries": 1}),
        "backup": {"type": "anthropic", "baseURL": backup, "apiKeyEnv": "BACKUP_KEY"},
    }
    llm_server.scripts["backup"] = [
        Reply(
            body={
                "model": "claude",
                "content": [{"type": "text", "text": '{"answer": 42}'}],
                "usage": {"input_tokens": 9, "output_tokens": 3},
                "stop_reason": "end_turn",
            }
        )
    ]
    spec = _spec(
        tmp_path,
        providers,
        {"fallbacks": [{"provider": "backup", "model": "claude"}], "output": {"format": "json"}},
    )
    store = LocalStore(tmp_path / "run")
    result = await run_attempt(spec, store, clock=FakeClock(), environ={"BACKUP_KEY": "k-xyz"})
    assert result.ok, result.message
    assert (result.provider, result.model) == ("backup", "claude")
    assert decode_output(await store.get(result.output_ref or "")).value == {"answer": 42}
    path, headers, body = llm_server.requests[-1]
    assert path == "/backup/v1/messages"
    assert headers["x-api-key"] == "k-xyz" and body["model"] == "claude"


async def test_replay_with_errors(tmp_path: Path) -> None:
    (tmp_path / "cassette.yaml").write_text(
        "kind: Cassette\nentries:\n"
        "- {stage: ask, error: {status: 429, retryAfter: 2}}\n"
        "- {stage: ask, error: {timeout: true}}\n"
        "- {stage: ask, response: {content: replayed, usage: {input: 3, output: 1}}}\n"
    )
    providers = {"main": {"type": "replay", "cassette": {"path": "cassette.yaml"}}}
    clock = FakeClock()
    store = LocalStore(tmp_path / "run")
    result = await run_attempt(_spec(tmp_path, providers), store, clock=clock)
    assert result.ok and result.tokens.input == 3
    assert clock.sleeps[0] == 2.0
    statuses = [
        e["data"]["status"] for e in await store.read_trace() if e["type"] == "ProviderRetry"
    ]
    assert statuses == [429, "timeout"]


async def test_record_then_replay_gives_the_same_results(
    llm_server: LLMServer, tmp_path: Path
) -> None:
    url = llm_server.script(
        "main", Reply(503), chat('{"n": 1}', 10, 2), chat('{"n": 2}', 11, 3), chat("text", 5, 1)
    )
    live = {"main": _openai(url)}
    replay = {"main": {"type": "replay", "cassette": {"path": "rec.yaml"}}}
    json_out = {"output": {"format": "json"}}
    cases = [
        dict(agent=json_out, index=0),
        dict(agent=json_out, index=1),
        dict(agent=None, iteration=2),
    ]

    async def run_all(providers: dict[str, Any], pool: ProviderPool, root: str) -> list[Any]:
        store = LocalStore(tmp_path / root)
        out = []
        for case in cases:
            spec = _spec(
                tmp_path,
                providers,
                case["agent"],  # type: ignore[arg-type]
                **{k: v for k, v in case.items() if k != "agent"},
            )
            r = await run_attempt(spec, store, clock=FakeClock(), pool=pool)
            value = decode_output(await store.get(r.output_ref or "")).value if r.ok else None
            out.append((r.phase, r.tokens, value))
        return out

    recorder = Recorder()
    async with ProviderPool(recorder=recorder) as pool:
        recorded = await run_all(live, pool, "live")
    recorder.save(tmp_path / "rec.yaml")
    async with ProviderPool(base_dir=tmp_path) as pool:
        replayed = await run_all(replay, pool, "replayed")
        assert pool.players["main"].remaining == []
    assert recorded == replayed
    assert [v for _, _, v in recorded] == [{"n": 1}, {"n": 2}, "text"]
    assert len(CassettePlayer.from_path(tmp_path / "rec.yaml").cassette.entries) == 4
