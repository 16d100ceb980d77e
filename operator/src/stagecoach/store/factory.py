"""Open the store an attempt names. The one place that maps a StoreRef to a backend."""

from __future__ import annotations

from stagecoach.api import StoreRef

from ._protocol import Store
from .local import LocalStore

__all__ = ["open_store"]


def open_store(ref: StoreRef) -> Store:
    """A :class:`Store` for ``ref``; only ``local`` exists so far (configmap, s3: later)."""
    if ref.type == "local":
        if not ref.path:
            raise ValueError("a local store needs path")
        return LocalStore(ref.path)
    raise NotImplementedError(f"store type {ref.type!r} is not implemented yet")
