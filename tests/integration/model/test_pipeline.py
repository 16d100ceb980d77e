"""A three-stage pipeline through ``stagecoach run`` against the real model, recorded
with ``--record`` and replayed offline to the same outputs.

Asserts structure and token usage, never wording: SmolLM2-135M is tiny.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.model

PIPELINE = """
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: geo}
spec:
  params: {city: Paris}
  defaults: {provider: local, model: smollm2, retry: {limit: 2, backoff: {initial: 100ms}}}
  stages:
    - name: facts
      agent:
        prompt: Which country is {{ params.city }} in? Give the city and the country.
        temperature: 0
        maxTokens: 64
        output:
          format: json
          schema:
            type: object
            required: [city, country]
            properties: {city: {type: string}, country: {type: string}}
    - name: describe
      dependsOn: [facts]
      agent:
        prompt: Write one short sentence about {{ stages.facts.output.city }}.
        temperature: 0
        maxTokens: 48
    - name: title
      dependsOn: [describe]
      agent:
        prompt: "Give a three-word title for: {{ stages.describe.output }}"
        temperature: 0
        maxTokens: 16
  output: "{{ stages.title.output }}"
"""


def _providers(kind: str, url: str = "") -> str:
    spec: dict[str, Any] = {"type": kind, "models": {"smollm2": {"contextWindow": 2048}}}
    if kind == "openai":
        spec.update(baseURL=url, request={"timeout": "120s", "retries": 1})
    else:
        spec["cassette"] = {"path": "recorded.yaml"}
    return yaml.safe_dump({"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
                           "metadata": {"name": "local"}, "spec": spec})


def _run(tmp: Path, providers: str, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "stagecoach.cli.main", "run", str(tmp / "pipeline.yaml"),
         "--providers", str(tmp / providers), "--store", str(tmp / "runs"), *extra],
        capture_output=True, text=True, timeout=600, check=False)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: ")), proc


def _outputs(run: Path) -> dict[str, Any]:
    return {p.relative_to(run / "outputs").as_posix(): json.loads(p.read_text())["value"]
            for p in sorted((run / "outputs").rglob("*.json"))}


def test_three_stages_recorded_then_replayed_offline(llama_url: str, tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "live.yaml").write_text(_providers("openai", llama_url))
    (tmp_path / "replay.yaml").write_text(_providers("replay"))
    cassette = tmp_path / "recorded.yaml"

    live, proc = _run(tmp_path, "live.yaml", "--record", str(cassette))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads((live / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["progress"] == "3/3"
    stages = {s["name"]: s for s in status["stages"]}
    for name in ("facts", "describe", "title"):
        assert stages[name]["phase"] == "Succeeded"
        assert stages[name]["tokens"]["input"] > 0 and stages[name]["tokens"]["output"] > 0
    assert status["tokens"]["input"] == sum(s["tokens"]["input"] for s in stages.values())
    facts = _outputs(live)["facts/1.json"]
    assert isinstance(facts["city"], str) and isinstance(facts["country"], str)
    assert (live / "output.txt").read_text().strip()
    recorded = yaml.safe_load(cassette.read_text())
    assert recorded["kind"] == "Cassette"
    assert {e["stage"] for e in recorded["entries"]} == {"facts", "describe", "title"}

    replay, proc = _run(tmp_path, "replay.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _outputs(replay) == _outputs(live)
    assert (replay / "output.txt").read_text() == (live / "output.txt").read_text()
    replayed = json.loads((replay / "status.json").read_text())
    assert replayed["tokens"] == status["tokens"]
