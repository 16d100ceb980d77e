"""``stagecoach run FILE --resume RUN_DIR``: start from what an earlier local run finished.

Every run directory ends with ``state.json`` (:meth:`RunDir.write_state`): the engine
state, without payloads, and the store its output references point into (the run
directory itself, or an S3 prefix). :func:`load_prior` reads it (and refuses a directory
that is still running, has no state, or holds garbage) into a :class:`PriorRun`;
:func:`stagecoach.engine.reusable` decides which stages are reused; :meth:`PriorRun.copy`
copies those outputs into the new run's store under the new run's keys and returns the
:class:`ResumeSeed` the executor applies before its first step. The earlier run's
directory and store are only ever read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..api import StoreRef
from ..engine import PriorStage, ReuseVerdict, load_state, prior_stages
from ..store import LocalStore, Store, decode_output, open_store, output_key
from .owner import OwnerError, owner_pid
from .rundir import STATE_VERSION, RunDir

__all__ = ["PriorRun", "ResumeError", "ResumeSeed", "load_prior"]


class ResumeError(Exception):
    """The earlier run cannot be resumed from; the message says why."""


@dataclass(frozen=True)
class ResumeSeed:
    """What the executor needs to mark the reused stages (``engine.apply_reuse``)."""

    verdict: ReuseVerdict
    prior: Mapping[str, PriorStage]
    """The reused stages' outputs with their references in the *new* run's store."""
    source: str
    source_uid: str


@dataclass(frozen=True)
class PriorRun:
    """An earlier run's final facts, read from its ``state.json``."""

    path: Path
    pipeline: str
    uid: str
    phase: str
    stages: dict[str, PriorStage]
    store_ref: StoreRef | None
    """None: the outputs are files in the run directory."""

    @property
    def source(self) -> str:
        """How the new run names it (``StageReused.source``): the run directory's name."""
        return self.path.name

    def open_store(self) -> Store:
        """The earlier run's store, for reading."""
        return LocalStore(self.path) if self.store_ref is None else open_store(self.store_ref)

    async def copy(self, verdict: ReuseVerdict, store: Store) -> ResumeSeed:
        """Copy the reused stages' outputs into ``store`` (iteration 1 of the new run)."""
        old = self.open_store()
        prior: dict[str, PriorStage] = {}
        for name in verdict.reused:
            stage = self.stages[name]
            if stage.fan_out and stage.instance_refs is not None:
                refs: list[str | None] = []
                values: list[Any] = []
                for index, ref in enumerate(stage.instance_refs):
                    key = output_key(name, 1, index)
                    values.append(await self._copy(old, ref, store, key) if ref else None)
                    refs.append(key if ref else None)
                prior[name] = replace(stage, instance_refs=tuple(refs), output=values)
            elif stage.output_ref:
                key = output_key(name, 1)
                value = await self._copy(old, stage.output_ref, store, key)
                prior[name] = replace(stage, output_ref=key, output=value)
            else:  # an approval's decision: kept in the state itself
                prior[name] = stage
        return ResumeSeed(verdict, prior, self.source, self.uid)

    @staticmethod
    async def _copy(old: Store, ref: str, new: Store, key: str) -> Any:
        data = await old.get(ref)
        value = decode_output(data).value
        await new.put(key, data)
        return value


def load_prior(path: Path) -> PriorRun:
    """Read an earlier run directory for ``--resume`` (ResumeError when it cannot be)."""
    path = Path(path)
    if not path.is_dir():
        raise ResumeError(f"{path}: not a run directory")
    try:
        pid = owner_pid(path)
    except OwnerError as e:
        raise ResumeError(str(e)) from None
    if pid is not None:
        raise ResumeError(f"{path} is still running (pid {pid}); resume from it once it "
                          "has ended")
    run_dir = RunDir(path)
    if not run_dir.state.is_file():
        has_status = run_dir.status.is_file()
        raise ResumeError(
            f"{path} has no state.json: " + ("it was written by a Stagecoach version that "
                                             "did not keep the run state, or the run was "
                                             "killed before it ended" if has_status else
                                             "not a run directory"))
    try:
        doc = run_dir.read_state()
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state.json version {doc.get('version')!r}")
        state = load_state(doc["state"])
        ref = StoreRef.model_validate(doc["store"]) if doc.get("store") else None
        pipeline, uid = str(doc["pipeline"]), str(doc["uid"])
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as e:
        raise ResumeError(f"{run_dir.state}: cannot be read ({type(e).__name__}: {e})") \
            from None
    return PriorRun(path, pipeline, uid, state.phase, prior_stages(state), ref)
