"""The reconcile scheduler: failed passes are retried with backoff, except when the
API server refused because the pipeline's namespace is being deleted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from stagecoach.operator.kube import KubeError, namespace_terminating
from stagecoach.operator.runtime import Runtime

TERMINATING = KubeError(
    "POST /api/v1/namespaces/t/configmaps: HTTP 403: configmaps \"p-state\" is forbidden: "
    "unable to create new content in namespace t because it is being terminated", 403,
    "configmaps \"p-state\" is forbidden: unable to create new content in namespace t "
    "because it is being terminated")


def test_only_a_terminating_namespace_refusal_counts() -> None:
    assert namespace_terminating(TERMINATING)
    assert not namespace_terminating(KubeError("HTTP 403: forbidden", 403, "forbidden"))
    assert not namespace_terminating(KubeError("HTTP 500", 500, "being terminated"))
    assert not namespace_terminating(ValueError("being terminated"))


@pytest.mark.parametrize(("error", "retried"), [(TERMINATING, False),
                                                (KubeError("HTTP 500", 500), True)])
async def test_a_refusal_is_retried_unless_the_namespace_is_going(
        error: Exception, retried: bool, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str]] = []

    async def reconcile(ns: str, name: str) -> None:
        calls.append((ns, name))
        if len(calls) == 1:
            raise error

    runtime = Runtime(reconcile)
    with caplog.at_level(logging.INFO, logger="stagecoach.operator"):
        runtime.trigger(("t", "p"))
        await asyncio.sleep(0.8)  # the first retry is due after 0.5 s
    assert len(calls) == (2 if retried else 1)
    if not retried:
        assert "namespace is being deleted" in caplog.text and "403" not in caplog.text
