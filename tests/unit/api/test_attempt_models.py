"""AttemptSpec/AttemptResult: JSON and env round trips, termination message size, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stagecoach.api import (
    ATTEMPT_ENV,
    ERROR_CLASSES,
    EXIT_CODES,
    INLINE_OUTPUT_LIMIT,
    AttemptResult,
    AttemptSpec,
    ResolvedStage,
    RetryPolicy,
    RunSpec,
    error_class_for_exit,
    exit_code_for,
    inline_output,
    stage_body,
)


def _spec() -> AttemptSpec:
    return AttemptSpec.model_validate(
        {
            "pipeline": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "stage": {
                "name": "research",
                "agent": {"provider": "openai", "model": "m", "prompt": "hi {{ params.x }}"},
                "timeout": "5m",
                "retry": {"limit": 2},
            },
            "params": {"x": 1},
            "iteration": 2,
            "attempt": 3,
            "index": 4,
            "item": {"url": "u"},
            "loop": {"iteration": 2, "from": "verify", "reason": "x > 1"},
            "upstream": {"a": {"phase": "Succeeded", "outputRef": "outputs/a/1.json"}},
            "store": {"type": "local", "path": "/tmp/run"},
            "providers": {"openai": {"type": "openai", "apiKeyEnv": "OPENAI_API_KEY"}},
            "previousError": "bad json",
        }
    )


def test_spec_json_round_trip_and_env(tmp_path: Path) -> None:
    spec = _spec()
    text = spec.to_json()
    doc = json.loads(text)
    assert doc["loop"]["from"] == "verify"
    assert doc["stage"]["timeout"] == "5m"
    assert doc["upstream"]["a"]["outputRef"] == "outputs/a/1.json"
    assert AttemptSpec.from_json(text) == spec
    assert AttemptSpec.load(environ={ATTEMPT_ENV: text}) == spec
    path = tmp_path / "attempt.json"
    path.write_text(text)
    assert AttemptSpec.load(path) == spec
    assert spec.label == "research[4] iteration 2 attempt 3"
    with pytest.raises(ValueError, match=ATTEMPT_ENV):
        AttemptSpec.load(environ={})


def test_exit_codes_cover_every_class_and_invert() -> None:
    assert set(EXIT_CODES) == set(ERROR_CLASSES)
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert 0 not in EXIT_CODES.values()
    for cls in ERROR_CLASSES:
        assert error_class_for_exit(exit_code_for(cls)) == cls  # type: ignore[arg-type]
    assert error_class_for_exit(0) is None
    assert error_class_for_exit(137) == "Error"


def test_termination_message_stays_under_4k() -> None:
    result = AttemptResult.failed("MalformedOutput", "é" * 10_000, duration_ms=5)
    text = result.to_termination_message()
    assert len(text.encode()) <= 4096
    back = AttemptResult.from_termination_message(text)
    assert back.error_class == "MalformedOutput"
    assert back.message is not None and back.message.endswith("(truncated)")
    assert back.exit_code == EXIT_CODES["MalformedOutput"]
    ok = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json")
    assert ok.ok and ok.exit_code == 0
    assert json.loads(ok.to_termination_message())["outputRef"] == "outputs/a/1.json"


def test_an_inline_output_is_dropped_before_the_message_is_shortened() -> None:
    small = json.dumps({"value": "x" * 100}).encode()
    assert inline_output(small) == small.decode()
    assert inline_output(b"x" * (INLINE_OUTPUT_LIMIT + 1)) is None
    assert inline_output(b"\xff\xfe") is None  # not UTF-8: the reader goes to the store
    fits = AttemptResult(phase="Succeeded", output_ref="k", output=small.decode())
    assert AttemptResult.from_termination_message(fits.to_termination_message()).output == (
        small.decode())
    # Quotes double when escaped: a 2 KiB output of them no longer fits; it goes, the
    # counters and the key stay.
    quoted = AttemptResult(phase="Succeeded", output_ref="k", output='"' * INLINE_OUTPUT_LIMIT,
                           tokens={"input": 7, "output": 9})
    text = quoted.to_termination_message()
    back = AttemptResult.from_termination_message(text)
    assert len(text.encode()) <= 4096 and back.output is None
    assert (back.output_ref, back.tokens.input, back.tokens.output) == ("k", 7, 9)


def test_stage_body_from_resolved() -> None:
    resolved = ResolvedStage(
        name="s", agent=None, run=RunSpec(image="i", command=["true"]), retry=RetryPolicy(limit=1)
    )
    body = stage_body(resolved)
    assert body.run is not None and body.retry is not None and body.retry.limit == 1
