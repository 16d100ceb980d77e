"""The API the operator uses, in a process of its own exporting to a real OTLP receiver:
the root span emitted at the end of a run (backdated), scheduling spans under it from
the UID alone, and the TRACEPARENT a Job gets pointing at the root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stagecoach.telemetry import pipeline_ids

from tests.fixtures.otlp import OTLPReceiver

SCRIPT = """
import json
from datetime import UTC, datetime, timedelta
from stagecoach import telemetry

uid = "0d6e-uid"
env = [{"name": "A", "value": "1"}]
attrs = {"stagecoach.stage": "research"}
with telemetry.pipeline_child_span(uid, "create job research", attributes=attrs):
    telemetry.inject_traceparent(env, telemetry.pipeline_traceparent(uid))
started = datetime.now(UTC) - timedelta(minutes=5)
with telemetry.start_pipeline_span("report", uid, namespace="team-a", start_time=started) as span:
    telemetry.set_pipeline_outcome(span, "Failed", "BudgetExceeded", (10, 20))
telemetry.flush()
print(json.dumps(env))
"""


def test_operator_spans_and_job_env(otlp_receiver: OTLPReceiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_receiver.endpoint
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    trace_id, span_id = (f"{pipeline_ids('0d6e-uid')[0]:032x}",
                         f"{pipeline_ids('0d6e-uid')[1]:016x}")
    job_env = json.loads(proc.stdout)
    assert job_env[-1] == {"name": "TRACEPARENT", "value": f"00-{trace_id}-{span_id}-01"}

    spans = otlp_receiver.wait_for(lambda s: len(s) >= 2)
    root = next(s for s in spans if s.name == "pipeline report")
    child = next(s for s in spans if s.name == "create job research")
    assert (root.trace_id, root.span_id, root.parent_span_id) == (trace_id, span_id, "")
    assert (child.trace_id, child.parent_span_id) == (trace_id, span_id)
    assert root.service == "stagecoach" and root.status_code == 2
    assert root.attributes["stagecoach.phase"] == "Failed"
    assert root.attributes["k8s.namespace.name"] == "team-a"
    assert (root.end_ns - root.start_ns) / 1e9 >= 299  # backdated to status.startedAt
