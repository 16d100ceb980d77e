"""Count API requests as the API server saw them: the test control plane's audit log.

Why: "requests per stage attempt" is a claim about the API server's load, so it is
counted where the load lands, not inside the client. The control plane writes an audit
log (one JSON event per request, Metadata level, only the ``ResponseComplete`` stage,
nothing for the control plane's own components) and :class:`AuditLog` reads it from a
byte offset, so a test takes a mark before its workload and counts what happened after,
per user, verb and resource. Watches count once, when they end (long-running requests
get their ResponseComplete event then); ``watch`` is its own verb.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["POLICY", "AuditLog", "Request"]

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver]
  - level: None
    userGroups: [system:nodes]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/openapi*", "/api",
                      "/apis", "/apis/*"]
  - level: Metadata
"""
"""What the test API server logs: every request of anyone but the control plane itself."""


@dataclass(frozen=True)
class Request:
    """One audited request."""

    user: str
    verb: str
    resource: str
    """``group/resource[/subresource]`` (core group: ``resource``), or the URL path."""
    namespace: str | None
    code: int | None


def _request(event: dict[str, Any]) -> Request:
    ref = event.get("objectRef") or {}
    if ref:
        resource = ref.get("resource", "")
        if ref.get("apiGroup"):
            resource = f"{ref['apiGroup']}/{resource}"
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
    else:
        resource = event.get("requestURI", "").split("?")[0]
    return Request(user=(event.get("user") or {}).get("username", ""),
                   verb=event.get("verb", ""), resource=resource,
                   namespace=ref.get("namespace"),
                   code=(event.get("responseStatus") or {}).get("code"))


class AuditLog:
    """Reader of the control plane's audit log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """The current end of the log: count from here with ``since=``."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, *, since: int = 0, user: str | None = None,
                 user_prefix: str | None = None) -> list[Request]:
        """Requests logged after byte offset ``since``, optionally of one user (or of
        users whose name starts with ``user_prefix``, e.g. a ServiceAccount's)."""
        out: list[Request] = []
        try:
            with self.path.open("rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return out
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line still being written
            req = _request(event)
            if user is not None and req.user != user:
                continue
            if user_prefix is not None and not req.user.startswith(user_prefix):
                continue
            out.append(req)
        return out

    def count(self, **kwargs: Any) -> Counter[tuple[str, str]]:
        """``(verb, resource)`` → requests (same filters as :meth:`requests`)."""
        return Counter((r.verb, r.resource) for r in self.requests(**kwargs))

    @staticmethod
    def table(counts: Counter[tuple[str, str]]) -> str:
        """A printable per-verb-and-resource table, most frequent first."""
        width = max((len(res) for _, res in counts), default=8)
        lines = [f"{'verb':<8} {'resource':<{width}} requests"]
        lines += [f"{verb:<8} {res:<{width}} {n}" for (verb, res), n in counts.most_common()]
        lines.append(f"{'total':<8} {'':<{width}} {sum(counts.values())}")
        return "\n".join(lines)
