"""OpenTelemetry for a local run: the real OTLP/HTTP protobuf payloads a ``stagecoach run``
exports form one trace, the run's root span over one span per stage attempt with GenAI
attributes, and no prompt or answer content unless it is enabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stagecoach.telemetry import pipeline_ids

from tests.fixtures.otlp import OTLPReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples/research-report/pipeline.yaml"
CONTENT = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}


def run(store: Path, endpoint: str, manifest: Path = EXAMPLE,
        **env: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "stagecoach.cli.main", "run", str(manifest), "--store",
         str(store), "--auto-approve"],  # the example's sign-off gate
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: ")), proc


def attempts(run_dir: Path) -> list[tuple[str, int, int, int | None]]:
    events = [json.loads(ln) for ln in (run_dir / "trace.jsonl").read_text().splitlines()]
    return sorted((e["stage"], e["iteration"], e["attempt"], e["index"])
                  for e in events if e["type"] == "StageStarted")


def key(s: ReceivedSpan) -> tuple[str, int, int, int | None]:
    a = s.attributes
    return (a["stagecoach.stage"], a["stagecoach.iteration"], a["stagecoach.attempt"],
            a.get("stagecoach.index"))


def test_a_local_run_is_one_trace_with_a_span_per_attempt(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    run_dir, _ = run(tmp_path, otlp_receiver.endpoint)
    expected = attempts(run_dir)
    spans = otlp_receiver.wait_for(lambda s: len(s) >= len(expected) + 1)
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    assert root.name == "pipeline battery-report" and root.service == "stagecoach"
    assert root.attributes["stagecoach.phase"] == "Succeeded"
    assert root.attributes["gen_ai.usage.input_tokens"] > 0
    trace_id, span_id = pipeline_ids(run_dir.name)  # derived from the run's uid
    assert (root.trace_id, root.span_id) == (f"{trace_id:032x}", f"{span_id:016x}")

    stage_spans = [s for s in spans if s is not root]
    assert all(s.trace_id == root.trace_id for s in stage_spans)
    assert all(s.parent_span_id == root.span_id for s in stage_spans)
    assert sorted(key(s) for s in stage_spans) == expected  # one span per attempt
    assert all(s.start_ns >= root.start_ns and s.end_ns <= root.end_ns for s in stage_spans)

    research = next(s for s in stage_spans if key(s) == ("research", 1, 1, None))
    a = research.attributes
    assert research.name == "stage research"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "stagecoach.replay"
    assert a["stagecoach.provider"] == "replay"
    assert a["gen_ai.request.model"] == "smollm2-135m"
    assert a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.response.finish_reasons" not in a  # this cassette records none
    assert a["stagecoach.pipeline"] == "battery-report" and a["stagecoach.outcome"] == \
        "Succeeded"

    scrape = [s for s in stage_spans if s.attributes["stagecoach.stage"] == "scrape"]
    assert {s.attributes["stagecoach.index"] for s in scrape} >= {0, 1, 2}
    assert all(s.attributes["stagecoach.stage.kind"] == "run" for s in scrape)
    assert not any(k.startswith("gen_ai.") for s in scrape for k in s.attributes)

    failed = next(s for s in stage_spans if key(s) == ("qa", 1, 1, None))
    assert failed.attributes["stagecoach.error_class"] == "MalformedOutput"
    assert failed.attributes["error.type"] == "MalformedOutput"
    assert failed.status_code == 2  # STATUS_CODE_ERROR

    assert not any(CONTENT & s.attributes.keys() for s in spans)  # no content by default


HELLO = """\
apiVersion: stagecoach.dev/v1alpha1
kind: ModelProvider
metadata: {name: local-llm}
spec: {type: replay, cassette: {path: cassette.yaml}}
---
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: hello}
spec:
  defaults: {provider: local-llm, model: tiny}
  stages:
    - name: poem
      agent: {system: "You are a poet.", prompt: "A two-line poem about {{ params.who }}"}
  params: {who: sk-not-a-secret}
"""
CASSETTE = """\
apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
  - stage: poem
    response: {content: "roses are red", usage: {input: 9, output: 4}, model: tiny-2,
               finishReason: stop}
"""


def test_content_is_recorded_only_when_enabled(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    (tmp_path / "cassette.yaml").write_text(CASSETTE)
    (tmp_path / "hello.yaml").write_text(HELLO)
    run(tmp_path / "runs", otlp_receiver.endpoint, STAGECOACH_OTEL_CAPTURE_CONTENT="true",
        manifest=tmp_path / "hello.yaml")
    spans = otlp_receiver.wait_for(lambda s: any(not x.parent_span_id for x in s))
    poem = next(s for s in spans if s.attributes.get("stagecoach.stage") == "poem")
    a = poem.attributes
    assert a["gen_ai.provider.name"] == "stagecoach.replay"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("tiny", "tiny-2")
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (9, 4)
    messages = json.loads(a["gen_ai.input.messages"])
    assert messages == [{"role": "user", "parts": [
        {"type": "text", "content": "A two-line poem about sk-not-a-secret"}]}]
    output = json.loads(a["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == "roses are red"
    assert output[0]["finish_reason"] == "stop"
    assert json.loads(a["gen_ai.system_instructions"])[0]["content"] == "You are a poet."


def test_tracing_is_off_without_an_endpoint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c",
         "from stagecoach import telemetry; print(telemetry.configure(), "
         "telemetry.pipeline_traceparent('u'))"],
        capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.stdout.split() == ["False", "None"], proc.stderr
