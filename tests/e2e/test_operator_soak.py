"""A leak check, not a timing (DESIGN §10): 300 small pipelines, 30 at a time, each
deleted once finished; the operator's RSS after the last batch stays within 30 MiB of
its RSS after the first. Marked ``slow`` (``make test`` still runs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    Kubectl,
    Operator,
    cassette_configmap,
    figure,
    load_example,
    replay_provider,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BATCHES = 10
PER_BATCH = 30


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def small(name: str) -> dict[str, Any]:
    """One agent stage answered by the replay cassette: one light pod per pipeline."""
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": name},
            "spec": {"defaults": {"provider": "replay", "model": "smollm2-135m"},
                     "stages": [{"name": "poem", "agent": {"prompt": "a poem, please"}}],
                     "output": "{{ stages.poem.output }}"}}


def test_operator_memory_is_released_run_after_run(operator: Operator,
                                                   kubectl: Kubectl) -> None:
    provider, _ = load_example("hello")
    kubectl.apply(cassette_configmap("hello-cassette", "hello"),
                  replay_provider(provider, "hello-cassette"))
    assert operator.proc is not None
    samples: list[float] = []
    for batch in range(BATCHES):
        names = [f"soak-{batch}-{i}" for i in range(PER_BATCH)]
        kubectl.apply(*(small(n) for n in names))
        for n in names:
            obj = kubectl.wait_phase(n, {"Succeeded", "Failed", "Invalid"}, timeout=300,
                                     operator=operator)
            assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"])
        kubectl("delete", "agentpipelines", *names, "--wait=false")
        samples.append(rss_mib(operator.proc.pid))
    figure("SOAK | operator RSS (MiB) after each batch of 30 pipelines: "
           + ", ".join(f"{s:.0f}" for s in samples))
    assert samples[-1] - samples[0] <= 30, samples
