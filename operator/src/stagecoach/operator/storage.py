"""Where a pipeline run stores its outputs and trace in the cluster. Pure: no I/O.

``spec.storage`` wins; a pipeline without it gets the operator's default, the JSON the
chart puts into ``STAGECOACH_DEFAULT_STORAGE`` (``{type: configmap|s3, s3: {bucket,
prefix, endpoint, region, credentialsSecret}}``). A run in a bucket gets an ``s3``
:class:`~stagecoach.api.StoreRef`; a run in ConfigMaps gets a ``configmap`` one, with
the default's bucket as ``overflow`` when the default names one, so outputs over the
spill threshold go to S3 and leave a pointer ConfigMap (:class:`~stagecoach.store.SpillStore`,
in the operator and, through the StoreRef, in the pods). The credentials Secret to mount
into stage pods comes along.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api import S3Storage, Storage, StoreRef
from ..store import run_prefix, s3_store_ref
from ..store.cache import CLUSTER_PREFIX
from .jobs import store_ref

__all__ = ["DEFAULT_STORAGE_ENV", "cache_storage", "default_storage", "parse_default_storage",
           "run_storage"]

DEFAULT_STORAGE_ENV = "STAGECOACH_DEFAULT_STORAGE"


def parse_default_storage(text: str | None) -> Storage | None:
    """The operator's default storage from its JSON, or None for none. Empty strings
    (the chart's placeholders) count as unset; an ``s3`` block without a bucket is no
    bucket. Raises ValueError with a readable message on a bad value."""
    if text is None or not text.strip() or text.strip() == "null":
        return None
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{DEFAULT_STORAGE_ENV} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{DEFAULT_STORAGE_ENV} must be a JSON object, not {text[:100]!r}")
    raw = {k: v for k, v in raw.items() if v not in ("", None)}
    s3 = raw.get("s3")
    if isinstance(s3, dict):
        s3 = {k: v for k, v in s3.items() if v not in ("", None)}
        if s3.get("bucket"):
            raw["s3"] = s3
        else:
            raw.pop("s3")
    raw.setdefault("type", "configmap")
    try:
        return Storage.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"{DEFAULT_STORAGE_ENV}: {e}") from None


def default_storage(environ: Mapping[str, str]) -> Storage | None:
    """:func:`parse_default_storage` of ``environ[STAGECOACH_DEFAULT_STORAGE]``."""
    return parse_default_storage(environ.get(DEFAULT_STORAGE_ENV))


def cache_storage(namespace: str, storage: Storage | None,
                  default: Storage | None) -> tuple[bool, StoreRef | None]:
    """Where a namespace's stage-cache entries live (DESIGN §11), for a run with
    ``storage``: ``(True, bucket)`` when the run's store is a bucket (entries under
    ``<prefix>/<namespace>/stagecoach-cache/``), else ``(False, overflow)``: the
    namespace's cache ConfigMaps, spilling to the default's bucket when it names one."""
    chosen = storage if storage is not None else default
    if chosen is not None and chosen.type == "s3" and chosen.s3 is not None:
        return True, _cache_ref(chosen.s3, namespace)
    overflow = default.s3 if default is not None else None
    return False, (_cache_ref(overflow, namespace) if overflow is not None else None)


def _cache_ref(bucket: S3Storage, namespace: str) -> StoreRef:
    return StoreRef(type="s3", bucket=bucket.bucket,
                    prefix=run_prefix(bucket.prefix, namespace, CLUSTER_PREFIX, ""),
                    endpoint=bucket.endpoint, region=bucket.region)


def run_storage(namespace: str, pipeline: str, uid: str, storage: Storage | None,
                default: Storage | None) -> tuple[StoreRef, str | None]:
    """(StoreRef for the run and its pods, credentials Secret to mount or None)."""
    chosen = storage if storage is not None else default
    if chosen is not None and chosen.type == "s3" and chosen.s3 is not None:
        ref = s3_store_ref(chosen.s3, pipeline=pipeline, uid=uid, namespace=namespace)
        return ref, chosen.s3.credentials_secret
    ref = store_ref(namespace, pipeline)
    overflow = default.s3 if default is not None else None
    if overflow is None:
        return ref, None
    spill = s3_store_ref(overflow, pipeline=pipeline, uid=uid, namespace=namespace)
    return ref.model_copy(update={"overflow": spill}), overflow.credentials_secret
