"""Money: model prices, the cost of the tokens an attempt used, and how USD is written
(DESIGN §11).

Prices are USD per million tokens, written as decimal strings (``"0.15"``) so that no
float ever touches money. A cost is exact: ``tokens x price / 1e6`` with
:class:`decimal.Decimal` has a finite expansion, and sums of exact costs stay exact. The
run state keeps exact costs; only what people read (status, reports) is rounded, once,
to :data:`CENTS_PRECISION` (a micro-dollar), half up. A model without pricing has no
cost: :func:`cost_of` answers None, never zero, so a report can say "tokens only".

Cached input tokens (a provider's prompt cache) are part of the input tokens and cost
``cachedInput`` per million when the model prices them, else ``input``. No side effects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Protocol

from pydantic import Field

from ._base import ApiModel

__all__ = [
    "CENTS_PRECISION",
    "USD_PATTERN",
    "ModelUsage",
    "Pricing",
    "Usd",
    "add_usd",
    "cost_of",
    "format_usd",
    "parse_usd",
    "unpriced",
    "usage_cost",
]

USD_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
"""A non-negative USD amount or price: digits, an optional fraction (no exponent, no sign)."""
CENTS_PRECISION = Decimal("0.000001")
"""What people read is rounded to a micro-dollar (half up)."""
_MILLION = Decimal(1_000_000)
_PLAIN = re.compile(r"[0-9]+(\.[0-9]+)?")

Usd = Annotated[str, Field(pattern=USD_PATTERN, max_length=32)]


def parse_usd(text: str | None) -> Decimal | None:
    """The amount of a decimal string (None stays None); ValueError when it is not one."""
    if text is None:
        return None
    if not _PLAIN.fullmatch(text):
        raise ValueError(f"{text!r} is not a non-negative decimal USD amount (digits and an "
                         "optional fraction, no sign or exponent)")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not a decimal USD amount") from None


def format_usd(value: Decimal | None) -> str | None:
    """``value`` rounded to a micro-dollar, as plain decimal digits without trailing zeros
    (``Decimal("0.01230000")`` → ``"0.0123"``; zero → ``"0"``)."""
    if value is None:
        return None
    rounded = value.quantize(CENTS_PRECISION, rounding=ROUND_HALF_UP)
    text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def add_usd(total: str | None, more: Decimal | str | None) -> str | None:
    """``total + more`` exactly, as a string; None plus None stays None (unpriced)."""
    if more is None:
        return total
    extra = more if isinstance(more, Decimal) else parse_usd(more)
    assert extra is not None
    base = parse_usd(total) or Decimal(0)
    return format(base + extra, "f")


class Pricing(ApiModel):
    """A model's prices in USD per million tokens (decimal strings, never floats)."""

    input: Usd = Field(description="USD per million input (prompt) tokens.")
    output: Usd = Field(description="USD per million output (completion) tokens.")
    cached_input: Usd | None = Field(
        None, description="USD per million input tokens served from the provider's prompt "
        "cache (default: the input price).")


class ModelUsage(ApiModel):
    """Tokens one provider/model reported within one attempt."""

    provider: str = Field(max_length=253, description="ModelProvider name.")
    model: str = Field(max_length=253, description="The model name the stage asked for "
                       "(the key of the provider's models, which carries the pricing).")
    input: int = Field(0, ge=0, description="Prompt tokens (cached ones included).")
    output: int = Field(0, ge=0, description="Completion tokens.")
    cached_input: int = Field(0, ge=0, description="Of the prompt tokens, those served "
                              "from the provider's prompt cache.")


class _HasModels(Protocol):
    @property
    def models(self) -> Mapping[str, object]: ...


def _pricing(providers: Mapping[str, _HasModels], provider: str, model: str) -> Pricing | None:
    spec = providers.get(provider)
    info = spec.models.get(model) if spec is not None else None
    pricing = getattr(info, "pricing", None)
    return pricing if isinstance(pricing, Pricing) else None


def usage_cost(usage: ModelUsage, pricing: Pricing | None) -> Decimal | None:
    """Exact USD of one usage at ``pricing``; None without pricing (unknown, not zero)."""
    if pricing is None:
        return None
    price_in = parse_usd(pricing.input) or Decimal(0)
    price_out = parse_usd(pricing.output) or Decimal(0)
    price_cached = parse_usd(pricing.cached_input) if pricing.cached_input else price_in
    assert price_cached is not None
    cached = min(usage.cached_input, usage.input)
    amount = ((usage.input - cached) * price_in + cached * price_cached
              + usage.output * price_out)
    return amount / _MILLION


def cost_of(usages: Iterable[ModelUsage],
            providers: Mapping[str, _HasModels]) -> Decimal | None:
    """Exact USD of ``usages`` at the prices of each one's own provider and model (a
    fallback is billed at the fallback's price). None when no usage with tokens is
    priced; usages with tokens but no price add nothing (:func:`unpriced` tells)."""
    total: Decimal | None = None
    for u in usages:
        cost = usage_cost(u, _pricing(providers, u.provider, u.model))
        if cost is not None:
            total = cost if total is None else total + cost
    return total


def unpriced(usages: Iterable[ModelUsage], providers: Mapping[str, _HasModels]) -> int:
    """Tokens in ``usages`` whose provider/model has no pricing."""
    return sum(u.input + u.output for u in usages
               if _pricing(providers, u.provider, u.model) is None)
