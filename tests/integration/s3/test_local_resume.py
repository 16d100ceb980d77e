"""``stagecoach run --resume`` when the outputs live in S3 (SeaweedFS): the reused
outputs are copied from the earlier run's prefix into the new run's, the earlier prefix
is only read, and a run with local storage can resume from a bucket run too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagecoach.store import S3Store, run_prefix

from tests.fixtures.seaweed import SeaweedServer

pytestmark = pytest.mark.s3

PY = sys.executable


def _manifest(tmp: Path, storage: dict[str, Any]) -> Path:
    flag = tmp / "flag"
    build = (f"import json, os, pathlib\nassert pathlib.Path({str(flag)!r}).exists()\n"
             "inp = json.load(open(os.environ['STAGECOACH_INPUT']))\n"
             "json.dump({'n': inp['stages']['plan']['output']['n'],"
             " 'by': inp['stages']['gate']['output']['approver']},"
             " open(os.environ['STAGECOACH_OUTPUT'], 'w'))")
    docs = [
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
         "metadata": {"name": "replay"},
         "spec": {"type": "replay", "cassette": {"path": "cassette.yaml"}}},
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
         "metadata": {"name": "s3res"},
         "spec": {"storage": storage,
                  "defaults": {"provider": "replay", "retry": {"limit": 0}}, "stages": [
                      {"name": "plan", "agent": {"prompt": "plan",
                                                 "output": {"format": "json"}}},
                      {"name": "gate", "dependsOn": ["plan"],
                       "approval": {"message": "n = {{ stages.plan.output.n }}?"}},
                      {"name": "build", "dependsOn": ["gate"],
                       "run": {"image": "python", "command": [PY, "-c", build],
                               "output": {"format": "json"}}}]}}]
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    entries = [{"stage": "plan", "response": {"content": '{"n": 7}',
                                              "usage": {"input": 1, "output": 1}}}]
    (tmp / "cassette.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette",
         "entries": entries if not flag.exists() else []}))
    return path


def _run(path: Path, store: Path, env: dict[str, str],
         *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "stagecoach.cli.main", "run", str(path), "--store",
                           str(store), "--auto-approve", *args], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, **env})


def _run_dir(proc: subprocess.CompletedProcess[str]) -> Path:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


async def _contents(store: S3Store) -> dict[str, bytes]:
    return {k: await store.get(k) for k in await store.list()}


async def test_resume_copies_reused_outputs_between_bucket_prefixes(
    s3_server: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    storage = {"type": "s3", "s3": {"bucket": bucket, "prefix": "runs",
                                    "endpoint": s3_server.endpoint}}
    first = _run(_manifest(tmp_path, storage), tmp_path / "runs", s3_server.env)
    assert first.returncode == 1, first.stdout + first.stderr  # build has no flag yet
    old = _run_dir(first)
    old_store = S3Store(bucket, prefix=run_prefix("runs", None, "s3res", old.name),
                        endpoint=s3_server.endpoint, environ=s3_server.env)
    before = await _contents(old_store)
    assert "outputs/plan/1.json" in before and "outputs/gate/1.json" in before
    state = json.loads((old / "state.json").read_text())
    assert state["store"]["type"] == "s3" and state["store"]["bucket"] == bucket

    (tmp_path / "flag").touch()  # and the cassette is now empty: plan must not be called
    second = _run(_manifest(tmp_path, storage), tmp_path / "runs", s3_server.env,
                  "--resume", str(old))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "  reused: plan, gate\n" in second.stdout
    new = _run_dir(second)
    new_store = S3Store(bucket, prefix=run_prefix("runs", None, "s3res", new.name),
                        endpoint=s3_server.endpoint, environ=s3_server.env)
    after = await _contents(new_store)
    assert after["outputs/plan/1.json"] == before["outputs/plan/1.json"]
    assert json.loads(after["outputs/build/1.json"])["value"] == {"n": 7, "by": "auto-approve"}
    assert await _contents(old_store) == before  # the earlier run is only read
    status = json.loads((new / "status.json").read_text())
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["plan"]["reason"] == "Reused"
    assert stages["plan"]["outputRef"] == f"s3://{bucket}/{new_store.prefix}/outputs/plan/1.json"

    # a run with local storage resumes from the bucket run: outputs land in its directory
    local = _run(_manifest(tmp_path, {"type": "local"}), tmp_path / "local", s3_server.env,
                 "--resume", str(old))
    assert local.returncode == 0, local.stdout + local.stderr
    d = _run_dir(local)
    assert (d / "outputs/plan/1.json").read_bytes() == before["outputs/plan/1.json"]
    assert await _contents(old_store) == before
