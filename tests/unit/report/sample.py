"""A synthetic run directory for the report tests (the fixtures are in ``conftest.py``).

The run has a loop (verify routes back to research once), a provider retry and a stage
retry (qa answers malformed JSON, then succeeds), a fan-out (scrape: two instances, then
one in the second iteration), a skipped stage (publish) and an assembled output. One
stored output and the final output carry ``<script>`` to check escaping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
EVIL = "<script>alert(1)</script>"


def ts(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def ev(ms: int, type_: str, stage: str | None = None, iteration: int | None = None,
       attempt: int | None = None, index: int | None = None, **data: Any) -> dict[str, Any]:
    return {"ts": ts(ms), "pipeline": "demo", "uid": "u-1", "type": type_, "stage": stage,
            "iteration": iteration, "attempt": attempt, "index": index, "data": data}


def ok(ms: int, stage: str, it: int, att: int = 1, index: int | None = None,
       tokens: tuple[int, int] | None = None, dur: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {"durationMs": dur, "outputRef": f"outputs/{stage}/{it}.json"}
    if tokens:
        data["tokens"] = {"input": tokens[0], "output": tokens[1]}
    return ev(ms, "StageSucceeded", stage, it, att, index, **data)


RATIO = "stages.verify.output.failed_ratio > 0.2"
SCORE = "stages.qa.output.score >= 0.8"

EVENTS: list[dict[str, Any]] = [
    {**ev(0, "PipelineStarted"),
     "data": {"stages": ["research", "scrape", "verify", "qa", "publish"], "finally": []}},
    ev(0, "StageReady", "research", 1),
    ev(0, "StageStarted", "research", 1, 1, provider="replay"),
    ev(10, "InputSnapshot", "research", 1, 1, provider="replay", model="m",
       system="Be precise.", prompt="Find sources <img src=x onerror=alert(2)>",
       estimatedTokens=90, fallback=False),
    ev(50, "ProviderRetry", "research", 1, 1, provider="replay", model="m", status=429,
       delayMs=500),
    ev(600, "OutputSnapshot", "research", 1, 1, provider="replay", model="m",
       content='{"sources": ["a", "b"]}', tokens={"input": 100, "output": 50}),
    ok(600, "research", 1, tokens=(100, 50), dur=600),
    ev(600, "Decision", "scrape", 1, kind="forEach", expression="stages.research.output.sources",
       values={"stages.research.output.sources": "<list of 2 entries, 10 bytes>"}, result=2,
       action="run"),
    ev(600, "StageReady", "scrape", 1, instances=2),
    ev(600, "StageStarted", "scrape", 1, 1, 0),
    ev(600, "StageStarted", "scrape", 1, 1, 1),
    ok(800, "scrape", 1, 1, 0, dur=200),
    ok(900, "scrape", 1, 1, 1, dur=300),
    ev(900, "StageStarted", "verify", 1, 1),
    ok(1000, "verify", 1, tokens=(40, 10), dur=100),
    ev(1000, "Decision", "verify", 1, kind="route", expression=RATIO,
       values={"stages.verify.output.failed_ratio": 0.5}, result=True, action="goto",
       target="research"),
    ev(1000, "StageStarted", "research", 2, 1),
    ok(1200, "research", 2, tokens=(120, 60), dur=200),
    ev(1200, "StageStarted", "scrape", 2, 1, 0),
    ok(1300, "scrape", 2, 1, 0, dur=100),
    ev(1300, "StageStarted", "verify", 2, 1),
    ok(1400, "verify", 2, tokens=(40, 10), dur=100),
    ev(1400, "Decision", "verify", 2, kind="route", expression=RATIO,
       values={"stages.verify.output.failed_ratio": 0.0}, result=False, action="continue",
       target="research"),
    ev(1400, "StageStarted", "qa", 1, 1),
    ev(1450, "OutputSnapshot", "qa", 1, 1, content="Score: good",
       tokens={"input": 30, "output": 5}),
    ev(1450, "StageFailed", "qa", 1, 1, errorClass="MalformedOutput",
       message="the answer is not valid JSON", willRetry=True, nextAttemptAt=ts(1650),
       durationMs=50),
    ev(1650, "StageStarted", "qa", 1, 2),
    ok(1700, "qa", 1, 2, tokens=(30, 8), dur=50),
    ev(1700, "Decision", "publish", 1, kind="when", expression=SCORE,
       values={"stages.qa.output.score": 0.5}, result=False, action="skip"),
    ev(1700, "StageSkipped", "publish", 1, reason=f"when: {SCORE}"),
    ev(1700, "OutputAssembled", stages=["qa"], template=True, bytes=40, iterations={"qa": 1}),
    ev(1700, "PipelineSucceeded", phase="Succeeded", reason="Succeeded", message=None),
]

ATTEMPT_LABELS = ["research #1", "scrape[0] #1", "scrape[1] #1", "verify #1",
                  "research it2 #1", "scrape[0] it2 #1", "verify it2 #1", "qa #1", "qa #2"]

STATUS: dict[str, Any] = {
    "phase": "Succeeded", "reason": "Succeeded", "progress": "5/5",
    "startedAt": ts(0), "finishedAt": ts(1700),
    "tokens": {"input": 360, "output": 143},
    "stages": [
        {"name": "research", "phase": "Succeeded", "iteration": 2, "attempt": 1,
         "tokens": {"input": 220, "output": 110}},
        {"name": "scrape", "phase": "Succeeded", "iteration": 2, "attempt": 1,
         "instances": {"total": 1, "succeeded": 1}},
        {"name": "verify", "phase": "Succeeded", "iteration": 2, "attempt": 1,
         "tokens": {"input": 80, "output": 20}},
        {"name": "qa", "phase": "Succeeded", "iteration": 1, "attempt": 2,
         "tokens": {"input": 60, "output": 13}},
        {"name": "publish", "phase": "Skipped", "iteration": 1, "attempt": 0,
         "reason": "ConditionFalse", "message": f"when: {SCORE}"},
    ],
}

OUTPUTS: dict[str, Any] = {
    "research/1.json": {"sources": ["a", "b"]},
    "research/2.json": {"sources": ["c"]},
    "scrape/1-0.json": {"url": "a"},
    "scrape/1-1.json": {"url": "b"},
    "scrape/2-0.json": {"url": "c"},
    "verify/1.json": {"failed_ratio": 0.5},
    "verify/2.json": {"failed_ratio": 0.0},
    "qa/1.json": {"score": 0.5, "notes": EVIL},
}

MANIFEST = """apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: demo}
spec:
  budget: {maxTokens: 10000}
  stages: []
"""


def write_run(path: Path, *, events: list[dict[str, Any]] | None = None,
              status: dict[str, Any] | None = STATUS, outputs: dict[str, Any] | None = None,
              final: str | None = f"Report {EVIL} done",
              manifest: str | None = MANIFEST) -> Path:
    """Write a run directory; pass None to leave a file out."""
    path.mkdir(parents=True, exist_ok=True)
    evs = EVENTS if events is None else events
    (path / "trace.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    if status is not None:
        (path / "status.json").write_text(json.dumps(status))
    if manifest is not None:
        (path / "pipeline.yaml").write_text(manifest)
    if final is not None:
        (path / "output.txt").write_text(final)
    for key, value in (OUTPUTS if outputs is None else outputs).items():
        f = path / "outputs" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        fmt = "text" if isinstance(value, str) else "json"
        f.write_text(json.dumps({"format": fmt, "value": value}))
    return path
