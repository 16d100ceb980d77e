"""The executor's control desk: requests in, the engine's Control and decisions out,
answers back (a real run-directory owner, the real engine step)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stagecoach.api import AgentPipeline, ResolvedPipeline, load_documents, resolve_pipeline
from stagecoach.engine import AttemptOutcome, RunState, new_state, step
from stagecoach.local.desk import ControlDesk
from stagecoach.local.owner import CONTROL_DIR, Request, RunOwner, read_answer, write_request

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MANIFEST = """
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: desk}
spec:
  stages:
  - {name: a, run: {image: x, command: [sh]}}
  - name: sign-off
    dependsOn: [a]
    approval:
      message: ok?
      inputs: [{name: channel, enum: [blog, newsletter], default: blog}]
  - {name: b, dependsOn: [sign-off], run: {image: x, command: [sh]}}
"""


def pipeline() -> ResolvedPipeline:
    docs, problems = load_documents(MANIFEST)
    assert not problems
    p = next(d.obj for d in docs if isinstance(d.obj, AgentPipeline))
    resolved, problems = resolve_pipeline(p)
    assert resolved is not None, problems
    return resolved


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[RunOwner]:
    (tmp_path / "status.json").write_text("{}")
    o = RunOwner.acquire(tmp_path)
    yield o
    o.release()


class Run:
    """One pipeline driven through the desk the way the executor loop does."""

    def __init__(self, owner: RunOwner) -> None:
        self.p = pipeline()
        self.owner = owner
        self.desk = ControlDesk(owner)
        self.state: RunState = new_state(self.p)
        self.now = T0
        self.n = 0

    def send(self, verb: str, **kw: object) -> str:
        self.n += 1
        rid = f"{self.n}-req"
        write_request(self.owner.run_dir, Request(id=rid, verb=verb, by="alice",  # type: ignore[arg-type]
                                                  **kw))  # type: ignore[arg-type]
        return rid

    def step(self) -> None:
        self.now += timedelta(seconds=1)
        self.desk.collect(self.state, self.now)
        plan = step(self.p, self.state, self.now, free_slots={}, control=self.desk.control,
                    approvals=self.desk.take_decisions())
        self.state = plan.state
        self.desk.answer(self.state, plan.verdicts)

    def answer(self, rid: str) -> tuple[bool, str] | None:
        return read_answer(self.owner.run_dir, rid)


def test_suspend_resume_and_the_refusals_that_change_nothing(owner: RunOwner) -> None:
    run = Run(owner)
    run.step()  # a starts
    first, again = run.send("suspend"), run.send("suspend")
    run.step()
    assert run.answer(first) == (True, "suspended: no new attempt starts; 1 running attempt "
                                       "finishes")
    assert run.answer(again) == (False, "the pipeline is already suspended")
    assert run.state.phase == "Suspended" and run.desk.control.by == "alice"
    resumed, twice = run.send("resume"), run.send("resume")
    run.step()
    assert run.answer(resumed) == (True, "resumed")
    assert run.answer(twice) == (False, "the pipeline is not suspended")
    assert run.state.phase == "Running"


def test_terminate_is_final_and_later_requests_are_refused(owner: RunOwner) -> None:
    run = Run(owner)
    run.step()
    stop, term = run.send("stop"), run.send("terminate")
    run.step()
    assert run.answer(stop) == (True, "stopped: pipeline Cancelled (Terminated)")
    assert run.answer(term) == (True, "terminated: pipeline Cancelled (Terminated)")
    assert run.state.phase == "Cancelled"
    late = run.send("resume")
    run.step()
    assert run.answer(late) == (False, "pipeline Cancelled (Terminated) already finished")
    stop_after = run.send("stop")
    run.desk.close(run.state)
    assert run.answer(stop_after) == (False, "pipeline Cancelled (Terminated) already finished")


def test_approvals_get_the_engines_verdict_and_garbage_gets_an_error(owner: RunOwner) -> None:
    run = Run(owner)
    run.step()
    # a finishes: the engine observes its outcome
    plan = step(run.p, run.state, run.now + timedelta(seconds=1),
                [AttemptOutcome("a", 1, 1, ok=True, output={"x": 1}, output_ref="o")])
    run.state, run.now = plan.state, run.now + timedelta(seconds=1)
    assert run.state.stages["sign-off"].phase == "Waiting"
    wrong = run.send("approve", stage="a")
    bad = run.send("approve", stage="sign-off", inputs={"channel": "radio"})
    (owner.run_dir / CONTROL_DIR / "9-junk.request").write_text("{not json")
    good = run.send("approve", stage="sign-off", inputs={"channel": "newsletter"})
    late = run.send("reject", stage="sign-off")
    run.step()
    assert run.answer(wrong) == (False, "stage a is not an approval stage (approval stages: "
                                        "sign-off)")
    ok, msg = run.answer(bad) or (None, "")
    assert ok is False and "must be one of blog, newsletter, got 'radio'" in msg
    ok, msg = run.answer("9-junk") or (None, "")
    assert ok is False and msg.startswith("malformed request: the request is not JSON")
    assert run.answer(good) == (True, "stage sign-off approved by alice")
    ok, msg = run.answer(late) or (None, "")
    # judged in the same step as the approval: the gate no longer waits
    assert ok is False and msg.startswith("stage sign-off is not waiting for approval")
    decision = run.state.stages["sign-off"].instances[0].decision
    assert decision is not None and decision["inputs"] == {"channel": "newsletter"}
    assert run.state.stages["b"].phase == "Running"
