"""``stagecoach run`` with ``spec.storage.type: s3``: outputs and the trace in the bucket,
status, trace export and report in the run directory; a bad bucket fails cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stagecoach.store import S3Store, decode_output, run_prefix

from tests.fixtures.seaweed import SeaweedServer

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples/research-report"


def manifest(tmp_path: Path, storage: str) -> Path:
    """The demo pipeline with its storage replaced (the cassette beside it)."""
    shutil.copy(EXAMPLE / "cassette.yaml", tmp_path / "cassette.yaml")
    text = (EXAMPLE / "pipeline.yaml").read_text()
    assert "  storage: {type: configmap}" in text
    path = tmp_path / "pipeline.yaml"
    path.write_text(text.replace("  storage: {type: configmap}", f"  storage: {storage}"))
    return path


def run(path: Path, store: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stagecoach.cli.main", "run", str(path), "--store", str(store),
         "--auto-approve"],  # the example's sign-off gate
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **env},
    )


def run_dir(proc: subprocess.CompletedProcess[str]) -> Path:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


async def test_a_local_run_keeps_outputs_and_trace_in_s3(
    s3_server: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    storage = (f"{{type: s3, s3: {{bucket: {bucket}, prefix: runs, "
               f"endpoint: '{s3_server.endpoint}'}}}}")
    proc = run(manifest(tmp_path, storage), tmp_path / "runs", s3_server.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = run_dir(proc)
    prefix = run_prefix("runs", None, "battery-report", d.name)
    assert f"outputs and trace: s3://{bucket}/{prefix}/" in proc.stdout

    # the bucket holds the outputs and every writer's trace chunks
    store = S3Store(bucket, prefix=prefix, endpoint=s3_server.endpoint, environ=s3_server.env)
    keys = await store.list()
    assert {"outputs/research/1.json", "outputs/research/2.json", "outputs/scrape/1-0.json",
            "outputs/publish/1.json"} <= set(keys)
    assert any(k.startswith("trace/executor/") for k in keys)
    assert any(k.startswith("trace/runner-research-1-1/") for k in keys)
    research = decode_output(await store.get("outputs/research/2.json"))
    assert research.format == "json" and research.value["sources"]

    # the run directory: no outputs, but status, the complete trace export, output, report
    assert not (d / "outputs").exists()
    for name in ("pipeline.yaml", "status.json", "trace.jsonl", "output.txt", "report.html"):
        assert (d / name).is_file(), name
    status = json.loads((d / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    refs = {s["name"]: s.get("outputRef") for s in status["stages"]}
    assert refs["research"] == f"s3://{bucket}/{prefix}/outputs/research/2.json"
    exported = [json.loads(ln) for ln in (d / "trace.jsonl").read_text().splitlines()]
    assert exported == await store.read_trace()
    assert {"ProviderRetry", "Decision", "InputSnapshot", "OutputSnapshot", "OutputAssembled",
            "PipelineSucceeded"} <= {e["type"] for e in exported}
    assert "Solid-state batteries" in (d / "output.txt").read_text()
    trace = subprocess.run([sys.executable, "-m", "stagecoach.cli.main", "trace", str(d)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert trace.returncode == 0 and "goto research" in trace.stdout, trace.stderr

    # the same pipeline with local storage writes as many events of each type
    (tmp_path / "l").mkdir()
    local = run(manifest(tmp_path / "l", "{type: local}"), tmp_path / "local-runs", {})
    assert local.returncode == 0, local.stderr
    local_events = [json.loads(ln) for ln in
                    (run_dir(local) / "trace.jsonl").read_text().splitlines()]
    assert kinds(exported) == kinds(local_events)


def kinds(events: list[dict[str, object]]) -> list[tuple[str, str]]:
    return sorted((str(e["type"]), str(e.get("stage") or "")) for e in events)


def test_wrong_credentials_fail_the_run_cleanly(
    s3_server: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    storage = f"{{type: s3, s3: {{bucket: {bucket}, endpoint: '{s3_server.endpoint}'}}}}"
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": "wrong"}
    proc = run(manifest(tmp_path, storage), tmp_path / "runs", env)
    assert proc.returncode == 1
    assert f"access denied for bucket {bucket} (check credentials" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_missing_bucket_fails_the_run_cleanly(
    s3_server: SeaweedServer, tmp_path: Path
) -> None:
    storage = f"{{type: s3, s3: {{bucket: nowhere, endpoint: '{s3_server.endpoint}'}}}}"
    proc = run(manifest(tmp_path, storage), tmp_path / "runs", s3_server.env)
    assert proc.returncode == 1
    assert f"bucket nowhere does not exist at {s3_server.endpoint}" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_unreachable_endpoint_fails_the_run_cleanly(tmp_path: Path) -> None:
    storage = "{type: s3, s3: {bucket: runs, endpoint: 'http://127.0.0.1:9'}}"
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    proc = run(manifest(tmp_path, storage), tmp_path / "runs", env)
    assert proc.returncode == 1
    assert "cannot reach the object store at http://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
