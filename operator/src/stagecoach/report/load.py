"""Reading a local run directory (DESIGN §5) into :class:`~stagecoach.report.model.RunData`.

The only module of the report package that touches files. Everything in the directory is
optional: a run killed early may have no ``status.json``, no merged ``trace.jsonl`` (then
the per-writer ``trace/*.jsonl`` records are merged here), no ``output.txt`` and no
``logs/`` (run stages' kept stdout and stderr). What cannot be read becomes a warning
shown in the report, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stagecoach.api import PipelineStatus
from stagecoach.store import merge_trace

from .model import RunData

__all__ = ["events_json_lines", "load_run", "parse_jsonl"]


def parse_jsonl(text: str, where: str, warnings: list[str]) -> list[dict[str, Any]]:
    """JSON objects, one per line; unreadable lines are skipped with a warning."""
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            warnings.append(f"{where}:{n}: not JSON ({e.msg}); line skipped")
            continue
        if isinstance(event, dict):
            out.append(event)
        else:
            warnings.append(f"{where}:{n}: not a JSON object; line skipped")
    return out


def _read_text(path: Path, warnings: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        warnings.append(f"{path.name}: cannot read ({e.strerror or e})")
        return None


def _status(run_dir: Path, warnings: list[str]) -> PipelineStatus | None:
    text = _read_text(run_dir / "status.json", warnings)
    if text is None:
        warnings.append("status.json is missing: phase and times are inferred from the trace")
        return None
    try:
        return PipelineStatus.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        warnings.append(f"status.json is invalid ({where}: {first.get('msg')}); "
                        "phase and times are inferred from the trace")
        return None


def _events(run_dir: Path, warnings: list[str]) -> list[dict[str, Any]]:
    text = _read_text(run_dir / "trace.jsonl", warnings)
    if text is not None:
        return parse_jsonl(text, "trace.jsonl", warnings)
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((run_dir / "trace").glob("*.jsonl")):
        body = _read_text(path, warnings)
        if body is not None:
            records[path.stem] = parse_jsonl(body, f"trace/{path.name}", warnings)
    if records:
        warnings.append("trace.jsonl is missing: merged the per-writer records in trace/")
    else:
        warnings.append("no trace: neither trace.jsonl nor trace/*.jsonl exists")
    return merge_trace(records)


def _outputs(run_dir: Path, warnings: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    root = run_dir / "outputs"
    for path in sorted(root.glob("*/*.json")):
        try:
            out[f"outputs/{path.parent.name}/{path.name}"] = path.read_bytes()
        except OSError as e:
            warnings.append(f"outputs/{path.parent.name}/{path.name}: cannot read ({e})")
    return out


def _logs(run_dir: Path) -> list[str]:
    """Kept run-stage logs, relative to the run directory (``logs/<stage>/<file>``)."""
    return sorted(f"logs/{p.parent.name}/{p.name}" for p in (run_dir / "logs").glob("*/*")
                  if p.suffix in (".stdout", ".stderr") and p.is_file())


Facts = tuple[str | None, int | None, str | None]
"""(metadata.name, spec.budget.maxTokens, spec.budget.maxCost)."""


def _manifest_facts(text: str | None) -> Facts:
    """:data:`Facts` of the resolved manifest, when readable."""
    if not text:
        return None, None, None
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    meta, spec = doc.get("metadata"), doc.get("spec")
    name = meta.get("name") if isinstance(meta, dict) else None
    budget = spec.get("budget") if isinstance(spec, dict) else None
    max_tokens = budget.get("maxTokens") if isinstance(budget, dict) else None
    max_cost = budget.get("maxCost") if isinstance(budget, dict) else None
    return (name if isinstance(name, str) else None,
            max_tokens if isinstance(max_tokens, int) else None,
            max_cost if isinstance(max_cost, str) else None)


def load_run(run_dir: Path, *, events: list[dict[str, Any]] | None = None,
             facts: Facts | None = None) -> RunData:
    """Read a local run directory (every file optional) into :class:`RunData`.

    What the caller already holds need not be read again: ``events``, the merged trace
    (``stagecoach run`` has it in memory), and ``facts``, the pipeline's name and
    budget (:data:`Facts`; else parsed from ``pipeline.yaml``).
    """
    run_dir = Path(run_dir)
    warnings: list[str] = []
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    status = _status(run_dir, warnings)
    if events is None:
        events = _events(run_dir, warnings)
    manifest = _read_text(run_dir / "pipeline.yaml", warnings)
    name, max_tokens, max_cost = facts if facts is not None else _manifest_facts(manifest)
    if name is None:
        name = next((str(e["pipeline"]) for e in events if e.get("pipeline")), None)
    final_output = _read_text(run_dir / "output.txt", warnings)
    return RunData.from_parts(status, events, _outputs(run_dir, warnings), final_output,
                              name=name or run_dir.name, manifest=manifest,
                              max_tokens=max_tokens, source=str(run_dir), warnings=warnings,
                              logs=_logs(run_dir), max_cost=max_cost)


def events_json_lines(events: Iterable[dict[str, Any]]) -> str:
    """The events as JSON lines (what ``stagecoach trace --json`` prints)."""
    return "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)
