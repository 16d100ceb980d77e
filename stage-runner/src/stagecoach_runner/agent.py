"""Running an ``agent`` stage: render, fit the context window, call, validate, store.

The stage's provider is tried first, then each of its ``fallbacks`` in order when a
provider fails with RateLimited, ProviderUnavailable or Timeout. Every answer's tokens
are added to the attempt's meter before the answer is checked, so an answer rejected as
MalformedOutput is still counted (it was billed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stagecoach.api import AgentSpec, AttemptSpec, ModelUsage, ProviderSpec, TokenUsage

from .clock import Clock
from .errors import FALLBACK_CLASSES, AttemptError
from .providers import (
    CassetteLoadError,
    ChatRequest,
    ChatResponse,
    Message,
    ProviderPool,
    complete,
)
from .providers.retry import OnRetry
from .schema import SchemaError, first_error
from .templating import render
from .tokens import Fitted, count_tokens, fit
from .tracing import TraceSink, clip

__all__ = ["AgentOutcome", "TokenMeter", "build_messages", "parse_output", "run_agent"]

JSON_INSTRUCTION = "Respond with a single JSON document and nothing else."


@dataclass
class TokenMeter:
    """Tokens reported over the whole attempt (all providers, all answers), and per
    provider and model, so that each is billed at its own price."""

    input: int = 0
    output: int = 0
    by_model: dict[tuple[str, str], ModelUsage] = field(default_factory=dict)

    def add(self, response: ChatResponse, provider: str = "", model: str = "") -> None:
        """Count one answer of ``provider``'s ``model`` (the name the stage asked for)."""
        self.input += response.input_tokens
        self.output += response.output_tokens
        if not provider:
            return
        u = self.by_model.setdefault((provider, model),
                                     ModelUsage(provider=provider, model=model))
        u.input += response.input_tokens
        u.output += response.output_tokens
        u.cached_input += min(response.cached_input_tokens, response.input_tokens)

    @property
    def usage(self) -> TokenUsage:
        """As the API type."""
        return TokenUsage(input=self.input, output=self.output)

    @property
    def models(self) -> list[ModelUsage]:
        """The tokens per provider and model, in the order first used."""
        return [u.model_copy() for u in self.by_model.values()]


@dataclass
class AgentOutcome:
    """A validated answer."""

    value: Any
    format: str
    provider: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)


def _instructions(agent: AgentSpec) -> str | None:
    out = agent.output
    if out is None or out.format != "json":
        return None
    if out.json_schema is None:
        return JSON_INSTRUCTION
    schema = json.dumps(out.json_schema, ensure_ascii=False)
    return f"{JSON_INSTRUCTION} It must satisfy this JSON Schema: {schema}"


def build_messages(
    agent: AgentSpec, variables: dict[str, Any], previous_error: str | None
) -> tuple[str | None, str]:
    """Rendered system and user prompts, with the JSON instruction and the previous
    attempt's rejection appended."""
    system = render(agent.system, variables, field="agent.system") if agent.system else None
    prompt = render(agent.prompt, variables, field="agent.prompt")
    extra = _instructions(agent)
    if extra:
        system = f"{system}\n\n{extra}" if system else extra
    if previous_error:
        prompt = (
            f"{prompt}\n\nYour previous answer was rejected: {previous_error}\n"
            "Answer again and fix that."
        )
    return system, prompt


_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def parse_output(content: str, agent: AgentSpec) -> tuple[Any, str]:
    """``(value, format)`` of an answer; raises MalformedOutput for bad JSON or schema."""
    out = agent.output
    if out is None or out.format == "text":
        return content, "text"
    m = _FENCE.match(content)
    text = m.group(1) if m else content
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise AttemptError(
            "MalformedOutput", f"the answer is not valid JSON ({e}): {clip(content, 200)!r}"
        ) from None
    if out.json_schema is not None:
        try:
            problem = first_error(value, out.json_schema)
        except SchemaError as e:
            raise AttemptError("InvalidInput", f"agent.output.schema: {e}") from None
        if problem:
            raise AttemptError(
                "MalformedOutput", f"the answer does not match output.schema: {problem}"
            )
    return value, "json"


def _window(spec: ProviderSpec, model: str, agent: AgentSpec) -> tuple[int | None, int | None]:
    """(input token limit, max output tokens) for ``model``; limit None when unknown."""
    info = spec.models.get(model)
    max_out = agent.max_tokens or (info.max_output_tokens if info else None)
    if info is None or info.context_window is None:
        return None, max_out
    return info.context_window - (max_out or 0), max_out


def _candidates(agent: AgentSpec, providers: Mapping[str, ProviderSpec]) -> list[tuple[str, str]]:
    """(provider, model) pairs to try in order. A replay provider needs no model name
    (its cassette answers whatever is asked); every other provider does."""

    def model_for(provider: str, model: str | None) -> str:
        if model:
            return model
        spec = providers.get(provider)
        if spec is not None and spec.type == "replay":
            return "replay"
        raise AttemptError(
            "InvalidInput",
            f"agent stage calls provider {provider!r} with no model (set agent.model or "
            "spec.defaults.model)",
        )

    if not agent.provider:
        raise AttemptError(
            "InvalidInput", "agent stage has no provider (set agent.provider or spec.defaults)"
        )
    out = [(agent.provider, model_for(agent.provider, agent.model))]
    out += [(f.provider, model_for(f.provider, f.model or agent.model)) for f in agent.fallbacks]
    return out


def _retry_reporter(trace: TraceSink, provider: str, model: str) -> OnRetry:
    async def on_retry(status: str | int, delay: float) -> None:
        data = {"provider": provider, "model": model, "status": status}
        await trace.emit("ProviderRetry", {**data, "delayMs": round(delay * 1000)})

    return on_retry


async def _prepare(
    spec: AttemptSpec,
    variables: dict[str, Any],
    name: str,
    model: str,
    pspec: ProviderSpec,
    trace: TraceSink,
    fallback: bool,
) -> tuple[ChatRequest, int]:
    """Render and fit the prompt for one provider; returns the request and its estimate."""
    agent = spec.agent
    assert agent is not None
    limit, max_out = _window(pspec, model, agent)
    if limit is not None and limit <= 0:
        raise AttemptError(
            "InvalidInput",
            f"maxTokens {max_out} leaves no room for input in model {model}'s window",
        )
    fitted: Fitted = fit(
        lambda v: build_messages(agent, v, spec.previous_error),
        variables,
        model=model,
        limit=limit,
        overflow=agent.context.overflow if agent.context else "fail",
    )
    for cut in fitted.truncations:
        await trace.emit(
            "ContextTruncated",
            {
                "provider": name,
                "model": model,
                "input": cut.path,
                "tokensBefore": cut.tokens_before,
                "tokensAfter": cut.tokens_after,
                "limit": limit,
            },
        )
    await trace.emit(
        "InputSnapshot",
        {
            "provider": name,
            "model": model,
            "system": clip(fitted.system) if fitted.system else None,
            "prompt": clip(fitted.prompt),
            "estimatedTokens": fitted.input_tokens,
            "fallback": fallback,
        },
    )
    messages: tuple[Message, ...] = (Message("user", fitted.prompt),)
    if fitted.system:
        messages = (Message("system", fitted.system), *messages)
    out = agent.output
    request = ChatRequest(
        model=model,
        messages=messages,
        stage=spec.stage.name,
        iteration=spec.iteration,
        index=spec.index,
        attempt=spec.attempt,
        temperature=agent.temperature,
        max_tokens=max_out,
        json_output=out is not None and out.format == "json",
        json_schema=out.json_schema if out is not None else None,
    )
    return request, fitted.input_tokens


async def run_agent(
    spec: AttemptSpec,
    variables: dict[str, Any],
    *,
    pool: ProviderPool,
    trace: TraceSink,
    clock: Clock,
    meter: TokenMeter,
) -> AgentOutcome:
    """Call the stage's provider (then its fallbacks) and return the checked answer."""
    agent = spec.agent
    assert agent is not None
    failures: list[str] = []
    candidates = _candidates(agent, spec.providers)
    for n, (name, model) in enumerate(candidates):
        pspec = spec.providers.get(name)
        if pspec is None:
            raise AttemptError(
                "InvalidInput", f"provider {name!r} is not among the attempt's providers"
            )
        request, estimate = await _prepare(spec, variables, name, model, pspec, trace, n > 0)
        try:
            provider = pool.get(name, pspec)
        except (CassetteLoadError, ValueError) as e:
            raise AttemptError("InvalidInput", f"provider {name}: {e}") from None
        try:
            response = await complete(
                provider,
                request,
                clock=clock,
                limiter=pool.limiters.get(name, pspec.limits),
                on_retry=_retry_reporter(trace, name, model),
                estimated_tokens=estimate + (request.max_tokens or 0),
            )
        except AttemptError as e:
            if e.error_class in FALLBACK_CLASSES and n + 1 < len(candidates):
                failures.append(e.message)
                continue
            if failures:
                e.message = "; then ".join([*failures, e.message])
            raise
        if not response.usage_reported:
            response = replace(
                response,
                input_tokens=estimate,
                output_tokens=count_tokens(response.content, model),
            )
        meter.add(response, name, model)
        await trace.emit(
            "OutputSnapshot",
            {
                "provider": name,
                "model": response.model or model,
                "content": clip(response.content),
                "tokens": {"input": response.input_tokens, "output": response.output_tokens},
                "usageReported": response.usage_reported,
                "finishReason": response.finish_reason,
            },
        )
        value, fmt = parse_output(response.content, agent)
        return AgentOutcome(
            value,
            fmt,
            provider=name,
            model=response.model or model,
            extra={"finishReason": response.finish_reason, "fallback": n > 0},
        )
    raise AssertionError("unreachable: the candidate list is never empty")
