"""Leader election over a ``coordination.k8s.io/v1`` Lease (DESIGN §10).

With ``--leader-elect`` only the holder of the Lease ``stagecoach-operator`` reconciles;
a standby waits and takes over once the holder stops renewing for a lease duration
(default 15 s). :func:`lease_verdict` is the decision, pure and table-tested: given the
Lease as read, who we are and the time, acquire, renew or wait. :class:`LeaderElector`
runs it: :meth:`~LeaderElector.acquire` blocks until we lead, :meth:`~LeaderElector.hold`
renews every ``retry_period`` and returns when leadership is lost (a renewal refused by a
newer holder, or not renewed within ``renew_deadline``), after which the process stops —
as client-go's leader election does — so that no two operators reconcile at once. Writes
use the Lease's resourceVersion, so two candidates can never both win. All API calls go
through :class:`~.kube.Kube`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..store import Conflict, StoreError
from .kube import Kube

__all__ = ["LEASE_NAME", "LeaderElector", "identity", "lease_verdict"]

log = logging.getLogger("stagecoach.operator")

LEASE_NAME = "stagecoach-operator"
Verdict = Literal["acquire", "renew", "wait"]


def identity(environ: dict[str, str] | None = None) -> str:
    """The pod name in a pod (``POD_NAME``, else ``HOSTNAME`` in a pod), else
    ``<hostname>_<pid>``."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAME"):
        return env["POD_NAME"]
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
        return env["HOSTNAME"]
    return f"{socket.gethostname()}_{os.getpid()}"


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_verdict(lease: dict[str, Any] | None, me: str, now: datetime) -> Verdict:
    """What a candidate ``me`` does with ``lease`` at ``now``. No side effects."""
    if lease is None:
        return "acquire"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return "acquire"
    if holder == me:
        return "renew"
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    if renewed is None or now >= renewed + timedelta(seconds=duration):
        return "acquire"  # the holder stopped renewing: it is gone
    return "wait"


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElector:
    """Acquire and hold the Lease ``name`` in ``namespace`` as ``me``."""

    kube: Kube
    namespace: str
    me: str
    name: str = LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_change: Callable[[bool], None] | None = None
    """Told True on becoming the leader and False on losing it (metrics)."""

    def _body(self, old: dict[str, Any] | None, now: datetime, acquire: bool) -> dict[str, Any]:
        spec = dict((old or {}).get("spec") or {})
        if acquire:
            spec["acquireTime"] = _stamp(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if old is not None and spec.get("holderIdentity") else 0)
        spec.update(holderIdentity=self.me, renewTime=_stamp(now),
                    leaseDurationSeconds=int(self.lease_duration))
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "stagecoach"}}
        if old is not None:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}

    async def try_once(self) -> bool:
        """One round: True when we hold the Lease afterwards."""
        now = self.clock()
        lease = await self.kube.get_lease(self.namespace, self.name)
        verdict = lease_verdict(lease, self.me, now)
        if verdict == "wait":
            return False
        body = self._body(lease, now, acquire=verdict == "acquire")
        try:
            if lease is None:
                await self.kube.create_lease(self.namespace, body)
            else:
                await self.kube.replace_lease(self.namespace, body)
        except Conflict:
            return False  # someone else wrote first: read again next round
        if verdict == "acquire":
            log.info("leader election: %s acquired lease %s/%s", self.me, self.namespace,
                     self.name)
        return True

    async def acquire(self) -> None:
        """Return once we lead (API errors are retried)."""
        waiting_logged = False
        while True:
            try:
                if await self.try_once():
                    if self.on_change:
                        self.on_change(True)
                    return
                if not waiting_logged:
                    log.info("leader election: %s is standby for lease %s/%s", self.me,
                             self.namespace, self.name)
                    waiting_logged = True
            except StoreError as e:
                log.warning("leader election: %s", e)
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        """Give the Lease up (a graceful stop): the standby takes over at once instead
        of after the lease duration. Only when we still hold it; errors are logged."""
        try:
            lease = await self.kube.get_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
                return
            body = self._body(lease, self.clock(), acquire=False)
            body["spec"]["holderIdentity"] = ""
            body["spec"]["leaseDurationSeconds"] = 1
            await self.kube.replace_lease(self.namespace, body)
            log.info("leader election: %s released lease %s/%s", self.me, self.namespace,
                     self.name)
        except StoreError as e:
            log.warning("leader election: cannot release the lease: %s", e)

    async def hold(self) -> None:
        """Renew until leadership is lost; then return."""
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await self.try_once():
                    last = asyncio.get_running_loop().time()
                    continue
                log.error("leader election: %s lost lease %s/%s to another holder", self.me,
                          self.namespace, self.name)
                break
            except StoreError as e:
                log.warning("leader election: cannot renew: %s", e)
            if asyncio.get_running_loop().time() - last > self.renew_deadline:
                log.error("leader election: %s could not renew lease %s/%s within %.0fs",
                          self.me, self.namespace, self.name, self.renew_deadline)
                break
        if self.on_change:
            self.on_change(False)
