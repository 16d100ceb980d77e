"""Outputs over the ConfigMap limit on the cluster, against the real SeaweedFS: a pipeline
with ``spec.storage`` s3 keeps a 2 MiB output in the bucket; a ConfigMap-store pipeline,
with the operator's default storage (``STAGECOACH_DEFAULT_STORAGE``) naming a bucket,
spills it there and leaves a pointer ConfigMap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stagecoach.api import StoreRef
from stagecoach.store import S3Store, decode_output

from tests.e2e.conftest import Kubectl, Operator
from tests.fixtures.seaweed import SeaweedServer

pytestmark = pytest.mark.cluster

SIZE = 2 * 1024 * 1024
WRITE_BIG = (f"import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('x' * {SIZE})")


def big_pipeline(storage: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"stages": [{"name": "big", "run": {
        "image": "python:3.12-slim", "command": ["python3", "-c"], "args": [WRITE_BIG]}}]}
    if storage is not None:
        spec["storage"] = storage
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": "big"}, "spec": spec}


def secret(s3: SeaweedServer) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
            "stringData": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}}


async def read_object(s3: SeaweedServer, bucket: str, prefix: str, key: str) -> Any:
    store = S3Store.from_ref(StoreRef(type="s3", bucket=bucket, prefix=prefix,
                                      endpoint=s3.endpoint), environ=s3.env)
    return decode_output(await store.get(key)).value


def default_bucket(s3: SeaweedServer, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket as the operator's default storage (ConfigMaps spilling into it
    under ``overflow/``), with the operator's own credentials."""
    bucket = s3.create_bucket(name)
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("STAGECOACH_DEFAULT_STORAGE", json.dumps({
        "type": "configmap", "s3": {"bucket": bucket, "prefix": "overflow",
                                    "endpoint": s3.endpoint, "region": "",
                                    "credentialsSecret": "s3-creds"}}))
    return bucket


def run_big(kubectl: Kubectl, op: Operator, *docs: dict[str, Any]) -> dict[str, Any]:
    op.start()
    try:
        kubectl.apply(*docs)
        obj = kubectl.wait_phase("big", {"Succeeded", "Failed", "Invalid"}, timeout=120,
                                 operator=op)
    finally:
        op.kill()
    status = obj["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + op.logs()[-3000:]
    return obj


async def test_s3_storage_holds_an_output_over_the_configmap_limit(
        crds: object, kube_namespace: str, kubectl: Kubectl, s3_server: SeaweedServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.create_bucket(f"big-{kube_namespace}")
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)  # the operator's own credentials
    storage = {"type": "s3", "s3": {"bucket": bucket, "prefix": "runs",
                                    "endpoint": s3_server.endpoint,
                                    "credentialsSecret": "s3-creds"}}
    obj = run_big(kubectl, Operator(kubectl.cluster, kube_namespace, tmp_path),
                  secret(s3_server), big_pipeline(storage))
    prefix = f"runs/{kube_namespace}/big/{obj['metadata']['uid']}"
    (stage,) = obj["status"]["stages"]
    assert stage["outputRef"] == f"s3://{bucket}/{prefix}/outputs/big/1.json"
    assert await read_object(s3_server, bucket, prefix, "outputs/big/1.json") == "x" * SIZE
    names = {c["metadata"]["name"] for c in kubectl.items("configmaps")}
    assert not any(n.startswith("big-big") for n in names)  # nothing in ConfigMaps


async def test_configmap_store_spills_to_the_default_bucket(
        crds: object, kube_namespace: str, kubectl: Kubectl, s3_server: SeaweedServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = default_bucket(s3_server, f"spill-{kube_namespace}", monkeypatch)
    obj = run_big(kubectl, Operator(kubectl.cluster, kube_namespace, tmp_path),
                  secret(s3_server), big_pipeline())
    prefix = f"overflow/{kube_namespace}/big/{obj['metadata']['uid']}"
    assert obj["status"]["traceRef"] == "configmap:big-trace"  # the trace stays
    pointer = json.loads(kubectl.get("configmap", "big-big-1")["data"]["1.json"])
    assert pointer["stagecoach.dev/spilled"] == f"s3://{bucket}/{prefix}/outputs/big/1.json"
    assert pointer["key"] == "outputs/big/1.json" and pointer["size"] > SIZE
    assert await read_object(s3_server, bucket, prefix, "outputs/big/1.json") == "x" * SIZE


async def test_a_cached_output_over_the_configmap_limit_spills_and_answers_the_next_run(
        crds: object, kube_namespace: str, kubectl: Kubectl, s3_server: SeaweedServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = default_bucket(s3_server, f"cache-{kube_namespace}", monkeypatch)
    doc = big_pipeline()
    doc["spec"]["stages"][0]["cache"] = {"ttl": "1h"}
    op = Operator(kubectl.cluster, kube_namespace, tmp_path)
    run_big(kubectl, op, secret(s3_server), doc)
    [entry] = kubectl.items("configmaps", "-l", "stagecoach.dev/kind=cache")
    pointer = json.loads(next(iter(entry["data"].values())))
    key = pointer["key"]
    cache_prefix = f"overflow/{kube_namespace}/stagecoach-cache"
    assert pointer["stagecoach.dev/spilled"] == f"s3://{bucket}/{cache_prefix}/{key}"
    store = S3Store.from_ref(StoreRef(type="s3", bucket=bucket, prefix=cache_prefix,
                                      endpoint=s3_server.endpoint), environ=s3_server.env)
    cached = json.loads(await store.get(key))
    assert cached["value"] == "x" * SIZE and cached["from"]["pipeline"] == "big"
    # The same stage in a second pipeline: answered from the spilled entry, no Job, and
    # its own output spills too (under its own prefix).
    doc["metadata"]["name"] = "big2"
    op.start()
    try:
        kubectl.apply(doc)
        obj = kubectl.wait_phase("big2", {"Succeeded", "Failed", "Invalid"}, timeout=120,
                                 operator=op)
    finally:
        op.kill()
    stage = obj["status"]["stages"][0]
    assert obj["status"]["phase"] == "Succeeded" and stage["reason"] == "Cached", stage
    assert kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=big2") == []
    prefix = f"overflow/{kube_namespace}/big2/{obj['metadata']['uid']}"
    assert await read_object(s3_server, bucket, prefix, "outputs/big/1.json") == "x" * SIZE
