"""Who owns a local run directory, and the files the control verbs exchange with it.

The ``stagecoach run`` that created a run directory holds an exclusive ``fcntl.flock`` on
``RUN_DIR/.owner`` (which holds its pid) for its whole life: :class:`RunOwner`. A verb
(``stagecoach suspend RUN_DIR``, ``approve``, ...) asks :func:`owner_pid` whether someone
holds it, drops a request file into ``RUN_DIR/control/`` (:func:`write_request`, written
to a temporary name and renamed, so the owner never reads half of one), and wakes the
owner with ``SIGUSR1``. The owner reads every request (:meth:`RunOwner.take_requests`),
lets the engine judge it, and writes ``<id>.answer`` the verb is waiting for
(:meth:`RunOwner.answer`, :func:`read_answer`).

The requests come from anyone who can write into the run directory, so they are treated
as untrusted input: anything that is not a well-formed request (too large, not JSON, an
unknown verb, wrong types) becomes a :class:`BadRequest`, which the owner answers with an
error; it never stops the run. Local mode has no authentication: whoever can write the
run directory can control the run, and the approver recorded is what the verb says (the
local user name).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from ..engine.control import ApprovalDecision

__all__ = [
    "CONTROL_DIR",
    "CONTROL_VERBS",
    "OWNER_FILE",
    "WAKE_SIGNAL",
    "BadRequest",
    "OwnerError",
    "Request",
    "RunOwner",
    "owner_pid",
    "parse_request",
    "read_answer",
    "write_request",
]

OWNER_FILE = ".owner"
CONTROL_DIR = "control"
WAKE_SIGNAL = signal.SIGUSR1
CONTROL_VERBS = ("suspend", "resume", "stop", "terminate")
APPROVAL_VERBS = ("approve", "reject")
MAX_REQUEST_BYTES = 64 * 1024
_MAX_TEXT = 4096
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,80}$")
_REQUEST, _ANSWER = ".request", ".answer"

Handler = signal.Handlers | int | None | Any


class OwnerError(Exception):
    """The run directory cannot be owned (another process holds it, or I/O failed)."""


@dataclass(frozen=True)
class Request:
    """One verb for the owning run, as written by the CLI."""

    id: str
    verb: Literal["suspend", "resume", "stop", "terminate", "approve", "reject"]
    by: str | None = None
    stage: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The request file's JSON body."""
        return {"verb": self.verb, "by": self.by, "stage": self.stage,
                "inputs": dict(self.inputs), "message": self.message}

    def decision(self, at: datetime) -> ApprovalDecision:
        """The engine's form of an approve/reject request (named by the request id)."""
        if self.verb not in APPROVAL_VERBS or self.stage is None:
            raise ValueError(f"request {self.id} is not an approval")
        return ApprovalDecision(name=self.id, stage=self.stage,
                                decision="Approve" if self.verb == "approve" else "Reject",
                                approver=self.by, inputs=dict(self.inputs),
                                message=self.message, at=at)


@dataclass(frozen=True)
class BadRequest:
    """A request file that could not be understood; answered with ``error``."""

    id: str
    error: str


def _text(doc: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key!r} is missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"{key!r} is longer than {_MAX_TEXT} characters")
    return value


def parse_request(request_id: str, raw: bytes) -> Request:
    """A :class:`Request` from a request file's bytes; ValueError says what is wrong."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the request is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError("the request must be a JSON object")
    verb = _text(doc, "verb", required=True)
    if verb not in CONTROL_VERBS + APPROVAL_VERBS:
        raise ValueError(f"unknown verb {verb!r} (one of "
                         f"{', '.join(CONTROL_VERBS + APPROVAL_VERBS)})")
    stage = _text(doc, "stage", required=verb in APPROVAL_VERBS)
    inputs = doc.get("inputs") or {}
    if not isinstance(inputs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        raise ValueError("'inputs' must be an object of strings")
    if len(inputs) > 32:
        raise ValueError("more than 32 inputs")
    return Request(id=request_id, verb=verb,  # type: ignore[arg-type]
                   by=_text(doc, "by"), stage=stage if verb in APPROVAL_VERBS else None,
                   inputs=inputs, message=_text(doc, "message"))


# -- the verb's side -------------------------------------------------------------------
def owner_pid(run_dir: Path) -> int | None:
    """The pid of the process holding ``run_dir``'s lock, None when nobody holds it
    (0 when it is held but the pid cannot be read)."""
    path = Path(run_dir) / OWNER_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OwnerError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def new_request_id() -> str:
    """A unique, file-name-safe request id."""
    return f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}"


def write_request(run_dir: Path, request: Request) -> Path:
    """Write ``control/<id>.request`` atomically; its path."""
    control = Path(run_dir) / CONTROL_DIR
    control.mkdir(exist_ok=True)
    final = control / f"{request.id}{_REQUEST}"
    tmp = control / f".{request.id}.tmp"
    tmp.write_text(json.dumps(request.to_dict()), encoding="utf-8")
    os.replace(tmp, final)
    return final


def read_answer(run_dir: Path, request_id: str) -> tuple[bool, str] | None:
    """The owner's answer ``(ok, message)`` once written (then removed), else None."""
    path = Path(run_dir) / CONTROL_DIR / f"{request_id}{_ANSWER}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    try:
        doc = json.loads(raw)
        return bool(doc["ok"]), str(doc["message"])
    except (ValueError, KeyError, TypeError):
        return False, f"unreadable answer from the run: {raw[:200]!r}"


# -- the owner's side ------------------------------------------------------------------
def _read_regular(path: Path) -> bytes:
    """At most MAX_REQUEST_BYTES + 1 bytes of a regular file (never a FIFO or a device,
    never through a symlink: either would let a writer stall or redirect the run)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        return os.read(fd, MAX_REQUEST_BYTES + 1)
    finally:
        os.close(fd)


class RunOwner:
    """The lock on a run directory and its request inbox, held by ``stagecoach run``.

    >>> owner = RunOwner.acquire(run_dir)   # doctest: +SKIP
    >>> for req in owner.take_requests(): owner.answer(req.id, True, "done")  # +SKIP
    >>> owner.release("the run ended")      # doctest: +SKIP

    While held, ``SIGUSR1`` (what a verb sends) is ignored unless the executor handles
    it, so a verb can never kill the run by signalling it between two loops.
    """

    def __init__(self, run_dir: Path, fd: int, previous: Handler) -> None:
        self.run_dir = Path(run_dir)
        self.control = self.run_dir / CONTROL_DIR
        self._fd: int | None = fd
        self._previous = previous

    @classmethod
    def acquire(cls, run_dir: Path) -> RunOwner:
        """Take the lock (OwnerError if another process holds it) and write our pid."""
        path = Path(run_dir) / OWNER_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OwnerError(f"cannot create {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OwnerError(f"{run_dir} is owned by another running `stagecoach run` "
                             f"(pid {text or '?'})") from None
        previous = quiet_wake_signal()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        (Path(run_dir) / CONTROL_DIR).mkdir(exist_ok=True)
        return cls(run_dir, fd, previous)

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def take_requests(self) -> list[Request | BadRequest]:
        """Every request waiting in ``control/``, oldest first; the files are removed."""
        try:
            names = sorted(p.name for p in self.control.iterdir()
                           if p.name.endswith(_REQUEST) and not p.name.startswith(".")
                           and not (p.is_dir() and not p.is_symlink()))
        except OSError:
            return []
        out: list[Request | BadRequest] = []
        for name in names:
            request_id = name.removesuffix(_REQUEST)
            path = self.control / name
            raw, err = b"", None
            try:
                raw = _read_regular(path)
            except (OSError, ValueError) as e:
                err = f"cannot read the request: {getattr(e, 'strerror', None) or e}"
            with contextlib.suppress(OSError):
                path.unlink()
            if not _ID.match(request_id):
                continue  # no answer file can be named after it; nobody waits for it
            if err is not None:
                out.append(BadRequest(request_id, err))
                continue
            try:
                out.append(parse_request(request_id, raw))
            except ValueError as e:
                out.append(BadRequest(request_id, f"malformed request: {e}"))
        return out

    def answer(self, request_id: str, ok: bool, message: str) -> None:
        """Write ``control/<id>.answer`` atomically (what the waiting verb prints)."""
        if not _ID.match(request_id):
            return
        final = self.control / f"{request_id}{_ANSWER}"
        tmp = self.control / f".{request_id}.answer.tmp"
        try:
            tmp.write_text(json.dumps({"ok": ok, "message": message}), encoding="utf-8")
            os.replace(tmp, final)
        except OSError:
            pass  # the verb times out and says so; the run goes on

    def release(self, farewell: str | None = None) -> None:
        """Answer what is still waiting with ``farewell`` (a refusal), drop the lock."""
        if self._fd is None:
            return
        if farewell is not None:
            for req in self.take_requests():
                self.answer(req.id, False, farewell)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None
        restore_wake_signal(self._previous)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Nothing: the executor reads the inbox when its own handler is installed."""


def quiet_wake_signal() -> Handler:
    """Make ``SIGUSR1`` harmless (ignored) in this process; the previous handler."""
    try:
        return signal.signal(WAKE_SIGNAL, _ignore)
    except ValueError:  # not the main thread: leave the process's handlers alone
        return None


def restore_wake_signal(previous: Handler) -> None:
    """Undo :func:`quiet_wake_signal`."""
    if previous is None:
        return
    with contextlib.suppress(ValueError, TypeError):
        signal.signal(WAKE_SIGNAL, previous)
