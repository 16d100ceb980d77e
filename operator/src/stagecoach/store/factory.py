"""Open the store an attempt names. The one place that maps a StoreRef to a backend."""

from __future__ import annotations

from collections.abc import Mapping

from stagecoach.api import PipelineRef, S3Storage, StoreRef

from ._protocol import Store
from .configmap import ConfigMapStore, LazyConfigMapClient
from .local import LocalStore
from .s3 import S3Store, run_prefix
from .spill import DEFAULT_SPILL_THRESHOLD, SpillStore

__all__ = ["open_store", "s3_store_ref"]


def s3_store_ref(storage: S3Storage, *, pipeline: str, uid: str,
                 namespace: str | None = None) -> StoreRef:
    """The StoreRef of one pipeline run in ``storage``'s bucket (:func:`run_prefix`)."""
    return StoreRef(type="s3", bucket=storage.bucket,
                    prefix=run_prefix(storage.prefix, namespace, pipeline, uid),
                    endpoint=storage.endpoint, region=storage.region)


def _primary(ref: StoreRef, environ: Mapping[str, str] | None,
             pipeline: PipelineRef | None) -> Store:
    if ref.type == "local":
        if not ref.path:
            raise ValueError("a local store needs path")
        return LocalStore(ref.path)
    if ref.type == "s3":
        return S3Store.from_ref(ref, environ=environ)
    if ref.type == "configmap":
        name = ref.prefix or (pipeline.name if pipeline else "")
        namespace = ref.namespace or (pipeline.namespace if pipeline else None)
        if not name or not namespace:
            raise ValueError("a configmap store needs a namespace and a pipeline name (prefix)")
        return ConfigMapStore(LazyConfigMapClient(), namespace, name,
                              pipeline.uid if pipeline else "", prepared=ref.prepared)
    raise NotImplementedError(f"store type {ref.type!r} is not implemented")


def open_store(ref: StoreRef, *, environ: Mapping[str, str] | None = None,
               pipeline: PipelineRef | None = None) -> Store:
    """A :class:`Store` for ``ref`` (local, s3 or configmap), wrapped in a
    :class:`SpillStore` when ``ref.overflow`` names an object store.

    ``configmap`` stores belong to a pipeline: ``ref.prefix`` (or ``pipeline.name``)
    names it and ``pipeline.uid`` becomes the owner reference of what it writes; the API
    is reached with the pod's ServiceAccount in a cluster, else ``$KUBECONFIG``.
    """
    primary = _primary(ref, environ, pipeline)
    if ref.overflow is None:
        return primary
    threshold = (ref.spill_threshold if ref.spill_threshold is not None
                 else DEFAULT_SPILL_THRESHOLD)
    return SpillStore(primary, _primary(ref.overflow, environ, pipeline), threshold=threshold)
