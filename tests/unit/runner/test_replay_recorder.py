"""Cassette players (matching, consumption, errors) and the recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
from stagecoach.api import ProviderSpec
from stagecoach_runner import AttemptError, FakeClock
from stagecoach_runner.providers import (
    CassetteLoadError,
    CassettePlayer,
    ChatRequest,
    Message,
    NoCassetteEntry,
    ProviderHTTPError,
    Recorder,
    ReplayProvider,
    RequestTimedOut,
    complete,
)

CASSETTE = """
apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
  - stage: a
    iteration: 2
    response: {content: second-iteration}
  - stage: a
    response: {content: any-iteration, usage: {input: 3, output: 4}}
  - stage: b
    index: 1
    response: {content: b1}
  - stage: b
    response: {content: b-any}
  - stage: c
    error: {status: 429, retryAfter: 1}
  - stage: c
    error: {status: 500}
  - stage: c
    error: {timeout: true}
  - stage: c
    response: {content: c-finally}
"""

SPEC = ProviderSpec(type="replay", cassette={"path": "c.yaml"})  # type: ignore[arg-type]


def _req(stage: str, iteration: int = 1, index: int | None = None) -> ChatRequest:
    return ChatRequest(
        model="m", messages=(Message("user", "x"),), stage=stage, iteration=iteration, index=index
    )


def test_matching_rules_and_consumption() -> None:
    player = CassettePlayer.from_bytes(CASSETTE)
    assert player.take("a", 1, None).response.content == "any-iteration"  # type: ignore[union-attr]
    assert player.take("a", 2, None).response.content == "second-iteration"  # type: ignore[union-attr]
    assert player.take("b", 1, 0).response.content == "b-any"  # type: ignore[union-attr]
    assert player.take("b", 1, 1).response.content == "b1"  # type: ignore[union-attr]
    with pytest.raises(NoCassetteEntry, match="stage 'b', iteration 1, index 2"):
        player.take("b", 1, 2)
    with pytest.raises(NoCassetteEntry, match="stage 'zzz', iteration 3"):
        player.take("zzz", 3, None)
    assert len(player.remaining) == 4


async def test_replayed_errors_go_through_the_retry_logic() -> None:
    player = CassettePlayer.from_bytes(CASSETTE)
    provider = ReplayProvider("r", SPEC, player)
    with pytest.raises(ProviderHTTPError):
        await provider.send(_req("c"))
    with pytest.raises(ProviderHTTPError):
        await provider.send(_req("c"))
    with pytest.raises(RequestTimedOut):
        await provider.send(_req("c"))
    player = CassettePlayer.from_bytes(CASSETTE)
    provider = ReplayProvider("r", SPEC, player)
    clock = FakeClock()
    out = await complete(provider, _req("c"), clock=clock)
    assert out.content == "c-finally"
    assert clock.sleeps[0] == 1.0 and len(clock.sleeps) == 3


async def test_no_entry_is_provider_unavailable_without_retry() -> None:
    player = CassettePlayer.from_bytes("entries: []")
    with pytest.raises(AttemptError) as err:
        await complete(ReplayProvider("r", SPEC, player), _req("x", 2, 5), clock=FakeClock())
    assert err.value.error_class == "ProviderUnavailable"
    assert "stage 'x', iteration 2, index 5" in err.value.message


def test_loading(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CASSETTE)
    assert len(CassettePlayer.from_path("c.yaml", tmp_path).cassette.entries) == 8
    with pytest.raises(CassetteLoadError, match="cannot read"):
        CassettePlayer.from_path("missing.yaml", tmp_path)
    with pytest.raises(CassetteLoadError, match="not a cassette"):
        CassettePlayer.from_bytes("entries: [{stage: a}]")
    with pytest.raises(CassetteLoadError, match="not YAML"):
        CassettePlayer.from_bytes("entries: [")


async def test_recorder_round_trip(tmp_path: Path) -> None:
    source = ReplayProvider("r", SPEC, CassettePlayer.from_bytes(CASSETTE))
    recorder = Recorder()
    recording = recorder.wrap(source)
    clock = FakeClock()
    first = [
        await complete(recording, _req("c"), clock=clock),
        await complete(recording, _req("a", 2), clock=clock),
        await complete(recording, _req("b", 1, 1), clock=clock),
    ]
    recorder.save(tmp_path / "rec.yaml")
    replayed = ReplayProvider("r", SPEC, CassettePlayer.from_path(tmp_path / "rec.yaml"))
    clock2 = FakeClock()
    second = [
        await complete(replayed, _req("c"), clock=clock2),
        await complete(replayed, _req("a", 2), clock=clock2),
        await complete(replayed, _req("b", 1, 1), clock=clock2),
    ]
    assert [(r.content, r.input_tokens, r.output_tokens) for r in first] == [
        (r.content, r.input_tokens, r.output_tokens) for r in second
    ]
    assert len(clock.sleeps) == len(clock2.sleeps) == 3
    assert clock.sleeps[0] == clock2.sleeps[0] == 1.0  # Retry-After; the rest has jitter
    text = (tmp_path / "rec.yaml").read_text()
    assert "kind: Cassette" in text and "retryAfter: 1" in text and "timeout: true" in text


async def test_a_recording_pool_records_replayed_answers_too() -> None:
    from stagecoach_runner.providers import ProviderPool

    recorder = Recorder()
    pool = ProviderPool(players={"r": CassettePlayer.from_bytes(CASSETTE)}, recorder=recorder)
    provider = pool.get("r", SPEC)
    clock = FakeClock()
    await complete(provider, _req("c"), clock=clock)
    with pytest.raises(AttemptError):  # no entry: not an answer, nothing recorded
        await complete(provider, _req("zzz"), clock=clock)
    kinds = [("error" if e.error else "response") for e in recorder.cassette.entries]
    assert kinds == ["error", "error", "error", "response"]
    assert {e.stage for e in recorder.cassette.entries} == {"c"}
