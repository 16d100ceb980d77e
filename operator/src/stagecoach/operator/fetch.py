"""``stagecoach trace NAME -n NS``: one pipeline run read back from the cluster.

The status comes from the AgentPipeline, the events from every trace ConfigMap (merged
like a local run's ``trace.jsonl``), the outputs and the final output from the
ConfigMap store, the manifest from the run record's snapshot; the report then renders
exactly as for a local run directory. Read-only; all calls go through :class:`~.kube.Kube`.
"""

from __future__ import annotations

import asyncio
import json
import os

import yaml
from pydantic import ValidationError

from ..api import PipelineStatus, S3Storage
from ..report import RunData
from ..store import ConfigMapStore, NotFound, Store, StoreError, open_store, s3_store_ref
from ..store.trace import with_outbox
from .kube import Kube
from .reconciler import OUTPUT_KEY
from .record import outbox_of, record_name

__all__ = ["fetch_run"]


def fetch_run(name: str, namespace: str | None = None,
              kubeconfig: str | None = None) -> RunData:
    """The run of pipeline ``name`` (namespace default: ``$STAGECOACH_NAMESPACE`` or
    ``default``); ValueError when there is no such pipeline."""
    ns = namespace or os.environ.get("STAGECOACH_NAMESPACE") or "default"
    return asyncio.run(_fetch(name, ns, kubeconfig))


async def _fetch(name: str, ns: str, kubeconfig: str | None) -> RunData:
    try:
        kube = await Kube.connect(kubeconfig)
    except Exception as e:  # no kubeconfig, a broken one, no in-cluster config
        raise ValueError(f"{name}: no such run directory, and no cluster to ask "
                         f"({type(e).__name__}: {e})") from None
    try:
        return await _read(kube, name, ns)
    except StoreError as e:
        raise ValueError(f"{name}: cannot read the run from namespace {ns}: {e}") from None
    finally:
        await kube.close()


async def _read(kube: Kube, name: str, ns: str) -> RunData:
    body = await kube.get_pipeline(ns, name)
    if body is None:
        raise ValueError(f"{name}: no such run directory, and no AgentPipeline {name!r} "
                         f"in namespace {ns}")
    warnings: list[str] = []
    status = None
    try:
        status = PipelineStatus.model_validate(body.get("status") or {})
    except ValidationError as e:
        warnings.append(f"status: {e}")
    uid = body["metadata"].get("uid", "")
    s3 = ((body.get("spec") or {}).get("storage") or {}).get("s3")
    store: Store
    if s3 and body["spec"]["storage"].get("type") == "s3":
        # The bucket named by the pipeline, with this shell's AWS_* credentials.
        store = open_store(s3_store_ref(S3Storage.model_validate(s3), pipeline=name, uid=uid,
                                        namespace=ns))
        outputs = {k: await store.get(k) for k in await store.list("outputs/")}
    else:
        cms = ConfigMapStore(kube, ns, name, uid)
        outputs = await cms.read_all("outputs/")
        store = cms
    events = await store.read_trace()
    try:
        final = (await store.get(OUTPUT_KEY)).decode()
    except NotFound:
        final = None
    manifest = None
    record = await kube.get_configmap(ns, record_name(name))
    if record is not None:
        events = with_outbox(events, outbox_of(record))
    if record is not None and "pipeline.json" in (record.get("data") or {}):
        snap = json.loads(record["data"]["pipeline.json"])
        # The pipeline's spec is immutable: the live object is its snapshot (records of
        # earlier versions carried a copy).
        live = {k: v for k, v in body.items() if k != "status"}
        live["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items()
                            if k in ("name", "namespace", "uid")}
        manifest = yaml.safe_dump_all([d for d in (snap.get("template"),
                                                   snap.get("pipeline") or live) if d],
                                      sort_keys=False)
    budget = (body.get("spec") or {}).get("budget") or {}
    return RunData.from_parts(status, events, outputs, final, name=name,
                              manifest=manifest, max_tokens=budget.get("maxTokens"),
                              source=f"{ns}/{name}", warnings=warnings,
                              max_cost=budget.get("maxCost"))

