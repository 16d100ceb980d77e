"""The OpenAI provider and run_attempt against a real model (SmolLM2-135M on llama.cpp)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from model_server import TIMINGS  # type: ignore[import-not-found]
from stagecoach.api import AttemptSpec
from stagecoach.store import LocalStore, decode_output
from stagecoach_runner import run_attempt

pytestmark = pytest.mark.model

SCHEMA = {
    "type": "object",
    "required": ["city", "country"],
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
}


def _spec(tmp_path: Path, url: str, agent: dict[str, Any], attempt: int = 1) -> AttemptSpec:
    return AttemptSpec.model_validate(
        {
            "pipeline": {"name": "model-test", "uid": "m1"},
            "stage": {
                "name": "ask",
                "agent": {
                    "provider": "local",
                    "model": "smollm2",
                    "temperature": 0,
                    "maxTokens": 64,
                    **agent,
                },
            },
            "params": {"city": "Paris"},
            "attempt": attempt,
            "store": {"type": "local", "path": str(tmp_path / "run")},
            "providers": {
                "local": {
                    "type": "openai",
                    "baseURL": url,
                    "models": {"smollm2": {"contextWindow": 2048}},
                    "request": {"timeout": "120s", "retries": 1},
                }
            },
        }
    )


async def test_json_output_with_schema(llama_url: str, tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        llama_url,
        {
            "prompt": "Which country is {{ params.city }} in? Give the city and the country.",
            "output": {"format": "json", "schema": SCHEMA},
        },
    )
    store = LocalStore(tmp_path / "run")
    started = time.monotonic()
    result = await run_attempt(spec, store)
    TIMINGS["first_json_request_s"] = time.monotonic() - started
    assert result.ok, result.message
    value = decode_output(await store.get(result.output_ref or "")).value
    assert isinstance(value, dict) and {"city", "country"} <= set(value)
    assert result.tokens.input > 20 and result.tokens.output > 0
    assert result.provider == "local"
    snapshot = next(e for e in await store.read_trace() if e["type"] == "OutputSnapshot")
    assert snapshot["data"]["usageReported"] is True
    assert snapshot["data"]["tokens"] == {
        "input": result.tokens.input,
        "output": result.tokens.output,
    }


async def test_text_output_warm(llama_url: str, tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, llama_url, {"prompt": "Say hello in one word.", "maxTokens": 8}, attempt=2
    )
    started = time.monotonic()
    result = await run_attempt(spec, LocalStore(tmp_path / "run"))
    TIMINGS["warm_text_request_s"] = time.monotonic() - started
    assert result.ok, result.message
    assert 0 < result.tokens.output <= 8
