"""The durable run record: what the operator must not forget, in ``<pipeline>-state``.

kopf forgets per-handler progress when a handling cycle completes, and status is for
users (and is bounded, DESIGN §4), so the engine's run state lives in a ConfigMap
``<pipeline>-state`` owned by the pipeline, written only by the operator:

* ``state.json.gz`` (binaryData): :func:`~stagecoach.engine.dump_state`, gzipped
  (references, no payloads; outputs are reloaded from the store by reference after a
  restart). A 1,000-stage state shrinks about tenfold, which keeps the object far under
  half the 1 MiB ConfigMap limit (``tests/unit/operator/test_record.py`` prints sizes);
* ``pipeline.json``: the template the pipeline named, as it was when the run started,
  so later template edits never change a running pipeline. The pipeline's own spec is
  not copied: it is immutable after creation (a CRD rule), so the live object is the
  snapshot. (Records written by earlier versions, with the spec in ``pipeline.json``
  and a plain ``state.json``, still load.)
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

import base64
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from ..api import AgentPipeline, AgentPipelineTemplate
from ..engine import RunState, dump_state, load_state
from .jobs import MANAGED_BY, PIPELINE_LABEL, label_value, owner_reference, short_name

__all__ = ["RunRecord", "outbox_of", "parse_record", "record_body", "record_name"]


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
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Trace events of the step this state is the result of, saved with it: they reach
    the trace only after the state write won (a second operator whose write loses on
    resourceVersion never traces its plan), and a restart re-appends them (the trace
    is read exactly once, :mod:`stagecoach.store.trace`)."""

    def dump(self) -> tuple[dict[str, str], dict[str, str]]:
        """The ConfigMap's ``data`` and ``binaryData``."""
        tpl = None
        if self.template is not None:
            tpl = self.template.model_dump(by_alias=True, exclude_none=True, mode="json")
            tpl["metadata"] = {"name": self.template.metadata.name}
        state = json.dumps(_bounded(dump_state(self.state)), separators=(",", ":"),
                           default=str)
        packed = gzip.compress(state.encode(), compresslevel=6, mtime=0)
        binary = {"state.json.gz": base64.b64encode(packed).decode()}
        if self.outbox:
            events = json.dumps(self.outbox, separators=(",", ":"), default=str)
            binary["outbox.json.gz"] = base64.b64encode(
                gzip.compress(events.encode(), compresslevel=1, mtime=0)).decode()
        return ({"pipeline.json": json.dumps({"template": tpl}, separators=(",", ":")),
                 "jobs.json": json.dumps(sorted(self.jobs))}, binary)


MESSAGE_LIMIT = 512
"""Characters of an attempt's message kept in the persisted state (status shows it; the
full text is in the trace)."""
_DONE = {"Succeeded", "Failed", "Skipped"}


def _clip(text: Any, limit: int) -> Any:
    if isinstance(text, str) and len(text) > limit:
        return text[:limit] + f"… [{len(text) - limit} more characters in the trace]"
    return text


def _bounded(state: dict[str, Any]) -> dict[str, Any]:
    """The dumped state with its unbounded strings bounded: messages clipped, and the
    previous error (fed to the next attempt's prompt) dropped once no attempt follows."""
    for run in (state.get("stages") or {}).values():
        if "message" in run:
            run["message"] = _clip(run["message"], MESSAGE_LIMIT)
        for inst in run.get("instances") or []:
            inst["message"] = _clip(inst.get("message"), MESSAGE_LIMIT)
            if inst.get("phase") in _DONE:
                inst["previous_error"] = None
            else:
                inst["previous_error"] = _clip(inst.get("previous_error"), 4 * MESSAGE_LIMIT)
    if "message" in state:
        state["message"] = _clip(state["message"], 4 * MESSAGE_LIMIT)
    return state


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
    }
    body["data"], body["binaryData"] = record.dump()
    if record.resource_version:
        body["metadata"]["resourceVersion"] = record.resource_version
    return body


def parse_record(cm: dict[str, Any], pipeline: AgentPipeline,
                 outputs: dict[str, Any] | None = None) -> tuple[RunRecord, set[str]]:
    """A record from its ConfigMap and the live ``pipeline`` (its spec is the snapshot);
    also the output refs to load (call again with ``outputs`` to fill values in)."""
    data = cm.get("data") or {}
    snap = json.loads(data["pipeline.json"])
    packed = (cm.get("binaryData") or {}).get("state.json.gz")
    raw_state = json.loads(gzip.decompress(base64.b64decode(packed)) if packed
                           else data["state.json"])
    if snap.get("pipeline"):  # a record of an earlier version: it kept the spec too
        pipeline = AgentPipeline.model_validate(snap["pipeline"])
    tpl = AgentPipelineTemplate.model_validate(snap["template"]) if snap.get("template") else None
    state = load_state(raw_state, outputs)
    from ..engine import output_refs

    record = RunRecord(pipeline, tpl, state, set(json.loads(data.get("jobs.json", "[]"))),
                       cm.get("metadata", {}).get("resourceVersion"), outbox_of(cm))
    return record, output_refs(state)


def outbox_of(cm: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace events a saved record carries that may not be in the trace yet."""
    outbox = (cm.get("binaryData") or {}).get("outbox.json.gz")
    if not outbox:
        return []
    events = json.loads(gzip.decompress(base64.b64decode(outbox)))
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
