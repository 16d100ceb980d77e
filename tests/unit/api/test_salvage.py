"""Salvaging a document that fails the schema: a valid copy, paths kept, repairs listed."""

from __future__ import annotations

from typing import Any

import pytest
from stagecoach.api import AgentPipeline, ModelProvider, parse_documents
from stagecoach.api.salvage import salvage

RUN = {"image": "x", "command": ["x"]}


def _doc(spec: Any) -> dict[str, Any]:
    return {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
            "metadata": {"name": "p"}, "spec": spec}


def test_unknown_fields_are_dropped_and_the_rest_kept() -> None:
    fixed = salvage(AgentPipeline, _doc({"stages": [
        {"name": "a", "run": RUN, "dependOn": ["x"]},
        {"name": "b", "run": RUN, "dependsOn": ["a"], "when": "true"}]}))
    assert fixed is not None and fixed.repaired == (("spec", "stages", 0, "dependOn"),)
    stages = fixed.obj.spec.stages
    assert [s.name for s in stages] == ["a", "b"] and stages[1].depends_on == ["a"]


def test_a_stage_beyond_repair_becomes_a_placeholder_in_place() -> None:
    fixed = salvage(AgentPipeline, _doc({"stages": [
        "just-a-string",
        {"name": "b", "agent": {"temperature": 1}, "dependsOn": ["c", 7]},
        {"name": "c", "run": RUN}]}))
    assert fixed is not None
    stages = fixed.obj.spec.stages
    assert [s.name for s in stages] == ["invalid-stage-0", "b", "c"]
    assert stages[1].run is not None and stages[1].depends_on == ["c", "7"]
    assert ("spec", "stages", 0) in fixed.repaired and ("spec", "stages", 1) in fixed.repaired


def test_scalars_are_converted_or_wrapped_not_dropped() -> None:
    fixed = salvage(AgentPipeline, _doc({"stages": [
        {"name": "a", "run": RUN}, {"name": "b", "run": RUN, "dependsOn": "a", "when": True}]}))
    assert fixed is not None
    b = fixed.obj.spec.stages[1]
    assert b.depends_on == ["a"] and b.when == "true"


@pytest.mark.parametrize("spec", [5, "x", None, {"stages": "abc"}, {"templateRef": "x"},
                                  {"stages": [{"name": "a", "run": RUN}], "templateRef": {}}])
def test_what_cannot_be_salvaged_returns_none_or_a_valid_copy(spec: Any) -> None:
    fixed = salvage(AgentPipeline, _doc(spec))
    assert fixed is None or isinstance(fixed.obj, AgentPipeline)


def test_the_original_is_never_changed() -> None:
    data = _doc({"stages": [{"name": "a", "run": RUN, "bogus": 1}]})
    salvage(AgentPipeline, data)
    assert data["spec"]["stages"][0]["bogus"] == 1


def test_parse_documents_keeps_salvaged_and_broken_documents_apart() -> None:
    text = ("apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: p}\n"
            "spec:\n  stages:\n  - {name: a, run: {image: x, command: [x]}, bogus: 1}\n"
            "---\napiVersion: stagecoach.dev/v1alpha1\nkind: ModelProvider\n"
            "metadata: {name: m}\nspec: {type: nope}\n"
            "---\napiVersion: stagecoach.dev/v1alpha1\nkind: ModelProvider\n"
            "metadata: {name: ok}\nspec: {type: openai}\n")
    loaded = parse_documents(text)
    assert [type(d.obj) for d in loaded.documents] == [ModelProvider]
    assert [d.repaired for d in loaded.salvaged] == [(("spec", "stages", 0, "bogus"),)]
    assert loaded.broken == {("ModelProvider", "m")}
    assert [p.path for p in loaded.problems] == ["spec.stages[0].bogus", "spec.type"]
