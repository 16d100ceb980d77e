"""Property-based tests: random DAGs with random outcomes keep the engine's invariants.

No stage starts before its dependencies finish in the current iteration; maxParallel is
never exceeded; iterations and attempts stay within their bounds; every run reaches a
terminal phase; the same inputs give the same plan.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stagecoach.engine import StartAttempt
from stagecoach.engine.dag import build

from .sim import Result, resolved, simulate

CLASSES = ["Error", "Timeout", "RateLimited", "MalformedOutput", "InvalidInput"]


@st.composite
def pipelines(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    n = draw(st.integers(1, 7))
    stages = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        stage: dict[str, Any] = {
            "name": f"s{i}",
            "dependsOn": [f"s{d}" for d in deps],
            "run": {"image": "x", "command": ["x"]},
            "retry": {"limit": draw(st.integers(0, 2)),
                      "backoff": {"initial": "1s", "jitter": 0.5}},
            "onFailure": draw(st.sampled_from(["fail", "continue"])),
        }
        if draw(st.booleans()) and i:
            stage["when"] = draw(st.sampled_from(["true", "false", "params.flag"]))
        if draw(st.integers(0, 4)) == 0:
            stage["forEach"] = "params.items"
        stages.append(stage)
    # a few back-edges to ancestors
    graph, _ = build([(s["name"], s["dependsOn"]) for s in stages])
    assert graph is not None
    for s in stages:
        anc = sorted(graph.ancestors(s["name"]))
        if anc and draw(st.integers(0, 2)) == 0:
            s["routes"] = [{"when": draw(st.sampled_from(["true", "loop.iteration < 2"])),
                            "goto": draw(st.sampled_from(anc)),
                            "maxIterations": draw(st.integers(1, 3))}]
    spec = {"stages": stages, "params": {"flag": draw(st.booleans()),
                                         "items": list(range(draw(st.integers(0, 3))))}}
    if draw(st.booleans()):
        spec["maxParallel"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        spec["finally"] = [{"name": "fin", "run": {"image": "x", "command": ["x"]}}]
    outcomes = {
        "seed": draw(st.integers(0, 10**6)),
        "fail_rate": draw(st.sampled_from([0.0, 0.2, 0.5])),
    }
    return spec, outcomes


def behaviour(cfg: dict[str, Any]):  # type: ignore[no-untyped-def]
    import random

    def behave(a: StartAttempt, _: Any) -> Result:
        rnd = random.Random(f"{cfg['seed']}/{a.stage}/{a.iteration}/{a.index}/{a.attempt}")
        ok = rnd.random() >= cfg["fail_rate"]
        return Result(ok, rnd.choice(CLASSES), output={"v": rnd.random()},
                      seconds=rnd.choice([0.5, 1, 2, 5]))

    return behave


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines())
def test_invariants_hold_on_random_pipelines(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, cfg = case
    p = resolved(spec)
    run = simulate(p, behaviour(cfg))
    deps = {s.name: s.depends_on for s in p.stages}
    on_failure = {s.name: s.on_failure for s in p.stages}
    limit = {s.name: s.retry.limit for s in p.all_stages}

    assert run.state.terminal, "every run reaches a terminal phase"
    for state in run.states:
        running = sum(1 for s in state.stages.values() for i in s.instances
                      if i.phase == "Running")
        if p.max_parallel:
            assert running <= p.max_parallel
        for name, s in state.stages.items():
            for inst in s.instances:
                assert inst.attempt <= limit[name] + 1
                if inst.phase == "Running" and name in deps:
                    for d in deps[name]:
                        dep = state.stages[d]
                        assert dep.phase in {"Succeeded", "Skipped"} or (
                            dep.phase == "Failed" and on_failure[d] == "continue"
                        ), f"{name} running while {d} is {dep.phase}"
    for s in p.stages:
        for i, r in enumerate(s.routes):
            assert run.state.loops.get(f"{s.name}#{i}", 0) < r.max_iterations
    again = simulate(p, behaviour(cfg))
    assert [a for _, a in again.actions] == [a for _, a in run.actions], "deterministic"
