"""The run directory's lock and the request/answer files (stagecoach.local.owner/control).

The owner is held in this process (a real flock on a real file); the verb side runs for
real too, signalling this process (SIGUSR1, which the owner makes harmless) and waiting
for the answer a thread writes the way the executor does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stagecoach.engine.control import ControlError
from stagecoach.local.control import send_approval, send_control
from stagecoach.local.owner import (
    CONTROL_DIR,
    MAX_REQUEST_BYTES,
    BadRequest,
    OwnerError,
    Request,
    RunOwner,
    owner_pid,
    parse_request,
    read_answer,
    write_request,
)


def make_run_dir(path: Path, phase: str = "Running") -> Path:
    path.mkdir()
    (path / "pipeline.yaml").write_text("kind: AgentPipeline\n")
    (path / "status.json").write_text(json.dumps(
        {"phase": phase, "reason": "Succeeded" if phase == "Succeeded" else None,
         "startedAt": "2026-12-02T10:00:00Z",
         "finishedAt": "2026-12-02T10:05:00Z" if phase != "Running" else None}))
    return path


@pytest.fixture
def owned(tmp_path: Path) -> Iterator[tuple[Path, RunOwner]]:
    d = make_run_dir(tmp_path / "run")
    owner = RunOwner.acquire(d)
    try:
        yield d, owner
    finally:
        owner.release()


class FakeExecutor:
    """Answers requests as the executor's desk does: reads the inbox, writes answers."""

    def __init__(self, owner: RunOwner, answer: str | None = "ok") -> None:
        self.owner, self.answer = owner, answer
        self.seen: list[Request | BadRequest] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.work, daemon=True)

    def work(self) -> None:
        while not self.stop.is_set():
            for req in self.owner.take_requests():
                self.seen.append(req)
                if self.answer is None:
                    continue
                if isinstance(req, BadRequest):
                    self.owner.answer(req.id, False, req.error)
                elif req.verb == "approve" and req.stage != "sign-off":
                    self.owner.answer(req.id, False, f"stage {req.stage} is not an approval "
                                      "stage (approval stages: sign-off)")
                else:
                    self.owner.answer(req.id, True, f"{self.answer} {req.verb} by {req.by}")
            time.sleep(0.01)

    def __enter__(self) -> FakeExecutor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_the_lock_names_its_owner_and_is_exclusive(tmp_path: Path) -> None:
    d = make_run_dir(tmp_path / "run")
    assert owner_pid(d) is None  # no .owner file yet
    owner = RunOwner.acquire(d)
    try:
        assert owner_pid(d) == os.getpid()
        assert (d / ".owner").read_text().strip() == str(os.getpid())
        with pytest.raises(OwnerError, match=rf"owned by another .* \(pid {os.getpid()}\)"):
            RunOwner.acquire(d)
    finally:
        owner.release()
    assert owner_pid(d) is None  # .owner still exists, nobody holds it
    RunOwner.acquire(d).release()  # free again


def test_verbs_without_an_owner_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="not a run directory"):
        send_control(tmp_path / "missing", "suspend")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ControlError, match="not a run directory"):
        send_control(tmp_path / "empty", "suspend")
    done = make_run_dir(tmp_path / "done", phase="Succeeded")
    with pytest.raises(ControlError) as err:
        send_approval(done, "sign-off", "Approve", {}, None, wait=1)
    assert str(err.value) == (f"no running `stagecoach run` owns {done}; it ended Succeeded "
                              "(Succeeded) at 2026-12-02T10:05:00Z")
    killed = make_run_dir(tmp_path / "killed", phase="Running")
    with pytest.raises(ControlError, match=r"last status is Running .* the process that ran "
                                           r"it is gone"):
        send_control(killed, "stop")
    assert not (done / CONTROL_DIR).exists()  # nothing was written into a finished run


def test_a_verb_reaches_the_owner_and_returns_its_answer(
        owned: tuple[Path, RunOwner]) -> None:
    d, owner = owned
    with FakeExecutor(owner) as ex:
        assert send_control(d, "suspend").startswith("ok suspend by ")
        assert send_approval(d, "sign-off", "Approve", {"channel": "blog"}, "fine",
                             wait=5).startswith("ok approve by ")
        with pytest.raises(ControlError, match="stage draft is not an approval stage"):
            send_approval(d, "draft", "Approve", {}, None, wait=5)
    approve = ex.seen[1]
    assert isinstance(approve, Request)
    assert (approve.stage, dict(approve.inputs), approve.message) == (
        "sign-off", {"channel": "blog"}, "fine")
    decision = approve.decision(__import__("datetime").datetime(2026, 12, 2))
    assert (decision.name, decision.decision, decision.approver) == (
        approve.id, "Approve", approve.by)
    assert sorted(p.name for p in (d / CONTROL_DIR).iterdir()) == []  # all consumed


def test_an_owner_that_does_not_answer_times_out(owned: tuple[Path, RunOwner]) -> None:
    d, owner = owned
    with FakeExecutor(owner, answer=None), pytest.raises(ControlError,
                                                         match=r"did not answer within 0\.3s"):
        send_control(d, "resume", wait=0.3)


def test_unknown_verb_is_refused_before_anything_is_written(
        owned: tuple[Path, RunOwner]) -> None:
    d, _ = owned
    with pytest.raises(ControlError, match="unknown verb 'pause'"):
        send_control(d, "pause")
    with pytest.raises(ControlError, match="Approve or Reject"):
        send_approval(d, "x", "Maybe", {}, None)
    assert list((d / CONTROL_DIR).iterdir()) == []


@pytest.mark.parametrize(("body", "error"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"{}", "'verb' is missing"),
    (b'{"verb": 3}', "'verb' must be a string"),
    (b'{"verb": "explode"}', "unknown verb 'explode'"),
    (b'{"verb": "approve"}', "'stage' is missing"),
    (b'{"verb": "approve", "stage": "s", "inputs": [1]}', "'inputs' must be an object"),
    (b'{"verb": "approve", "stage": "s", "inputs": {"a": 1}}', "'inputs' must be an object"),
    (b'{"verb": "stop", "by": {"x": 1}}', "'by' must be a string"),
    (b'{"verb": "reject", "stage": "s", "message": "' + b"m" * 5000 + b'"}', "longer than"),
    (b"{" + b" " * MAX_REQUEST_BYTES + b"}", "larger than"),
])
def test_garbage_requests_are_answered_with_an_error(owned: tuple[Path, RunOwner], body: bytes,
                                                      error: str) -> None:
    d, owner = owned
    (d / CONTROL_DIR / "123-garbage.request").write_bytes(body)
    [bad] = owner.take_requests()
    assert isinstance(bad, BadRequest) and bad.id == "123-garbage"
    assert error in bad.error and bad.error.startswith("malformed request: ")
    owner.answer(bad.id, False, bad.error)
    assert read_answer(d, "123-garbage") == (False, bad.error)
    assert read_answer(d, "123-garbage") is None  # read once, then removed


def test_special_files_and_bad_names_cannot_stall_or_crash_the_owner(
        owned: tuple[Path, RunOwner], tmp_path: Path) -> None:
    d, owner = owned
    control = d / CONTROL_DIR
    os.mkfifo(control / "fifo.request")  # opening it for reading would block forever
    secret = tmp_path / "secret"
    secret.write_text('{"verb": "terminate"}')
    (control / "link.request").symlink_to(secret)
    (control / "sub.request").mkdir()
    (control / "bad name!.request").write_text('{"verb": "stop"}')
    (control / ".hidden.tmp").write_text("half a request")
    write_request(d, Request(id="1-good", verb="stop", by="alice"))
    started = time.monotonic()
    found = {r.id: r for r in owner.take_requests()}
    assert time.monotonic() - started < 2
    assert isinstance(found.pop("1-good"), Request)
    assert set(found) == {"fifo", "link"}  # a directory is nobody's request: left alone
    assert all(isinstance(r, BadRequest) and "cannot read the request" in r.error
               for r in found.values())
    assert sorted(p.name for p in control.iterdir()) == [".hidden.tmp", "sub.request"]
    assert secret.exists()


def test_release_refuses_what_is_still_waiting(owned: tuple[Path, RunOwner]) -> None:
    d, owner = owned
    write_request(d, Request(id="7-late", verb="suspend"))
    owner.release("the run has ended")
    assert read_answer(d, "7-late") == (False, "the run has ended")
    assert owner_pid(d) is None


def test_parse_request_keeps_only_what_the_verb_needs() -> None:
    req = parse_request("1-x", b'{"verb": "suspend", "stage": "ignored", "by": "bob"}')
    assert (req.verb, req.stage, req.by) == ("suspend", None, "bob")
    with pytest.raises(ValueError, match="not an approval"):
        req.decision(__import__("datetime").datetime(2026, 12, 2))
