"""What a Job says about its attempt: still running, or an :class:`AttemptResult`.

Read from the Job's conditions and its pod's container statuses, never from logs:
an agent pod's ``runner`` container leaves the runner's result as its termination
message (falling back to the exit code, :func:`~stagecoach.api.error_class_for_exit`);
a run pod's ``main`` container is the user's command (non-zero exit: ``Error`` with the
end of its output), and its ``collect`` sidecar's termination message carries the
stored output (or ``MalformedOutput``). A Job past ``activeDeadlineSeconds`` is a
``Timeout``. No side effects.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from stagecoach_runner.tracing import writer_id_for

from ..api import AttemptResult, AttemptSpec, error_class_for_exit
from ..store import output_key, replay_key, trace_key

__all__ = ["attempt_result", "job_finished", "job_result", "owned_by", "pod_succeeded",
           "writer_keys"]


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """True when ``obj``'s owner references name ``uid`` (Jobs, pods and ConfigMaps of an
    earlier pipeline with the same name are never adopted)."""
    return any(o.get("uid") == uid
               for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def writer_keys(spec: AttemptSpec) -> list[str]:
    """The store keys an attempt's pod writes: its output, its trace record and, per
    replay provider, the cassette positions it consumed. The operator prepares exactly
    these before the Job exists; the pod may write nothing else."""
    writer = writer_id_for(spec)
    keys = [output_key(spec.stage.name, spec.iteration, spec.index), trace_key(writer)]
    keys += [replay_key(name, writer) for name, p in sorted(spec.providers.items())
             if p.type == "replay"]
    return keys


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def job_finished(job: dict[str, Any]) -> bool:
    """True once the Job is Complete or Failed."""
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def _terminated(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if c.get("name") == name:
            term = (c.get("state") or {}).get("terminated")
            if term is None:
                term = (c.get("lastState") or {}).get("terminated")
            return dict(term) if term else None
    return None


def _parse(message: str | None) -> AttemptResult | None:
    if not message:
        return None
    try:
        return AttemptResult.from_termination_message(message)
    except (ValueError, ValidationError):
        return None


def _duration_ms(job: dict[str, Any]) -> int:
    from datetime import datetime

    st = job.get("status") or {}
    try:
        start = datetime.fromisoformat(st["startTime"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(st["completionTime"].replace("Z", "+00:00")) \
            if st.get("completionTime") else None
    except (KeyError, ValueError, AttributeError):
        return 0
    if end is None:
        failed = _condition(job, "Failed")
        if not failed or not failed.get("lastTransitionTime"):
            return 0
        end = datetime.fromisoformat(failed["lastTransitionTime"].replace("Z", "+00:00"))
    return max(0, int((end - start).total_seconds() * 1000))


def job_result(job: dict[str, Any], pods: list[dict[str, Any]]) -> AttemptResult | None:
    """The attempt's result (None while the Job runs)."""
    if not job_finished(job):
        return None
    failed = _condition(job, "Failed")
    duration = _duration_ms(job)
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        return AttemptResult.failed("Timeout", "the Job exceeded activeDeadlineSeconds "
                                    f"({failed.get('message') or 'deadline exceeded'})",
                                    duration_ms=duration)
    pod = _pick(pods)
    if pod is None:
        if failed is not None:
            return AttemptResult.failed("Error", f"Job failed without a pod: "
                                        f"{failed.get('reason')}: {failed.get('message')}",
                                        duration_ms=duration)
        return AttemptResult.failed("Error", "Job completed but its pod is gone",
                                    duration_ms=duration)
    spec_names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    if "runner" in spec_names:
        term = _terminated(pod, "runner")
        return _from_runner(term, duration, failed)
    prep = _terminated(pod, "prepare")
    if prep is not None and prep.get("exitCode"):
        # The input was never written: whatever the kubelet says of main after that.
        result = _parse(prep.get("message"))
        return result or AttemptResult.failed(
            error_class_for_exit(int(prep["exitCode"])) or "Error",
            f"preparing the input failed (exit {prep['exitCode']})", duration_ms=duration)
    main = _terminated(pod, "main")
    if main is None:
        reason = (pod.get("status") or {}).get("reason") or (failed or {}).get("reason")
        msg = (pod.get("status") or {}).get("message") or (failed or {}).get("message")
        return AttemptResult.failed("Error", f"the command never ran: {reason}: {msg}",
                                    duration_ms=duration)
    code = int(main.get("exitCode", 1))
    if code != 0:
        tail = (main.get("message") or "").strip()
        how = f"killed by signal {code - 128}" if code > 128 else f"exited with code {code}"
        return AttemptResult.failed("Error", f"command {how}" + (f"; output: {tail[-1500:]}"
                                                                  if tail else ""),
                                    duration_ms=duration)
    result = _parse((_terminated(pod, "collect") or {}).get("message"))
    if result is None:
        return AttemptResult.failed("Error", "the output collector reported no result",
                                    duration_ms=duration)
    return result.model_copy(update={"duration_ms": duration or result.duration_ms})


def pod_succeeded(pod: dict[str, Any]) -> bool:
    """True once a pod ended Succeeded by itself (not one being deleted: a Job's deadline
    or a stop kills pods, and the Job, not the pod, says why)."""
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase") == "Succeeded" and not meta.get(
        "deletionTimestamp")


def attempt_result(job: dict[str, Any], pods: list[dict[str, Any]]) -> AttemptResult | None:
    """The attempt's result: the finished Job's, or, before the Job controller (which
    batches pod updates) marks the Job Complete, its Succeeded pod's (the Job has
    ``backoffLimit: 0``: that pod's success is the Job's). None while it runs. Failures
    wait for the Job, which knows deadlines and evictions."""
    if job_finished(job):
        return job_result(job, pods)
    pod = _pick(pods)
    if pod is None or not pod_succeeded(pod):
        return None
    status = pod.get("status") or {}
    ends = [cs["state"]["terminated"].get("finishedAt") or ""
            for cs in (status.get("containerStatuses") or [])
            + (status.get("initContainerStatuses") or [])
            if "terminated" in (cs.get("state") or {})]
    done = {"type": "Complete", "status": "True"}
    view = {**job, "status": {"startTime": status.get("startTime"),
                              "completionTime": max(ends, default="") or None,
                              "conditions": [done]}}
    return job_result(view, [pod])


def _pick(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pods:
        return None
    return sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp", ""))[-1]


def _from_runner(term: dict[str, Any] | None, duration: int,
                 failed: dict[str, Any] | None) -> AttemptResult:
    if term is None:
        why = f"{failed.get('reason')}: {failed.get('message')}" if failed else "no status"
        return AttemptResult.failed("Error", f"the runner container never finished ({why})",
                                    duration_ms=duration)
    result = _parse(term.get("message"))
    if result is not None:
        return result
    code = int(term.get("exitCode", 1))
    cls = error_class_for_exit(code)
    if cls is None:
        return AttemptResult.failed("Error", "the runner exited 0 without a result",
                                    duration_ms=duration)
    tail = (term.get("message") or "").strip()[-1000:]
    return AttemptResult.failed(cls, f"the runner exited with code {code}"
                                + (f": {tail}" if tail else ""), duration_ms=duration)
