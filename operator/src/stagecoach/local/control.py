"""Run control for local runs: the verbs reach the ``stagecoach run`` that owns RUN_DIR.

``stagecoach suspend|resume|stop|terminate RUN_DIR`` and ``stagecoach approve|reject
RUN_DIR STAGE`` end here (from :mod:`stagecoach.cli.control`). Each checks that a live
``stagecoach run`` holds the directory's lock, writes a request file, signals the owner
and waits for its answer (the protocol is in :mod:`.owner`): the text returned is what
the CLI prints; a refusal (the engine's message, or why nobody can answer) is a
:class:`ControlError`.

Local mode has no authentication: anyone who can write the run directory can control
the run, and the approver recorded is the local user name (``getpass.getuser()``), as
the process running the verb reports it.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

from ..engine.control import ControlError
from .owner import (
    CONTROL_VERBS,
    WAKE_SIGNAL,
    OwnerError,
    Request,
    new_request_id,
    owner_pid,
    read_answer,
    write_request,
)

__all__ = ["CONTROL_WAIT", "local_user", "send_approval", "send_control"]

CONTROL_WAIT = 10.0
"""Seconds a control verb waits for the run's answer."""
_POLL = 0.05


def local_user() -> str:
    """Who decides, locally: the login name (no authentication in local mode)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _ended(run_dir: Path) -> str:
    """Why nobody answers: how the run ended, from its status.json."""
    lead = f"no running `stagecoach run` owns {run_dir}"
    try:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{lead} (and its status.json cannot be read)"
    if not isinstance(status, dict):
        return f"{lead} (and its status.json is not an object)"
    phase = status.get("phase") or "?"
    reason = f" ({status['reason']})" if status.get("reason") else ""
    if phase in {"Succeeded", "Failed", "Cancelled", "Invalid"}:
        return f"{lead}; it ended {phase}{reason} at {status.get('finishedAt') or '?'}"
    return (f"{lead}; its last status is {phase}{reason} (started "
            f"{status.get('startedAt') or '?'}): the process that ran it is gone")


def _owner(run_dir: Path) -> int:
    if not run_dir.is_dir():
        raise ControlError(f"{run_dir}: not a run directory")
    if not (run_dir / "status.json").is_file() and not (run_dir / "pipeline.yaml").is_file():
        raise ControlError(f"{run_dir}: not a run directory (no status.json or pipeline.yaml)")
    try:
        pid = owner_pid(run_dir)
    except OwnerError as e:
        raise ControlError(str(e)) from None
    if pid is None:
        raise ControlError(_ended(run_dir))
    if pid <= 0:
        raise ControlError(f"{run_dir} is locked but its owner's pid cannot be read")
    return pid


def _ask(run_dir: Path, request: Request, wait: float) -> str:
    run_dir = Path(run_dir)
    pid = _owner(run_dir)
    try:
        write_request(run_dir, request)
    except OSError as e:
        raise ControlError(f"cannot write the request into {run_dir}: {e.strerror or e}") \
            from None
    try:
        os.kill(pid, WAKE_SIGNAL)
    except ProcessLookupError:
        raise ControlError(_ended(run_dir)) from None
    except PermissionError:
        raise ControlError(f"the run owning {run_dir} (pid {pid}) belongs to another user") \
            from None
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        answer = read_answer(run_dir, request.id)
        if answer is not None:
            ok, message = answer
            if not ok:
                raise ControlError(message)
            return message
        if owner_pid(run_dir) is None:
            answer = read_answer(run_dir, request.id)
            if answer is not None:
                continue
            raise ControlError(_ended(run_dir))
        if time.monotonic() >= deadline:
            raise ControlError(f"the run owning {run_dir} (pid {pid}) did not answer within "
                               f"{wait:g}s; the request stays queued for it")
        time.sleep(_POLL)


def send_control(run_dir: Path, verb: str, *, wait: float = CONTROL_WAIT) -> str:
    """suspend|resume|stop|terminate for the local process owning ``run_dir``."""
    if verb not in CONTROL_VERBS:
        raise ControlError(f"unknown verb {verb!r} (one of {', '.join(CONTROL_VERBS)})")
    request = Request(id=new_request_id(), verb=verb,  # type: ignore[arg-type]
                      by=local_user())
    return _ask(Path(run_dir), request, wait)


def send_approval(run_dir: Path, stage: str, decision: str, inputs: dict[str, str],
                  message: str | None, *, wait: float = 30.0) -> str:
    """Approve or reject ``stage`` of the local run owning ``run_dir``; the answer.

    The approver is the local user (local mode has no authentication)."""
    if decision not in {"Approve", "Reject"}:
        raise ControlError(f"decision must be Approve or Reject, got {decision!r}")
    request = Request(id=new_request_id(),
                      verb="approve" if decision == "Approve" else "reject",
                      by=local_user(), stage=stage, inputs=dict(inputs), message=message)
    return _ask(Path(run_dir), request, wait)
