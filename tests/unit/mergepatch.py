"""The JSON merge patch (RFC 7386) of a ConfigMap's data maps, for the in-memory API
fakes: what the ConfigMap store's prepared writes send."""

from __future__ import annotations

import copy
from typing import Any


def merge_data(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with ``patch``'s maps merged in (a null value removes a key;
    a map left empty goes)."""
    out = copy.deepcopy(obj)
    for field, values in patch.items():
        target = out.setdefault(field, {})
        for k, v in values.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
        if not target:
            out.pop(field)
    return out
