"""Loading the ``cel`` binding's native module without its interactive CLI.

``import cel`` runs the package's ``__init__``, which imports ``cel.cli`` and with it
prompt_toolkit and rich (~0.5 s of start-up for every command). The engine needs only the
Rust extension, so :func:`load_cel` loads that module on its own, registered as
``cel.cel`` so that a later ``import cel`` reuses it (the extension initialises once per
process). When the extension cannot be found this way, the package is imported.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

__all__ = ["load_cel"]


@functools.cache
def load_cel() -> Any:
    """The module with ``compile`` and ``evaluate`` (the extension, or the package)."""
    loaded = sys.modules.get("cel.cel") or sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, f"cel{suffix}")
            if not os.path.exists(path):
                continue
            loader = importlib.machinery.ExtensionFileLoader("cel.cel", path)
            native = importlib.util.spec_from_file_location("cel.cel", path, loader=loader)
            if native is None:
                continue
            module = importlib.util.module_from_spec(native)
            loader.exec_module(module)
            sys.modules["cel.cel"] = module
            return module
    import cel

    return cel
