"""The pod path with an S3 store: ``python -m stagecoach_runner`` reads its credentials
from the environment (as the operator injects them from ``credentialsSecret``) and writes
the output (2 MB: over a ConfigMap's limit) and its trace record to the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stagecoach.api import AttemptResult
from stagecoach.api.pipeline import S3Storage
from stagecoach.store import decode_output, open_store, s3_store_ref

from tests.fixtures.seaweed import SeaweedServer

pytestmark = pytest.mark.s3


async def test_a_runner_process_stores_into_s3(
    s3_server: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    ref = s3_store_ref(S3Storage(bucket=bucket, endpoint=s3_server.endpoint),
                       pipeline="p", uid="u-1", namespace="team-a")
    assert ref.prefix == "team-a/p/u-1"
    spec = {
        "pipeline": {"name": "p", "uid": "u-1", "namespace": "team-a"},
        "stage": {"name": "s", "run": {
            "image": "i", "output": {"format": "json"},
            "command": [sys.executable, "-c",
                        "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w')"
                        ".write('{\"n\": \"' + 'x' * 2_000_000 + '\"}')"]}},
        "store": ref.model_dump(by_alias=True, exclude_none=True),
    }
    env = {**os.environ, **s3_server.env, "STAGECOACH_ATTEMPT": json.dumps(spec),
           "STAGECOACH_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.run([sys.executable, "-m", "stagecoach_runner"], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = AttemptResult.from_termination_message((tmp_path / "term").read_text())
    store = open_store(ref, environ=s3_server.env)
    assert result.output_ref is not None
    assert decode_output(await store.get(result.output_ref)).value == {"n": "x" * 2_000_000}
    assert [e["type"] for e in await store.read_trace()] == ["InputSnapshot", "OutputSnapshot"]


def test_a_runner_without_credentials_reports_a_clear_error(
    s3_server: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    ref = s3_store_ref(S3Storage(bucket=bucket, endpoint=s3_server.endpoint),
                       pipeline="p", uid="u-2")
    spec = {"pipeline": {"name": "p", "uid": "u-2"},
            "stage": {"name": "s", "run": {"image": "i", "command": ["true"]}},
            "store": ref.model_dump(by_alias=True, exclude_none=True)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="nobody", AWS_SECRET_ACCESS_KEY="nothing",
               STAGECOACH_ATTEMPT=json.dumps(spec),
               STAGECOACH_TERMINATION_LOG=str(tmp_path / "term"))
    proc = subprocess.run([sys.executable, "-m", "stagecoach_runner"], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    result = AttemptResult.from_termination_message((tmp_path / "term").read_text())
    assert proc.returncode != 0 and result.error_class == "Error"
    assert result.message is not None
    assert f"access denied for bucket {bucket} (check credentials" in result.message
    assert "Traceback" not in proc.stderr
