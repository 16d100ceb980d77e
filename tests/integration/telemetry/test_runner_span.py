"""The pod path: ``python -m stagecoach_runner`` with ``TRACEPARENT`` in its environment
exports its attempt span, as a child of that context, before the process exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stagecoach.telemetry import pipeline_ids

from tests.fixtures.otlp import OTLPReceiver


def test_the_runner_span_is_a_child_of_traceparent(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    trace_id, span_id = pipeline_ids("pipeline-uid")
    spec = {
        "pipeline": {"name": "p", "uid": "pipeline-uid", "namespace": "team-a"},
        "stage": {"name": "fetch", "run": {
            "image": "i", "output": {"format": "json"},
            "command": [sys.executable, "-c",
                        "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('[1]')"]}},
        "iteration": 2, "attempt": 3,
        "store": {"type": "local", "path": str(tmp_path / "run")},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(STAGECOACH_ATTEMPT=json.dumps(spec),
               TRACEPARENT=f"00-{trace_id:032x}-{span_id:016x}-01",
               OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
               STAGECOACH_TERMINATION_LOG=str(tmp_path / "term"))
    proc = subprocess.run([sys.executable, "-m", "stagecoach_runner"], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    [span] = otlp_receiver.wait_for(lambda s: len(s) >= 1, timeout=5)  # flushed at exit
    assert span.trace_id == f"{trace_id:032x}" and span.parent_span_id == f"{span_id:016x}"
    assert span.service == "stagecoach-runner" and span.name == "stage fetch"
    assert span.attributes["k8s.namespace.name"] == "team-a"
    a = span.attributes
    assert (a["stagecoach.iteration"], a["stagecoach.attempt"]) == (2, 3)
    assert span.attributes["stagecoach.outcome"] == "Succeeded"
