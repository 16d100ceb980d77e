"""Leader election (DESIGN §10): the verdict table, and two candidates against one
in-memory Lease with resourceVersion checks — never two leaders, takeover after the
lease duration."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stagecoach.operator.leader import LeaderElector, identity, lease_verdict
from stagecoach.store import Conflict

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lease(holder: str | None, renewed: datetime | None, duration: int = 15) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration}
    if holder:
        spec["holderIdentity"] = holder
    if renewed:
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"resourceVersion": "1"}, "spec": spec}


@pytest.mark.parametrize(("current", "now", "verdict"), [
    (None, T0, "acquire"),
    (lease(None, None), T0, "acquire"),
    (lease("me", T0), T0 + timedelta(seconds=5), "renew"),
    (lease("other", T0), T0 + timedelta(seconds=14), "wait"),
    (lease("other", T0), T0 + timedelta(seconds=15), "acquire"),
    (lease("other", T0, duration=60), T0 + timedelta(seconds=30), "wait"),
    (lease("other", None), T0, "acquire"),
])
def test_verdicts(current: dict[str, Any] | None, now: datetime, verdict: str) -> None:
    assert lease_verdict(current, "me", now) == verdict


def test_identity() -> None:
    assert identity({"POD_NAME": "op-7d9f-abcde"}) == "op-7d9f-abcde"
    assert identity({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "op-1"}) == "op-1"
    assert "_" in identity({})


class FakeLeases:
    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.rv = 0

    async def get_lease(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def create_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.obj is not None:
            raise Conflict("exists")
        return self._store(body)

    async def replace_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.obj is not None
        if body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)


async def test_one_leader_and_a_takeover_after_the_lease_expires() -> None:
    api = FakeLeases()
    now = [T0]
    a = LeaderElector(api, "ops", "a", clock=lambda: now[0])  # type: ignore[arg-type]
    b = LeaderElector(api, "ops", "b", clock=lambda: now[0])  # type: ignore[arg-type]
    assert await a.try_once() is True
    assert await b.try_once() is False  # a holds it
    now[0] = T0 + timedelta(seconds=10)
    assert await a.try_once() is True  # renewed
    now[0] = T0 + timedelta(seconds=20)
    assert await b.try_once() is False  # renewed 10 s ago: still a's
    now[0] = T0 + timedelta(seconds=26)  # a stopped renewing 16 s ago
    assert await b.try_once() is True
    assert api.obj is not None and api.obj["spec"]["holderIdentity"] == "b"
    assert api.obj["spec"]["leaseTransitions"] == 1
    assert await a.try_once() is False  # a comes back: b leads now


async def test_two_candidates_racing_on_a_stale_read_never_both_win() -> None:
    api = FakeLeases()
    a = LeaderElector(api, "ops", "a", clock=lambda: T0)  # type: ignore[arg-type]
    b = LeaderElector(api, "ops", "b", clock=lambda: T0)  # type: ignore[arg-type]
    original = api.get_lease
    seen: dict[str, Any] = {}

    async def same_snapshot(ns: str, name: str) -> dict[str, Any] | None:
        if "v" not in seen:
            seen["v"] = await original(ns, name)
        return copy.deepcopy(seen["v"])

    api.get_lease = same_snapshot  # type: ignore[method-assign]
    results = [await a.try_once(), await b.try_once()]
    assert results == [True, False]
