"""Controlling a local run (DESIGN §9) as a user does: ``stagecoach run`` in one process,
``stagecoach suspend|resume|stop|terminate|approve|reject RUN_DIR`` from others.

Slow stages are ``run`` stages that wait for a file the test creates (or sleep), so no
assertion depends on how fast the machine is: the tests wait for states, never for time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

PY = sys.executable
STAGECOACH = [PY, "-m", "stagecoach.cli.main"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STAGECOACH, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def stage(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A run stage executing Python ``code`` (``out(value)`` writes its JSON output)."""
    prelude = ("import json, os, sys, time, pathlib\n"
               "def out(v): json.dump(v, open(os.environ['STAGECOACH_OUTPUT'], 'w'))\n"
               "inp = json.load(open(os.environ['STAGECOACH_INPUT']))\n")
    return {"name": name, "run": {"image": "python", "command": [PY, "-c", prelude + code],
                                  "output": {"format": "json"}}, **extra}


def wait_for(path: Path) -> str:
    """Python that blocks until ``path`` exists (the test releases the stage)."""
    return f"while not pathlib.Path({str(path)!r}).exists(): time.sleep(0.05)\n"


def manifest(tmp: Path, spec: dict[str, Any], name: str = "ctl") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "stagecoach.dev/v1alpha1",
                                    "kind": "AgentPipeline", "metadata": {"name": name},
                                    "spec": spec}, sort_keys=False))
    return path


class LocalRun:
    """``stagecoach run`` as a subprocess, with what the tests ask of it."""

    def __init__(self, path: Path, store: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*STAGECOACH, "run", str(path), "--store", str(store),
                                      *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.store = store
        self.out = self.err = ""
        self.dir = self._run_dir()

    def _run_dir(self) -> Path:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [d for d in self.store.glob("*") if (d / ".owner").exists()
                     and (d / "status.json").exists()]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.finish()
        raise AssertionError(f"no run directory appeared:\n{self.out}\n{self.err}")

    def status(self) -> dict[str, Any]:
        for _ in range(50):
            try:
                return dict(json.loads((self.dir / "status.json").read_text()))
            except (OSError, ValueError):  # replaced atomically, but be patient
                time.sleep(0.02)
        raise AssertionError("status.json unreadable")

    def stages(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.status()["stages"]}

    def until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                self.finish()
                raise AssertionError(f"run ended before {what}:\n{self.out}\n{self.err}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.status()}")

    def phase_of(self, name: str, phase: str) -> None:
        self.until(f"{name} {phase}", lambda: self.stages()[name]["phase"] == phase)

    def finish(self, timeout: float = 120) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.out, self.err = self.out + out, self.err + err
        assert "Traceback" not in self.err, self.err
        return self.proc.returncode

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in (self.dir / "trace.jsonl").read_text().splitlines()]


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[LocalRun]]:
    started: list[LocalRun] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.communicate()


def start(runs: list[LocalRun], path: Path, store: Path, *args: str) -> LocalRun:
    r = LocalRun(path, store, *args)
    runs.append(r)
    return r


def test_suspend_holds_new_stages_and_resume_completes(tmp_path: Path,
                                                       runs: list[LocalRun]) -> None:
    gate = tmp_path / "release-a"
    spec = {"stages": [stage("a", wait_for(gate) + "out({'a': 1})"),
                       stage("b", "out({'b': 2})", dependsOn=["a"])]}
    r = start(runs, manifest(tmp_path, spec), tmp_path / "runs")
    r.phase_of("a", "Running")
    sus = cli("suspend", str(r.dir))
    assert sus.returncode == 0, sus.stderr
    assert sus.stdout == "suspended: no new attempt starts; 1 running attempt finishes\n"
    assert r.status()["phase"] == "Suspended"
    again = cli("suspend", str(r.dir))
    assert again.returncode == 1 and again.stderr == \
        "stagecoach suspend: the pipeline is already suspended\n"
    gate.touch()  # a finishes while suspended; b must not start
    r.phase_of("a", "Succeeded")
    time.sleep(1.0)  # give a wrongly started b every chance to show
    status = r.status()
    assert status["phase"] == "Suspended" and status["reason"] == "Suspended"
    assert r.stages()["b"]["phase"] == "Pending"
    res = cli("resume", str(r.dir))
    assert res.returncode == 0 and res.stdout == "resumed\n", res.stderr
    assert r.finish() == 0, r.out + r.err
    assert "pipeline suspended by " in r.out and "pipeline resumed by " in r.out
    events = r.events()
    resumed = next(e["ts"] for e in events if e["type"] == "PipelineResumed")
    b_started = next(e["ts"] for e in events if e["type"] == "StageStarted"
                     and e["stage"] == "b")
    assert b_started >= resumed
    assert r.status()["phase"] == "Succeeded"
    # the run has ended: its directory refuses every verb, saying how it ended
    late = cli("resume", str(r.dir))
    assert late.returncode == 1
    assert late.stderr.startswith(f"stagecoach resume: no running `stagecoach run` owns "
                                  f"{r.dir}; it ended Succeeded (Succeeded) at ")
    assert "Control and approvals" in cli("trace", str(r.dir)).stdout


def test_stop_lets_the_running_attempt_finish_and_runs_finally(tmp_path: Path,
                                                               runs: list[LocalRun]) -> None:
    gate = tmp_path / "release-a"
    spec = {"stages": [stage("a", wait_for(gate) + "out({'a': 1})"),
                       stage("b", "out({'b': 2})", dependsOn=["a"])],
            "finally": [stage("notify", "out({'notified': True})")]}
    r = start(runs, manifest(tmp_path, spec), tmp_path / "runs")
    r.phase_of("a", "Running")
    stop = cli("stop", str(r.dir))
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith("stopping: 1 running attempt finishes")
    twice = cli("stop", str(r.dir))
    assert twice.returncode == 1 and "already stopping" in twice.stderr
    gate.touch()
    assert r.finish() == 130, r.out + r.err
    status = r.status()
    assert (status["phase"], status["reason"]) == ("Cancelled", "Stopped")
    stages = r.stages()
    assert stages["a"]["phase"] == "Succeeded"  # the running attempt finished
    assert stages["b"]["phase"] == "Skipped"    # nothing new started
    assert stages["notify"]["phase"] == "Succeeded"
    assert "ShutdownRequested" in {e["type"] for e in r.events()}


def test_terminate_stops_the_running_attempt_and_skips_finally(tmp_path: Path,
                                                               runs: list[LocalRun]) -> None:
    pidfile = tmp_path / "pid"
    spec = {"stages": [stage("a", f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                                  "time.sleep(120)\nout({})")],
            "finally": [stage("notify", "out({'notified': True})")]}
    r = start(runs, manifest(tmp_path, spec), tmp_path / "runs")
    r.until("a's process", pidfile.exists)
    term = cli("terminate", str(r.dir))
    assert term.returncode == 0, term.stderr
    assert term.stdout == "terminated: pipeline Cancelled (Terminated)\n"
    assert r.finish() == 130, r.out + r.err
    status = r.status()
    assert (status["phase"], status["reason"]) == ("Cancelled", "Terminated")
    stages = r.stages()
    assert (stages["a"]["phase"], stages["a"]["reason"]) == ("Failed", "Cancelled")
    assert stages["notify"]["phase"] == "Skipped"
    [end] = [e for e in r.events() if e["type"] == "StageFailed" and e["stage"] == "a"]
    assert (end["attempt"], end["data"]["errorClass"]) == (1, "Cancelled")
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_approve_reject_and_what_is_refused(tmp_path: Path, runs: list[LocalRun]) -> None:
    spec = {"stages": [
        stage("qa", "out({'score': 0.9})"),
        {"name": "sign-off", "dependsOn": ["qa"], "approval": {
            "message": "Publish? QA score {{ stages.qa.output.score }}",
            "inputs": [{"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"},
                       {"name": "note"}]}},
        {"name": "review", "dependsOn": ["qa"], "onFailure": "continue",
         "approval": {"message": "Second opinion?"}},
        stage("publish", "out({'channel': inp['stages']['sign-off']['output']['inputs']"
                         "['channel'], 'review': inp['stages']['review']['output']})",
              dependsOn=["sign-off", "review"])]}
    r = start(runs, manifest(tmp_path, spec), tmp_path / "runs")
    r.until("both gates waiting", lambda: all(
        r.stages()[g]["phase"] == "Waiting" for g in ("sign-off", "review")))
    waiting = r.stages()["sign-off"]
    assert (waiting["reason"], waiting["message"]) == ("AwaitingApproval",
                                                       "Publish? QA score 0.9")
    wrong = cli("approve", str(r.dir), "qa")
    assert wrong.returncode == 1
    assert wrong.stderr == ("stagecoach approve: stage qa is not an approval stage "
                            "(approval stages: sign-off, review)\n")
    bad = cli("approve", str(r.dir), "sign-off", "--input", "channel=radio")
    assert bad.returncode == 1 and "must be one of blog, newsletter, got 'radio'" in bad.stderr
    # a garbage request file does not hurt the run: it is answered with an error
    pid = int((r.dir / ".owner").read_text())
    (r.dir / "control" / "1-garbage.request").write_bytes(b"\x00{ not json")
    os.kill(pid, signal.SIGUSR1)
    r.until("the garbage answered", (r.dir / "control" / "1-garbage.answer").exists)
    answer = json.loads((r.dir / "control" / "1-garbage.answer").read_text())
    assert answer["ok"] is False and answer["message"].startswith("malformed request:")
    user = cli("approve", str(r.dir), "sign-off", "--input", "channel=newsletter",
               "-m", "ship it")
    assert user.returncode == 0, user.stderr
    assert user.stdout.startswith("stage sign-off approved by ")
    approver = user.stdout.strip().removeprefix("stage sign-off approved by ")
    again = cli("approve", str(r.dir), "sign-off")
    assert again.returncode == 1
    assert again.stderr == ("stagecoach approve: stage sign-off is not waiting for approval "
                            f"(it is Succeeded; decided by {approver})\n")
    rej = cli("reject", str(r.dir), "review", "-m", "not convinced")
    assert rej.returncode == 0 and rej.stdout == f"stage review rejected by {approver}\n"
    assert r.finish() == 0, r.out + r.err
    stages = r.stages()
    assert (stages["review"]["phase"], stages["review"]["reason"]) == ("Failed", "Rejected")
    assert stages["sign-off"]["outputRef"] == "outputs/sign-off/1.json"
    decision = json.loads((r.dir / "outputs/sign-off/1.json").read_text())["value"]
    assert decision["approver"] == approver and decision["message"] == "ship it"
    assert decision["inputs"] == {"channel": "newsletter"}
    published = json.loads((r.dir / "outputs/publish/1.json").read_text())["value"]
    assert published == {"channel": "newsletter", "review": None}
    assert f"stagecoach approve {r.dir} sign-off [--input channel=blog|newsletter]" in r.out
    assert "sign-off: approved by " in r.out and "review: rejected by " in r.out
    decided = [e for e in r.events() if e["type"] == "ApprovalDecided"]
    assert [(e["stage"], e["data"]["decision"]) for e in decided] == [
        ("sign-off", "Approve"), ("review", "Reject")]
    trace = cli("trace", str(r.dir)).stdout
    assert "approved by " in trace and "StageSucceeded without StageStarted" not in trace
    late = cli("approve", str(r.dir), "sign-off")
    assert late.returncode == 1 and "no running `stagecoach run` owns" in late.stderr


def test_auto_approve_decides_every_gate_with_the_defaults(tmp_path: Path) -> None:
    spec = {"stages": [
        {"name": "gate", "approval": {"message": "go?", "inputs": [
            {"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"}]}},
        stage("after", "out(inp['stages']['gate']['output'])", dependsOn=["gate"])]}
    proc = cli("run", str(manifest(tmp_path, spec)), "--store", str(tmp_path / "runs"),
               "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = next((tmp_path / "runs").iterdir())
    out = json.loads((d / "outputs/after/1.json").read_text())["value"]
    assert (out["approved"], out["approver"], out["inputs"]) == (
        True, "auto-approve", {"channel": "blog"})


def test_verbs_on_what_is_not_a_live_run_are_refused(tmp_path: Path) -> None:
    nothing = cli("suspend", str(tmp_path))
    assert nothing.returncode == 1
    assert nothing.stderr == (f"stagecoach suspend: {tmp_path}: not a run directory (no "
                              "status.json or pipeline.yaml)\n")


def _tree(d: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _resume_manifest(tmp: Path, build_note: str = "") -> Path:
    """plan (model) → each (forEach, run) → build (run; fails until ``flag`` exists) → ship
    (model); ``build_note`` changes build's resolved spec."""
    flag = tmp / "flag"
    docs = [
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
         "metadata": {"name": "replay"},
         "spec": {"type": "replay", "cassette": {"path": "cassette.yaml"}}},
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
         "metadata": {"name": "res"},
         "spec": {"defaults": {"provider": "replay", "retry": {"limit": 0}}, "stages": [
             {"name": "plan", "agent": {"prompt": "plan", "output": {"format": "json"}}},
             stage("each", "out(inp['item'] * 2)", dependsOn=["plan"],
                   forEach="stages.plan.output.xs"),
             stage("build", f"# {build_note}\n"
                            f"assert pathlib.Path({str(flag)!r}).exists(), 'no flag'\n"
                            "out({'built': inp['stages']['each']['output']})",
                   dependsOn=["each"]),
             {"name": "ship", "dependsOn": ["build"],
              "agent": {"prompt": "ship {{ stages.build.output.built | tojson }}"}}]}}]
    path = tmp / "res.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _cassette(tmp: Path, *stages: str) -> None:
    answers = {"plan": '{"xs": [1, 2]}', "ship": "shipped"}
    (tmp / "cassette.yaml").write_text(yaml.safe_dump({
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette",
        "entries": [{"stage": s, "response": {"content": answers[s],
                                              "usage": {"input": 3, "output": 2}}}
                    for s in stages]}))


def _run_dir(proc: subprocess.CompletedProcess[str]) -> Path:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


def test_resume_reuses_what_succeeded_and_reruns_what_changed(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    path = _resume_manifest(tmp_path)
    _cassette(tmp_path, "plan")
    first = cli("run", str(path), "--store", str(store))
    assert first.returncode == 1, first.stdout + first.stderr
    old = _run_dir(first)
    assert (old / "state.json").is_file()
    before = _tree(old)

    # the cassette has no answer for plan now: had plan called the model, it would fail
    (tmp_path / "flag").touch()
    _cassette(tmp_path, "ship")
    second = cli("run", str(path), "--store", str(store), "--resume", str(old))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from {old} (res, ended Failed)" in second.stdout
    assert "  reused: plan, each\n" in second.stdout
    assert "  runs again: build: it was Failed there\n" in second.stdout
    assert "  runs again: ship: it was Skipped there\n" in second.stdout
    new = _run_dir(second)
    assert _tree(old) == before  # the earlier run is never changed
    stages = {s["name"]: s for s in json.loads((new / "status.json").read_text())["stages"]}
    assert stages["plan"]["reason"] == "Reused" and stages["plan"]["phase"] == "Succeeded"
    assert stages["each"]["reason"] == "Reused"
    assert stages["plan"]["tokens"] == {"input": 0, "output": 0}
    events = [json.loads(ln) for ln in (new / "trace.jsonl").read_text().splitlines()]
    started = {e["stage"] for e in events if e["type"] == "StageStarted"}
    assert started == {"build", "ship"}  # no attempt (no model call) for the reused ones
    reused = {e["stage"]: e["data"] for e in events if e["type"] == "StageReused"}
    assert set(reused) == {"plan", "each"} and reused["plan"]["source"] == old.name
    assert reused["each"]["instances"] == 2
    for key in ("outputs/plan/1.json", "outputs/each/1-0.json", "outputs/each/1-1.json"):
        assert (new / key).read_bytes() == (old / key).read_bytes()
    built = json.loads((new / "outputs/build/1.json").read_text())["value"]
    assert built == {"built": [2, 4]}
    assert "reused from " + old.name in cli("trace", str(new)).stdout

    # a changed stage runs again, and so does everything downstream of it
    before_new = _tree(new)
    _cassette(tmp_path, "ship")
    changed = _resume_manifest(tmp_path, build_note="v2")
    third = cli("run", str(changed), "--store", str(store), "--resume", str(new))
    assert third.returncode == 0, third.stdout + third.stderr
    assert "  reused: plan, each\n" in third.stdout
    assert "  runs again: build: its resolved spec changed\n" in third.stdout
    assert "  runs again: ship: it depends on build, which runs again\n" in third.stdout
    assert _tree(new) == before_new
    latest = _run_dir(third)
    events = [json.loads(ln) for ln in (latest / "trace.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events if e["type"] == "StageStarted"} == {"build", "ship"}
    # the source of a reuse is the run named, not the one that first produced the output
    assert {e["data"]["source"] for e in events if e["type"] == "StageReused"} == {new.name}


def test_resume_refuses_what_it_cannot_resume_from(tmp_path: Path) -> None:
    path = _resume_manifest(tmp_path)
    _cassette(tmp_path, "plan")
    store = tmp_path / "runs"
    missing = cli("run", str(path), "--store", str(store), "--resume", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr == f"stagecoach run: --resume: {tmp_path / 'nope'}: not a run " \
                             "directory\n"
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "status.json").write_text('{"phase": "Failed"}')
    stateless = cli("run", str(path), "--store", str(store), "--resume", str(old))
    assert stateless.returncode == 1
    assert stateless.stderr.startswith(f"stagecoach run: --resume: {old} has no state.json: ")
    (old / "state.json").write_text('{"version": 1, "state": [1, 2]}')
    garbage = cli("run", str(path), "--store", str(store), "--resume", str(old))
    assert garbage.returncode == 1
    assert garbage.stderr.startswith(f"stagecoach run: --resume: {old / 'state.json'}: cannot "
                                     "be read")
    assert "Traceback" not in missing.stderr + stateless.stderr + garbage.stderr
    assert not store.exists()  # refused before a run directory was made


class Pty:
    """``stagecoach run`` on a pseudo-terminal: the rich display and the approval prompt."""

    def __init__(self, *args: str) -> None:
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        self.proc = subprocess.Popen([*STAGECOACH, *args], stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True,
                                     env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> None:
        import select

        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n"
                                     f"{self.seen[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    if self.proc.poll() is not None and text not in self.seen:
                        raise AssertionError(f"{text!r} never appeared; the run ended:\n"
                                             f"{self.seen[-3000:]}") from None

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self, timeout: float = 60) -> int:
        with_rest = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < with_rest:
            time.sleep(0.05)
            self._drain()
        self._drain()
        if self.proc.poll() is None:
            self.proc.kill()
        os.close(self.master)
        return self.proc.wait()

    def _drain(self) -> None:
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.seen += chunk.decode(errors="replace")


def _gate_pipeline(tmp_path: Path) -> Path:
    return manifest(tmp_path, {"stages": [
        {"name": "gate", "approval": {"message": "Ship it?", "inputs": [
            {"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"}]}},
        stage("after", "out(inp['stages']['gate']['output'])", dependsOn=["gate"])]})


def test_on_a_terminal_the_run_asks_and_the_answer_decides(tmp_path: Path) -> None:
    import getpass

    t = Pty("run", str(_gate_pipeline(tmp_path)), "--store", str(tmp_path / "runs"))
    try:
        t.expect("Approve? [y/N]")
        assert "gate awaits approval: Ship it?" in t.seen
        t.send("y")
        t.expect("channel [blog|newsletter] (default blog): ")
        t.send("radio")
        t.expect("channel must be one of blog, newsletter")
        t.send("newsletter")
        t.expect("Note (optional): ")
        t.send("typed on the terminal")
        t.expect("Result: Succeeded")
    finally:
        code = t.finish()
    assert code == 0, t.seen[-3000:]
    d = next((tmp_path / "runs").iterdir())
    out = json.loads((d / "outputs/after/1.json").read_text())["value"]
    assert (out["approver"], out["inputs"], out["message"]) == (
        getpass.getuser(), {"channel": "newsletter"}, "typed on the terminal")


def test_the_prompt_gives_way_to_a_decision_made_elsewhere(tmp_path: Path) -> None:
    t = Pty("run", str(_gate_pipeline(tmp_path)), "--store", str(tmp_path / "runs"))
    try:
        t.expect("Approve? [y/N]")
        d = next((tmp_path / "runs").iterdir())
        rejected = cli("reject", str(d), "gate", "-m", "from another terminal")
        assert rejected.returncode == 0, rejected.stderr
        t.expect("no longer waiting: gate was decided elsewhere")
        t.expect("Result: Failed")
    finally:
        code = t.finish()
    assert code == 1, t.seen[-3000:]
    status = json.loads((d / "status.json").read_text())
    assert {s["name"]: s["reason"] for s in status["stages"]}["gate"] == "Rejected"


def test_sigterm_terminates_like_the_verb(tmp_path: Path, runs: list[LocalRun]) -> None:
    spec = {"stages": [stage("a", "time.sleep(120)\nout({})")],
            "finally": [stage("notify", "out({})")]}
    r = start(runs, manifest(tmp_path, spec), tmp_path / "runs")
    r.phase_of("a", "Running")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 130, r.out + r.err
    status = r.status()
    assert (status["phase"], status["reason"]) == ("Cancelled", "Terminated")
    assert {s["name"]: s["phase"] for s in status["stages"]} == {"a": "Failed",
                                                                 "notify": "Skipped"}
    assert "terminate requested by SIGTERM" in r.out


def test_a_run_killed_hard_can_be_resumed_from(tmp_path: Path, runs: list[LocalRun]) -> None:
    gate = tmp_path / "release-b"
    path = manifest(tmp_path, {"stages": [
        stage("a", "out({'a': 1})"),
        stage("b", wait_for(gate) + "out({'b': inp['stages']['a']['output']['a'] + 1})",
              dependsOn=["a"])]})
    r = start(runs, path, tmp_path / "runs")
    r.phase_of("b", "Running")

    def saved() -> bool:
        try:
            state = json.loads((r.dir / "state.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(state["state"]["stages"]["a"]["phase"] == "Succeeded")

    r.until("state.json to record a", saved, timeout=30)
    r.proc.kill()  # SIGKILL: no cleanup at all
    r.proc.communicate()
    gone = cli("stop", str(r.dir))
    assert gone.returncode == 1
    assert "its last status is Running" in gone.stderr and "is gone" in gone.stderr
    gate.touch()
    again = cli("run", str(path), "--store", str(tmp_path / "runs"), "--resume", str(r.dir))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "  reused: a\n" in again.stdout and "  runs again: b: it was Running there\n" in \
        again.stdout
    new = _run_dir(again)
    assert json.loads((new / "outputs/b/1.json").read_text())["value"] == {"b": 2}
