"""The stage cache's key (DESIGN §11): every field that determines the answer changes it,
the fields that do not leave it alone."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from stagecoach.api import ModelProvider, StoreRef
from stagecoach.attempts import build_attempt
from stagecoach.caching import attempt_key
from stagecoach.engine import StartAttempt, new_state

from .engine.sim import resolved

PROVIDERS = {"openai": {"type": "openai", "baseURL": "http://a/v1"},
             "other": {"type": "openai", "baseURL": "http://a/v1"}}


def _providers(docs: dict[str, dict[str, Any]]) -> dict[str, ModelProvider]:
    return {n: ModelProvider.model_validate({
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
        "metadata": {"name": n}, "spec": d}) for n, d in docs.items()}


AGENT: dict[str, Any] = {"provider": "openai", "model": "m", "system": "Be brief.",
                         "prompt": "About {{ params.topic }}: {{ stages.up.output.x }}",
                         "temperature": 0.2, "maxTokens": 100,
                         "output": {"format": "json", "schema": {"type": "object"}}}
RUN: dict[str, Any] = {"image": "img:1", "command": ["run"], "args": ["--fast"],
                       "env": [{"name": "A", "value": "1"}], "output": {"format": "json"}}


def key(*, agent: dict[str, Any] | None = None, run: dict[str, Any] | None = None,
        stage: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
        up: Any = None, other: Any = "o", providers: dict[str, Any] | None = None,
        iteration: int = 1, attempt: int = 1, name: str = "t", uid: str = "u1",
        index: int | None = None, item: Any = None) -> str | None:
    body = {"agent": agent} if run is None else {"run": run}
    doc = {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
           "metadata": {"name": name, "uid": uid},
           "spec": {"params": params if params is not None else {"topic": "batteries"},
                    "stages": [
                        {"name": "up", "run": {"image": "x", "command": ["x"]}},
                        {"name": "side", "run": {"image": "x", "command": ["x"]}},
                        {"name": "s", "dependsOn": ["up"], "cache": {"ttl": "1h"},
                         **body, **(stage or {})}]}}
    p = resolved(doc)
    state = new_state(p)
    for n, value in (("up", {"x": 1} if up is None else up), ("side", other)):
        state.stages[n].phase, state.stages[n].output = "Succeeded", value
    start = StartAttempt("s", iteration, attempt, index, item=item)
    provs = _providers(providers if providers is not None else PROVIDERS)
    spec = build_attempt(p, state, start, provs, StoreRef(type="local", path="/tmp/x"))
    return attempt_key(p, state, start, spec, provs)


BASE_AGENT = key(agent=AGENT)
BASE_RUN = key(run=RUN)


def test_keys_are_sha256_hex_and_stable() -> None:
    assert BASE_AGENT is not None and len(BASE_AGENT) == 64
    assert key(agent=AGENT) == BASE_AGENT and BASE_AGENT != BASE_RUN


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    target = out
    *head, last = path.split(".")
    for part in head:
        target = target[part]
    target[last] = value
    return out


@pytest.mark.parametrize(("path", "value"), [
    ("model", "m2"), ("system", "Be long."), ("prompt", "Other {{ params.topic }}"),
    ("temperature", 0.9), ("maxTokens", 200), ("output.schema", {"type": "array"}),
    ("output.format", "text")])
def test_each_agent_field_changes_the_key(path: str, value: Any) -> None:
    changed = _with(AGENT, path, value)
    if path == "output.format":
        changed["output"].pop("schema")
    assert key(agent=changed) != BASE_AGENT


def test_what_the_prompt_reads_changes_the_key_and_what_it_does_not_read_does_not() -> None:
    assert key(agent=AGENT, params={"topic": "fuel cells"}) != BASE_AGENT
    assert key(agent=AGENT, up={"x": 2}) != BASE_AGENT
    assert key(agent=AGENT, up={"x": 1, "unread": True}) == BASE_AGENT  # rendered the same
    assert key(agent=AGENT, other="changed") == BASE_AGENT


def test_the_provider_type_and_base_url_change_the_key_its_name_and_limits_do_not() -> None:
    moved = {"openai": {"type": "openai", "baseURL": "http://b/v1"}}
    assert key(agent=AGENT, providers=moved) != BASE_AGENT
    limited = {"openai": {"type": "openai", "baseURL": "http://a/v1",
                          "limits": {"maxConcurrency": 1},
                          "models": {"m": {"pricing": {"input": "1", "output": "2"}}}}}
    assert key(agent=AGENT, providers=limited) == BASE_AGENT
    renamed = _with(AGENT, "provider", "other")  # same endpoint under another name
    assert key(agent=renamed) == BASE_AGENT
    assert key(agent=AGENT, providers={}) is None  # unknown provider: not cacheable


@pytest.mark.parametrize(("field", "value"), [
    ("retry", {"limit": 5}), ("timeout", "9m"), ("onFailure", "continue"),
    ("resources", {"requests": {"cpu": "1"}}), ("cache", {"ttl": "48h"})])
def test_fields_that_do_not_determine_the_answer_leave_the_key_alone(
        field: str, value: Any) -> None:
    assert key(agent=AGENT, stage={field: value}) == BASE_AGENT


def test_run_identity_attempt_and_fallbacks_do_not_change_the_key() -> None:
    assert key(agent=AGENT, name="another", uid="u2") == BASE_AGENT
    assert key(agent=AGENT, attempt=3) == BASE_AGENT
    assert key(agent={**AGENT, "fallbacks": [{"provider": "other"}]}) == BASE_AGENT


def test_a_loop_iteration_never_answers_with_the_first_iterations_entry() -> None:
    assert key(agent=AGENT, iteration=2) != BASE_AGENT


@pytest.mark.parametrize(("path", "value"), [
    ("image", "img:2"), ("command", ["other"]), ("args", ["--slow"]),
    ("env", [{"name": "A", "value": "2"}]),
    ("env", [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
    ("workingDir", "/w"), ("output", {"format": "text"})])
def test_each_run_field_changes_the_key(path: str, value: Any) -> None:
    assert key(run=_with(RUN, path, value)) != BASE_RUN


def test_a_run_stage_keys_its_input_document_of_ancestors_only() -> None:
    assert key(run=RUN, params={"topic": "x"}) != BASE_RUN
    assert key(run=RUN, up={"x": 2}) != BASE_RUN  # an ancestor's output
    assert key(run=RUN, other="changed") == BASE_RUN  # not an ancestor: timing noise


def test_a_foreach_instance_caches_per_item() -> None:
    stage = {"forEach": "params.items"}
    one = key(run=RUN, stage=stage, params={"items": [1, 2]}, index=0, item=1)
    two = key(run=RUN, stage=stage, params={"items": [1, 2]}, index=1, item=2)
    assert one != two


def test_a_prompt_that_does_not_render_is_not_cached() -> None:
    assert key(agent=_with(AGENT, "prompt", "{{ stages.nope.output.x }}")) is None


async def test_only_the_stages_own_provider_fills_the_cache(tmp_path: Any) -> None:
    """A fallback's answer is never stored under the key of the stage's own provider."""
    from datetime import UTC, datetime

    from stagecoach.api import AttemptResult
    from stagecoach.caching import remember
    from stagecoach.store import LocalStore
    from stagecoach.store.cache import StageCache

    p = resolved({"stages": [{"name": "s", "cache": {"ttl": "1h"}, "agent": AGENT}]})
    cache = StageCache(LocalStore(tmp_path))
    start = StartAttempt("s", 1, 1)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    by_fallback = AttemptResult(phase="Succeeded", provider="backup", model="m")
    assert not await remember(cache, "ab" * 32, p, start, by_fallback, "json", {}, None, now)
    own = AttemptResult(phase="Succeeded", provider="openai", model="m")
    assert await remember(cache, "ab" * 32, p, start, own, "json", {"a": 1}, None, now)
