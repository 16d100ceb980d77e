"""Lazy package exports (PEP 562), so that ``stagecoach validate`` starts fast.

``stagecoach.api`` and ``stagecoach.engine`` re-export their modules' public names. Done
eagerly, ``from stagecoach.engine import validate_manifests`` would also import the
planner, the actions and the policies, which ``validate`` never uses: tens of
milliseconds of a CLI start that should stay under 0.3 s. Each package instead keeps its
imports under ``TYPE_CHECKING`` (for mypy and readers) and names, per module, what it
exports; a name's module is imported the first time the name is asked for.
``tests/unit/test_lazy_exports.py`` checks that the table, ``__all__`` and the
``TYPE_CHECKING`` imports agree, so none can drift from the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, table: Mapping[str, Sequence[str]], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``table`` maps a submodule
    (relative, without the dot) to the names it exports. A resolved name is stored in the
    package's ``namespace``, so each is looked up once."""
    where = {name: module for module, names in table.items() for name in names}
    clash = sorted(set(where) & set(table))
    if clash:  # importing that submodule would rebind the package attribute to it
        raise ValueError(f"{package}: export named like a submodule: {', '.join(clash)}")

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
