"""What an API server refusal means for the attempt whose Job it refused. Pure.

A Job the API server will never accept must not be retried by the reconcile loop
forever (DESIGN §10): the attempt fails at once with the server's own words in its
message. Invalid objects (400, 422), admission denials and missing permissions (403),
and objects over the size limits (413, or etcd's "request is too large") are
``InvalidInput``, which is never retried. A namespace quota refusal is ``Error``: the
stage's retry policy may try again once other work released the quota. Anything else
(429, 5xx, a lost connection) is transient: the reconcile is retried as before.
"""

from __future__ import annotations

from ..api import AttemptResult

__all__ = ["rejected_attempt"]

_TOO_LARGE = ("too large", "too long", "exceeds the maximum", "request entity")


def rejected_attempt(status: int, message: str, job: str, size: int) -> AttemptResult | None:
    """The failed result of the attempt whose Job ``job`` (``size`` bytes of JSON) was
    refused with HTTP ``status`` and ``message``; None when a retry of the request
    itself can succeed."""
    lower = message.lower()
    if status == 413 or (status in (422, 500) and any(t in lower for t in _TOO_LARGE)):
        return AttemptResult.failed(
            "InvalidInput", f"the API server refused Job {job} as too large ({size} bytes "
            f"of JSON; the stage's input, item or prompt is too big): {message}")
    if status == 403 and ("exceeded quota" in lower or "for quota" in lower):
        return AttemptResult.failed(
            "Error", f"the namespace quota refused Job {job}: {message}")
    if status in (400, 403, 404, 422):
        what = {403: "refused", 404: "could not create"}.get(status, "rejected")
        return AttemptResult.failed("InvalidInput",
                                    f"the API server {what} Job {job}: {message}")
    return None
