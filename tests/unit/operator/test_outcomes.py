"""Job + pods → AttemptResult. Pure."""

from __future__ import annotations

from typing import Any

from stagecoach.api import AttemptResult
from stagecoach.operator.outcomes import attempt_result, job_finished, job_result


def job(cond: str | None, reason: str | None = None) -> dict[str, Any]:
    conds = [{"type": cond, "status": "True", "reason": reason}] if cond else []
    return {"status": {"conditions": conds, "startTime": "2026-01-01T00:00:00Z",
                       "completionTime": "2026-01-01T00:00:02Z"}}


def pod(containers: list[str], **terminated: dict[str, Any]) -> dict[str, Any]:
    statuses = [{"name": n, "state": {"terminated": t}} for n, t in terminated.items()]
    return {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"containerStatuses": statuses}}


def test_running_job_has_no_result() -> None:
    assert not job_finished(job(None))
    assert job_result(job(None), []) is None


def test_agent_result_from_termination_message() -> None:
    msg = AttemptResult(phase="Succeeded", output_ref="outputs/a/1.json").to_termination_message()
    r = job_result(job("Complete"), [pod(["runner"], runner={"exitCode": 0, "message": msg})])
    assert r is not None and r.ok and r.output_ref == "outputs/a/1.json"


def test_agent_falls_back_to_the_exit_code() -> None:
    r = job_result(job("Failed"), [pod(["runner"], runner={"exitCode": 3, "message": "boom"})])
    assert r is not None and r.error_class == "RateLimited" and "boom" in (r.message or "")


def test_deadline_is_timeout() -> None:
    r = job_result(job("Failed", "DeadlineExceeded"), [])
    assert r is not None and r.error_class == "Timeout"


def test_run_stage_uses_main_exit_then_collector() -> None:
    ok = AttemptResult(phase="Succeeded", output_ref="outputs/s/1.json").to_termination_message()
    r = job_result(job("Complete"), [pod(["main"], main={"exitCode": 0},
                                         collect={"exitCode": 0, "message": ok})])
    assert r is not None and r.ok and r.duration_ms == 2000
    r = job_result(job("Failed"), [pod(["main"], main={"exitCode": 2, "message": "bad arg"},
                                       collect={"exitCode": 0, "message": ok})])
    assert r is not None and r.error_class == "Error" and "code 2" in (r.message or "")
    bad = AttemptResult.failed("MalformedOutput", "not JSON").to_termination_message()
    r = job_result(job("Complete"), [pod(["main"], main={"exitCode": 0},
                                         collect={"exitCode": 0, "message": bad})])
    assert r is not None and r.error_class == "MalformedOutput"


def test_a_succeeded_pod_ends_its_attempt_before_the_job_controller_says_so() -> None:
    ok = AttemptResult(phase="Succeeded", output_ref="outputs/s/1.json").to_termination_message()
    done = pod(["main"], main={"exitCode": 0, "finishedAt": "2026-01-01T00:00:01Z"},
               collect={"exitCode": 0, "message": ok, "finishedAt": "2026-01-01T00:00:03Z"})
    done["status"].update(phase="Succeeded", startTime="2026-01-01T00:00:00Z")
    r = attempt_result(job(None), [done])
    assert r is not None and r.ok and r.output_ref == "outputs/s/1.json"
    assert r.duration_ms == 3000  # pod start -> its last container's end
    # Still running, failed (the Job knows deadlines and evictions) or being deleted:
    # the Job decides.
    running = {**done, "status": {**done["status"], "phase": "Running"}}
    failed = {**done, "status": {**done["status"], "phase": "Failed"}}
    deleted = {**done, "metadata": {**done["metadata"],
                                    "deletionTimestamp": "2026-01-01T00:00:04Z"}}
    assert [attempt_result(job(None), [p]) for p in (running, failed, deleted)] == [
        None, None, None]
    assert attempt_result(job(None), []) is None
    r = attempt_result(job("Failed", "DeadlineExceeded"), [deleted])
    assert r is not None and r.error_class == "Timeout"
