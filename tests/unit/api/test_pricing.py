"""Money arithmetic: exact decimals, one rounding for people, no price → no cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError
from stagecoach.api import (
    AttemptResult,
    Budget,
    ModelInfo,
    ModelProvider,
    ModelUsage,
    Pricing,
    ProviderSpec,
    TokenUsage,
    add_usd,
    cost_of,
    format_usd,
    parse_usd,
    unpriced,
    usage_cost,
)
from stagecoach.attempts import attempt_cost


def _provider(name: str, **models: Pricing | None) -> ModelProvider:
    return ModelProvider.model_validate({
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
        "metadata": {"name": name},
        "spec": ProviderSpec(type="openai", models={
            m: ModelInfo(pricing=p) for m, p in models.items()}).dump()})


def test_cost_is_tokens_times_price_per_million_exactly() -> None:
    p = Pricing(input="0.15", output="0.60")
    u = ModelUsage(provider="p", model="m", input=812, output=433)
    assert usage_cost(u, p) == Decimal("0.0003816")  # 812*0.15 + 433*0.60 = 381.6 / 1e6


def test_cached_input_tokens_use_their_own_price_or_the_input_price() -> None:
    u = ModelUsage(provider="p", model="m", input=1000, output=0, cached_input=400)
    assert usage_cost(u, Pricing(input="2", output="8", cached_input="0.5")) == \
        Decimal("0.0014")  # 600*2 + 400*0.5
    assert usage_cost(u, Pricing(input="2", output="8")) == Decimal("0.002")
    # a provider cannot report more cached than input tokens
    odd = ModelUsage(provider="p", model="m", input=10, output=0, cached_input=50)
    assert usage_cost(odd, Pricing(input="1", output="1", cached_input="0")) == 0


def test_a_model_without_pricing_costs_nothing_known_not_zero() -> None:
    assert usage_cost(ModelUsage(provider="p", model="m", input=5), None) is None
    providers = {"p": _provider("p", m=None).spec}
    assert cost_of([ModelUsage(provider="p", model="m", input=5)], providers) is None
    assert cost_of([], providers) is None
    assert unpriced([ModelUsage(provider="p", model="m", input=5, output=2)], providers) == 7


def test_fallbacks_are_billed_at_their_own_price() -> None:
    providers = {"main": _provider("main", big=Pricing(input="10", output="30")).spec,
                 "backup": _provider("backup", small=Pricing(input="1", output="2")).spec,
                 "free": _provider("free", local=None).spec}
    usage = [ModelUsage(provider="main", model="big", input=100, output=10),
             ModelUsage(provider="backup", model="small", input=100, output=10),
             ModelUsage(provider="free", model="local", input=100, output=10)]
    # 100*10 + 10*30 = 1300; 100*1 + 10*2 = 120; the unpriced one adds nothing
    assert cost_of(usage, providers) == Decimal("0.00142")
    assert unpriced(usage, providers) == 110


def test_attempt_cost_uses_the_breakdown_or_the_answering_model() -> None:
    providers = {"main": _provider("main", big=Pricing(input="10", output="30"))}
    with_usage = AttemptResult(phase="Failed", error_class="MalformedOutput",
                               tokens=TokenUsage(input=100, output=10),
                               usage=[ModelUsage(provider="main", model="big", input=100,
                                                 output=10)])
    assert attempt_cost(with_usage, providers) == Decimal("0.0013")  # failed, still billed
    legacy = AttemptResult(phase="Succeeded", tokens=TokenUsage(input=100, output=10),
                           provider="main", model="big")
    assert attempt_cost(legacy, providers) == Decimal("0.0013")
    assert attempt_cost(AttemptResult(phase="Succeeded"), providers) is None


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("0.01230000"), "0.0123"), (Decimal("0"), "0"), (Decimal("0.0000005"), "0.000001"),
    (Decimal("0.0000004999"), "0"), (Decimal("12.5"), "12.5"), (Decimal("0.0000015"), "0.000002"),
    (None, None)])
def test_format_rounds_half_up_to_a_micro_dollar(value: Decimal | None, text: str | None) -> None:
    assert format_usd(value) == text


def test_sums_stay_exact_and_unpriced_stays_unknown() -> None:
    assert add_usd(None, None) is None
    assert add_usd(None, Decimal("0.1")) == "0.1"
    total = None
    for _ in range(10):
        total = add_usd(total, "0.1")
    assert total == "1.0"  # ten float 0.1s would not make 1.0
    assert add_usd("0.5", None) == "0.5"


@pytest.mark.parametrize("bad", ["-1", "1e3", "abc", "NaN", "Infinity", "", "1.", ".5"])
def test_parse_rejects_what_is_not_a_plain_amount(bad: str) -> None:
    with pytest.raises(ValueError, match="not a non-negative decimal USD amount"):
        parse_usd(bad)
    assert parse_usd("0.0000004") == Decimal("0.0000004")


def test_prices_and_max_cost_are_decimal_strings_never_floats() -> None:
    with pytest.raises(ValidationError) as e:
        ModelInfo.model_validate({"pricing": {"input": 0.15, "output": "1"}})
    assert "pricing.input" in str(e.value).replace("\n", ".")
    with pytest.raises(ValidationError):
        Pricing.model_validate({"input": "1e-3", "output": "1"})
    with pytest.raises(ValidationError):
        Budget.model_validate({"maxCost": 5})
    with pytest.raises(ValidationError, match="maxTokens, maxCost or both"):
        Budget.model_validate({})
    assert Budget.model_validate({"maxCost": "5.00", "maxTokens": 10}).max_cost == "5.00"
