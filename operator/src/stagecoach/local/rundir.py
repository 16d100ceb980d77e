"""The local run directory (DESIGN §5) and what goes into it besides the store's keys.

``<store>/<pipeline>-<yyyymmddThhmmss>/`` holds ``pipeline.yaml`` (resolved),
``status.json``, ``state.json`` (the engine state and where its outputs are, for
``--resume``), ``trace.jsonl``, ``outputs/<stage>/<iteration>[-<index>].json`` (written
by the runner through the local store), ``output.txt``, ``report.html`` and ``logs/``
(run stages' stdout and stderr, ``<stage>/<iteration>[-<index>]-<attempt>.stdout|.stderr``),
``.owner`` (locked by the live ``stagecoach run``, :mod:`.owner`) and ``control/`` (the
verbs' requests and answers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..api import PipelineStatus

__all__ = ["STATE_VERSION", "RunDir", "new_run_dir"]

STATE_VERSION = 1
"""Version of ``state.json``'s layout."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def state(self) -> Path:
        """The engine state at the end (what ``--resume`` reads)."""
        return self.path / "state.json"

    @property
    def trace(self) -> Path:
        return self.path / "trace.jsonl"

    @property
    def output(self) -> Path:
        return self.path / "output.txt"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def manifest(self) -> Path:
        return self.path / "pipeline.yaml"

    @property
    def logs(self) -> Path:
        """Run stages' kept stdout and stderr."""
        return self.path / "logs"

    def _atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def write_status(self, status: PipelineStatus, *, unless: str | None = None) -> str:
        """Replace ``status.json``, unless its text would be ``unless`` (what the caller
        wrote last: the file already says it). Returns the text."""
        text = status.model_dump_json(by_alias=True, exclude_none=True, indent=2)
        if text != unless:
            self._atomic(self.status, text)
        return text

    def write_state(self, pipeline: str, uid: str, state: dict[str, Any],
                    store: dict[str, Any] | None) -> None:
        """Replace ``state.json``: ``state`` is ``engine.dump_state`` output, ``store`` the
        StoreRef its references point into (None: this directory)."""
        doc = {"version": STATE_VERSION, "pipeline": pipeline, "uid": uid,
               "store": store, "state": state}
        # Compact: json's C encoder (an indented dump runs the pure-Python one).
        self._atomic(self.state, json.dumps(doc, ensure_ascii=False, default=str,
                                            separators=(",", ":")))

    def read_state(self) -> dict[str, Any]:
        """``state.json`` as written (ValueError when it is not a JSON object)."""
        doc = json.loads(self.state.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("state.json is not a JSON object")
        return doc

    def write_manifest(self, doc: dict[str, Any]) -> None:
        """Write the resolved pipeline."""
        self._atomic(self.manifest, yaml.dump(
            doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, width=100))

    def write_trace(self, events: list[dict[str, Any]]) -> None:
        """Write the merged trace, one JSON event per line."""
        lines = [json.dumps(e, ensure_ascii=False, default=str) for e in events]
        self._atomic(self.trace, "\n".join(lines) + ("\n" if lines else ""))

    def write_output(self, text: str) -> None:
        """Write the final assembled output."""
        self._atomic(self.output, text)


def new_run_dir(store: Path, pipeline: str, now: datetime) -> RunDir:
    """Create ``<store>/<pipeline>-<yyyymmddThhmmss>`` (suffixed when taken)."""
    base = f"{pipeline}-{now.strftime('%Y%m%dT%H%M%S')}"
    store.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = store / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return RunDir(path)
    raise RuntimeError(f"cannot create a run directory under {store}")
