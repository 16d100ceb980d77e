"""API models: durations, defaults, one-object rules, resolution."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from stagecoach.api import (
    AgentPipeline,
    AgentPipelineTemplate,
    PipelineSpec,
    format_duration,
    load_documents,
    parse_duration,
    resolve_pipeline,
)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400),
                                              ("250ms", 0.25), ("1.5h", 5400), (30, 30)])
def test_durations_parse(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["5 minutes", "m", "-1s", "1x", True, None])
def test_bad_durations_are_rejected(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_format_back() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (90, 5400, 0.25, 0)] == [
        "1m30s", "1h30m", "250ms", "0s"]


def _pipeline(spec: dict[str, Any]) -> AgentPipeline:
    return AgentPipeline.model_validate({"apiVersion": "stagecoach.dev/v1alpha1",
                                         "kind": "AgentPipeline", "metadata": {"name": "p"},
                                         "spec": spec})


def test_exactly_one_of_agent_or_run_and_template_or_stages() -> None:
    with pytest.raises(ValidationError, match=r"exactly one of agent(, run or approval| or run)"):
        PipelineSpec.model_validate({"stages": [{"name": "a"}]})
    with pytest.raises(ValidationError, match="exactly one of templateRef or stages"):
        PipelineSpec.model_validate({"templateRef": {"name": "t"}, "stages": [
            {"name": "a", "run": {"image": "x", "command": ["x"]}}]})


def test_defaults_are_resolved_in_one_place() -> None:
    p = _pipeline({"defaults": {"provider": "openai", "model": "m", "timeout": "5m",
                                "retry": {"limit": 2}},
                   "stages": [{"name": "a", "agent": {"prompt": "x"}},
                              {"name": "b", "agent": {"prompt": "x", "model": "other"},
                               "timeout": "1m", "retry": {"limit": 0}}]})
    r, problems = resolve_pipeline(p)
    assert r is not None and not problems
    a, b = r.stages
    assert (a.provider, a.agent and a.agent.model, a.timeout, a.retry.limit) == (
        "openai", "m", timedelta(minutes=5), 2)
    assert (b.agent and b.agent.model, b.timeout, b.retry.limit) == (
        "other", timedelta(minutes=1), 0)


def test_template_params_merge_and_unknown_params_are_errors() -> None:
    tpl = AgentPipelineTemplate.model_validate({
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipelineTemplate",
        "metadata": {"name": "t"},
        "spec": {"params": {"topic": {"default": "x"}, "n": {"default": 3}},
                 "defaults": {"provider": "p", "model": "m"},
                 "stages": [{"name": "a", "agent": {"prompt": "{{ params.topic }}"}}]}})
    r, problems = resolve_pipeline(_pipeline({"templateRef": {"name": "t"},
                                              "params": {"topic": "y"}}), {"t": tpl})
    assert r is not None and r.params == {"topic": "y", "n": 3}
    assert r.stages[0].provider == "p"
    _, problems = resolve_pipeline(_pipeline({"templateRef": {"name": "t"},
                                              "params": {"tpoic": "y"}}), {"t": tpl})
    assert problems[0].path == "spec.params.tpoic"
    _, problems = resolve_pipeline(_pipeline({"templateRef": {"name": "nope"}}), {"t": tpl})
    assert "template 'nope' not found" in problems[0].message


def test_yaml_12_booleans_keep_on_as_a_key_and_unquoted_on_is_flagged() -> None:
    text = ("apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: p}\n"
            "spec:\n  stages:\n  - name: a\n    run: {image: x, command: [x]}\n"
            "    retry: {limit: 1, on: [Timeout]}\n")
    _, problems = load_documents(text)
    assert [p.path for p in problems] == ["spec.stages[0].retry.on"]
    assert 'write the key as "on" (quoted)' in problems[0].message
    docs, problems = load_documents(text.replace(" on:", ' "on":'))
    assert not problems
    obj = docs[0].obj
    assert isinstance(obj, AgentPipeline) and obj.spec.stages
    assert obj.spec.stages[0].retry and obj.spec.stages[0].retry.on == ["Timeout"]


@pytest.mark.parametrize("loader", ["libyaml", "python"])
def test_both_yaml_loaders_read_manifests_alike(loader: str, monkeypatch: pytest.MonkeyPatch,
                                                ) -> None:
    """Manifests are read with LibYAML where PyYAML has it; the pure Python loader is the
    fallback. Both must give the same values, booleans, line numbers and problems."""
    from pathlib import Path

    import yaml
    from stagecoach.api import manifest

    if loader == "python":
        monkeypatch.setattr(manifest, "_Yaml12Loader", manifest._yaml12(yaml.SafeLoader))
    else:
        assert yaml.__with_libyaml__, "PyYAML was built without LibYAML"
        assert issubclass(manifest._Yaml12Loader, yaml.CSafeLoader)
    text = ("apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: p}\n"
            "spec:\n  params: {a: yes, b: 'on', c: true}\n  stages:\n  - name: a\n"
            "    run: {image: x, command: [x]}\n    retry: {limit: 1, on: [Timeout]}\n"
            "    timeout: 5m\n    timeout: 6m\n")
    _, problems = load_documents(text)
    assert [(p.path, p.line) for p in problems] == [("spec.stages[0].retry.on", 9),
                                                     ("spec.stages[0].timeout", 11)]
    _, broken = load_documents("a: [1, 2\nb: 3\n")
    assert broken and broken[0].message.startswith("YAML syntax error") and broken[0].line
    _, deep = load_documents("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert len(deep) == 1 and "nest" in deep[0].message, deep  # a problem, never a crash
    example = Path(__file__).parents[3] / "examples/research-report/pipeline.yaml"
    loaded, problems = load_documents(example.read_text())
    assert not problems and loaded
    obj = manifest.parse_documents(text.replace("    timeout: 6m\n", "")).documents[0].obj
    assert isinstance(obj, AgentPipeline)
    assert obj.spec.params == {"a": "yes", "b": "on", "c": True}


def test_dump_round_trips() -> None:
    p = _pipeline({"timeout": "1h30m", "stages": [{"name": "a", "run": {"image": "x",
                                                                         "command": ["y"]}}]})
    again = AgentPipeline.model_validate(p.dump())
    assert again == p and p.dump()["spec"]["timeout"] == "1h30m"
