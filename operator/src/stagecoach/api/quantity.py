"""Kubernetes resource quantities and names, checked the way the API server checks a
pod's ``resources`` (so ``stagecoach validate`` and ``kubectl apply`` refuse what the
Job would be refused for). No side effects.

>>> parse_quantity("500m"), parse_quantity("1Gi")
(Decimal('0.5'), Decimal('1073741824'))
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["QUANTITY", "RESOURCE_NAME", "parse_quantity", "resource_problems"]

QUANTITY = (r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
"""A non-negative quantity (Kubernetes' own expression without the minus sign)."""
RESOURCE_NAME = (r"^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z.]+|"
                 r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
                 r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
"""Standard resources, hugepages, or an extended resource ``domain/name``."""

_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_SPLIT = re.compile(r"^\+?([0-9.]+)([eE][+-]?[0-9.]+|[KMGTPE]i|[numkMGTPE])?$")


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity; ValueError when it is not one."""
    if not re.match(QUANTITY, text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 64Mi)")
    m = _SPLIT.match(text)
    assert m is not None
    number, suffix = m.group(1), m.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * Decimal(_SUFFIX[suffix])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from None


def resource_problems(requests: dict[str, str], limits: dict[str, str]) -> list[str]:
    """What the API server would say about these requests and limits (empty: fine)."""
    problems = []
    for field, values in (("requests", requests), ("limits", limits)):
        for name, value in values.items():
            if not re.match(RESOURCE_NAME, name):
                problems.append(f"{field}.{name}: not a resource name (cpu, memory, "
                                "ephemeral-storage, hugepages-<size> or <domain>/<name>)")
            try:
                parse_quantity(value)
            except ValueError as e:
                problems.append(f"{field}.{name}: {e}")
    for name, limit in limits.items():
        if name in requests:
            try:
                if parse_quantity(requests[name]) > parse_quantity(limit):
                    problems.append(f"requests.{name}: {requests[name]!r} is more than "
                                    f"the limit {limit!r}")
            except ValueError:
                pass
    return problems
