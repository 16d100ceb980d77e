"""The durable run record: what the operator must not forget, in ``<pipeline>-state``.

kopf forgets per-handler progress when a handling cycle completes, and status is for
users (and is bounded, DESIGN §4), so the engine's run state lives in a ConfigMap
``<pipeline>-state`` owned by the pipeline, written only by the operator:

* ``state.json``: :func:`~stagecoach.engine.dump_state` (references, no payloads;
  outputs are reloaded from the store by reference after a restart);
* ``pipeline.json``: the pipeline's spec *and* the template it named, as they were when
  the run started: the resolved-pipeline snapshot, so later template edits never change
  a running pipeline (the pipeline's own spec is immutable after creation: a CRD rule);
* ``jobs.json``: the Jobs this run has created (seen by the API server). A Running
  attempt whose Job is missing is *deleted* (a failed attempt, ``Error``) when its name
  is here, and *not created yet* (the operator died between persisting the state and
  creating the Job: create it now) when it is not.

Why a ConfigMap and not ``status``: the state holds every forEach instance and every
counter, which can outgrow what belongs in a status users read; a separate object also
lets the operator write it with optimistic concurrency (``resourceVersion``) *before*
creating Jobs, without racing its own status patches. No side effects here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..api import AgentPipeline, AgentPipelineTemplate
from ..engine import RunState, dump_state, load_state
from .jobs import MANAGED_BY, PIPELINE_LABEL, label_value, owner_reference, short_name

__all__ = ["RunRecord", "parse_record", "record_body", "record_name"]


def record_name(pipeline: str) -> str:
    """``<pipeline>-state`` (shortened with a hash when too long)."""
    return short_name(f"{pipeline}-state", 253)


@dataclass
class RunRecord:
    """One pipeline run as persisted."""

    pipeline: AgentPipeline
    template: AgentPipelineTemplate | None
    state: RunState
    jobs: set[str] = field(default_factory=set)
    resource_version: str | None = None

    def dump(self) -> dict[str, str]:
        """The ConfigMap's ``data``."""
        pipe = self.pipeline.model_dump(by_alias=True, exclude_none=True, mode="json",
                                        exclude={"status"})
        meta = self.pipeline.metadata
        pipe["metadata"] = {k: v for k, v in {"name": meta.name, "namespace": meta.namespace,
                                              "uid": meta.uid}.items() if v}
        tpl = None
        if self.template is not None:
            tpl = self.template.model_dump(by_alias=True, exclude_none=True, mode="json")
            tpl["metadata"] = {"name": self.template.metadata.name}
        snap = {"pipeline": pipe, "template": tpl}
        return {
            "state.json": json.dumps(dump_state(self.state), separators=(",", ":"),
                                     default=str),
            "pipeline.json": json.dumps(snap, separators=(",", ":")),
            "jobs.json": json.dumps(sorted(self.jobs)),
        }


def record_body(record: RunRecord, namespace: str) -> dict[str, Any]:
    """The ``<pipeline>-state`` ConfigMap for ``record``."""
    meta = record.pipeline.metadata
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": record_name(meta.name), "namespace": namespace,
            "labels": {MANAGED_BY: "stagecoach", PIPELINE_LABEL: label_value(meta.name),
                       "stagecoach.dev/kind": "state"},
            "ownerReferences": [owner_reference(meta.name, meta.uid or "")],
        },
        "data": record.dump(),
    }
    if record.resource_version:
        body["metadata"]["resourceVersion"] = record.resource_version
    return body


def parse_record(cm: dict[str, Any],
                 outputs: dict[str, Any] | None = None) -> tuple[RunRecord, set[str]]:
    """A record from its ConfigMap; also the output refs to load (call again with
    ``outputs`` to fill values in)."""
    data = cm.get("data") or {}
    snap = json.loads(data["pipeline.json"])
    raw_state = json.loads(data["state.json"])
    pipeline = AgentPipeline.model_validate(snap["pipeline"])
    tpl = AgentPipelineTemplate.model_validate(snap["template"]) if snap.get("template") else None
    state = load_state(raw_state, outputs)
    from ..engine import output_refs

    record = RunRecord(pipeline, tpl, state, set(json.loads(data.get("jobs.json", "[]"))),
                       cm.get("metadata", {}).get("resourceVersion"))
    return record, output_refs(state)
