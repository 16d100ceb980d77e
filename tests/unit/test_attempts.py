"""Upstream outputs in the attempt spec: small ones inlined (the runner reads no store
for them), large, null and forEach ones by reference, within a per-spec budget."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach import attempts
from stagecoach.api import AttemptSpec, PipelineRef, StoreRef, UpstreamRef
from stagecoach.attempts import upstream_refs
from stagecoach.engine.state import RunState, StageRun
from stagecoach.store import NotFound
from stagecoach_runner.variables import load_variables


def done(name: str, output: Any, ref: str | None = "outputs/x/1.json") -> StageRun:
    return StageRun(name=name, phase="Succeeded", output=output,
                    output_ref=ref and ref.replace("x", name))


def test_small_outputs_travel_inline_and_large_null_and_foreach_by_reference() -> None:
    fan = StageRun(name="fan", phase="Succeeded", output=[1, 2],
                   instance_refs=["outputs/fan/1-0.json", "outputs/fan/1-1.json"])
    state = RunState(stages={"small": done("small", {"verdict": "pass"}),
                             "large": done("large", "x" * 5000),
                             "null": done("null", None),
                             "fan": fan,
                             "pending": StageRun(name="pending")})
    refs = upstream_refs(state)
    assert refs["small"].inline and refs["small"].value == {"verdict": "pass"}
    assert refs["small"].output_ref == "outputs/small/1.json"  # still named
    assert not refs["large"].inline and refs["large"].value is None
    assert not refs["null"].inline  # null cannot be told from "not loaded"
    assert not refs["fan"].inline and refs["fan"].instance_refs is not None
    assert not refs["pending"].inline and refs["pending"].output_ref is None
    assert upstream_refs(state, only={"large"}).keys() == {"large"}


def test_inlined_outputs_stay_within_the_spec_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts, "INLINE_UPSTREAM_TOTAL", 2500)
    state = RunState(stages={n: done(n, "y" * 1000) for n in ("a", "b", "c")})
    refs = upstream_refs(state)
    assert [refs[n].inline for n in ("a", "b", "c")] == [True, True, False]
    spec = UpstreamRef.model_validate(refs["a"].model_dump(by_alias=True))
    assert spec.inline and spec.value == "y" * 1000  # survives the JSON round trip


class NoStore:
    """A store that must not be read."""

    async def get(self, key: str) -> bytes:
        raise NotFound(key)


async def test_the_runner_reads_no_store_for_an_inlined_output() -> None:
    state = RunState(stages={"a": done("a", {"n": 1}), "b": done("b", "x" * 5000)})
    spec = AttemptSpec(pipeline=PipelineRef(name="p", namespace="ns", uid="u"),
                       stage={"name": "c", "run": {"image": "i", "command": ["true"]}},
                       store=StoreRef(type="configmap"), upstream=upstream_refs(state))
    spec = AttemptSpec.from_json(spec.to_json())
    variables = await load_variables(spec, NoStore(), only={"a"})  # type: ignore[arg-type]
    assert variables["stages"]["a"]["output"] == {"n": 1}
    with pytest.raises(Exception, match="missing from the store"):
        await load_variables(spec, NoStore(), only={"b"})  # type: ignore[arg-type]


def test_large_nested_outputs_are_turned_down_by_a_bound_not_by_encoding_them() -> None:
    from stagecoach.attempts import _may_fit

    assert not _may_fit({"report": "x" * 5000}, 2048)
    assert not _may_fit(list(range(3000)), 2048)  # 3,000 numbers: over 2 KiB of JSON
    assert _may_fit({"verdict": "pass", "scores": [1, 2, 3]}, 2048)
    state = RunState(stages={"r": done("r", {"report": "x" * 5000}),
                             "s": done("s", {"sections": ["y" * 700] * 4})})
    refs = upstream_refs(state)
    assert not refs["r"].inline and not refs["s"].inline
